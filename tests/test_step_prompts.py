"""train.global_prompts_per_step (issue 30 item 4): the step's prompts over all processes, each process taking
its share; the paper recipes' 256 prompts are 256 on any GPU count, in `pact plan` as in a run."""

import pytest

from pact_cotrain.config import load_config
from pact_cotrain.errors import UserError
from pact_cotrain.planning import tokens
from pact_cotrain.planning.report import format_plan
from pact_cotrain.planning.run import PlanOptions, make_plan
from pact_cotrain.training import step_prompts

STATS = tokens.manual_stats(prompt=4000, trace_context=6000, trace_target=1500, tool_response=200)


def test_each_process_takes_its_share_of_the_global_count():
    assert step_prompts.per_process_prompts({"global_prompts_per_step": 256, "prompts_per_step": None}, 8) == 32
    assert step_prompts.per_process_prompts({"global_prompts_per_step": 256, "prompts_per_step": None}, 1) == 256
    assert step_prompts.per_process_prompts({"global_prompts_per_step": None, "prompts_per_step": 4}, 8) == 4
    # both set and saying the same thing (a share given on the command line for this launch): accepted
    assert step_prompts.per_process_prompts({"global_prompts_per_step": 256, "prompts_per_step": 32}, 8) == 32


@pytest.mark.parametrize("train,n,match", [
    ({"global_prompts_per_step": 256, "prompts_per_step": None}, 3, "does not divide by the 3 processes"),
    ({"global_prompts_per_step": 256, "prompts_per_step": 32}, 4, "both set and disagree"),
    ({"global_prompts_per_step": None, "prompts_per_step": None}, 1, "both null"),
    ({"global_prompts_per_step": 0, "prompts_per_step": None}, 1, "must be >= 1"),
])
def test_refusals_are_one_line_naming_the_keys(train, n, match):
    with pytest.raises(UserError, match=match) as info:
        step_prompts.per_process_prompts(train, n)
    assert "\n" not in str(info.value) and "train." in str(info.value)


def test_resolving_twice_agrees():
    cfg = {"train": {"global_prompts_per_step": 256, "prompts_per_step": None}}
    step_prompts.resolve(cfg, 8)
    assert cfg["train"] == {"global_prompts_per_step": 256, "prompts_per_step": 32}
    assert step_prompts.resolve(cfg, 8)["train"]["prompts_per_step"] == 32  # a phase's stop rule, then its trainer


def test_paper_recipes_set_the_global_batch():
    cfg = load_config("paper_qwen3_4b_pact")
    assert cfg["train"]["global_prompts_per_step"] == 256 and cfg["train"]["prompts_per_step"] is None


@pytest.mark.parametrize("gpus,share", [(1, 256), (8, 32)])
def test_paper_recipe_plan_keeps_256_prompts_on_any_gpu_count(gpus, share):
    plan = make_plan("paper_qwen3_4b_pact", [], PlanOptions(stats=STATS, gpus=gpus, gpu_memory_gb=80))
    train = plan.phases[0].cfg["train"]
    assert train["global_prompts_per_step"] == 256 and train["prompts_per_step"] == share
    text = format_plan(plan)
    assert f"step: 256 prompts a step (global) = {gpus} process{'es' if gpus > 1 else ''} x {share} prompts (per process)" \
        in text


def test_a_run_states_both_numbers_first_and_refuses_a_share_that_does_not_divide(tmp_path, capsys, monkeypatch):
    from pact_cotrain.recipes.train import build_trainer
    from pact_cotrain.testing import tiny_llama, tiny_tokenizer

    tok = tiny_tokenizer()
    args = ["train.global_prompts_per_step=4", "train.prompts_per_step=null", "train.k=2", "data.n_train=8",
            "train.report_to=[]", "train.disable_tqdm=true", f"output_dir={tmp_path}/run"]
    monkeypatch.setenv("WORLD_SIZE", "3")  # as `accelerate launch --num_processes 3` sets it
    with pytest.raises(UserError, match="global_prompts_per_step=4 does not divide by the 3 processes"):
        build_trainer(load_config("grpo", args), model=None, tokenizer=tok)  # before any model loads
    monkeypatch.setenv("WORLD_SIZE", "1")
    trainer = build_trainer(load_config("grpo", args), model=tiny_llama(tok), tokenizer=tok)
    assert trainer.args.per_device_train_batch_size == 4 * 2
    assert "step: 4 prompts a step (global) = 1 process x 4 prompts (per process), x 2 rollouts each" \
        in capsys.readouterr().err
