"""OPSD through the trainer: one step with a tiny random model (build_trainer), its plan and its config."""

import math

import pytest
import torch

from pact_cotrain.config import load_config
from pact_cotrain.errors import UserError
from pact_cotrain.recipes.train import build_trainer
from pact_cotrain.testing import tiny_llama
from pact_cotrain.training.methods import MethodConfig, plan_step

SMALL = ["train.k=2", "train.prompts_per_step=2", "data.n_train=4", "sampling.max_new_tokens_per_turn=12",
         "sampling.max_completion_tokens=48", "sampling.max_turns=2", "train.report_to=[]",
         "train.disable_tqdm=true", "train.learning_rate=1e-3", "train.save_steps=0"]


def test_opsd_plan_is_prompt_only_rl_without_sft():
    plan = plan_step(MethodConfig(name="opsd"), 0, 10)
    assert plan.opsd and plan.rl and plan.anchor_q == 1.0 and plan.rollout_trace_view is None
    assert plan.sft_coef == 0
    with pytest.raises(ValueError, match="opsd_kl_credit"):
        MethodConfig(name="opsd", opsd_kl_credit="episode")


def test_one_opsd_step_runs_and_updates_the_student(tmp_path, tokenizer):
    cfg = load_config("opsd", SMALL + [f"output_dir={tmp_path}/run", "train.max_steps=1"])
    trainer = build_trainer(cfg, model=tiny_llama(tokenizer), tokenizer=tokenizer)
    batch = trainer._build_batch([{"task_index": i // 2} for i in range(4)])
    mask = batch["loss_mask"].bool()
    assert mask.any()
    # the teacher pass is the trainer's own scoring of [x; h]; its log-probs differ from the student's
    rows = list(range(len(batch["completions"])))
    student = trainer._old_logps(batch, "prompt", [rows], 1)
    assert torch.isfinite(batch["teacher_logp"][mask]).all()
    assert not torch.allclose(batch["teacher_logp"][mask], student[mask])
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    log = next(h for h in trainer.state.log_history if "loss" in h)
    assert math.isfinite(log["loss"]) and log["rl/coef"] == 1.0 and log["sft/coef"] == 0.0
    # the logged KL is the masked mean of log pi(tau|x) - log pi(tau|x,h) on generated tokens
    assert math.isfinite(log["rl/reverse_kl"]) and "over_reliance_gap" not in log
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_opsd_refuses_untraced_rows_before_the_model_loads(tmp_path):
    from pact_cotrain.data.validate import check_trace_needs
    from pact_cotrain.data.trace_format import Task

    with pytest.raises(UserError, match="method opsd trains on the traces"):
        check_trace_needs([Task(id="a", messages=[{"role": "user", "content": "hi"}], tools=[])], "opsd",
                          "solve_f1", "rows.jsonl")


def test_plan_costs_the_teacher_pass_without_gradient_and_the_student_pass():
    from pact_cotrain.planning import tokens

    stats = tokens.manual_stats(prompt=100, trace_context=150, trace_target=40, tool_response=10)
    shape = tokens.RolloutShape(2, 39, 11, "given")  # 50 completion tokens per episode
    for iterations in (1, 2):
        inputs = tokens.StepInputs(2, 4, iterations, "sample", "trace", stats, shape)
        passes = {p.name: p for p in tokens.step_passes(plan_step(MethodConfig(name="opsd"), 0, 4), inputs)}
        # student: every row after x, with gradient; teacher: every row after [x; h], forward only, once a batch
        assert passes["prompt-only scoring"].kind == "train" and passes["prompt-only scoring"].tokens == 2 * (100 + 4 * 50)
        assert passes["OPSD teacher on [x; h]"].kind == "forward"
        assert passes["OPSD teacher on [x; h]"].tokens == 2 * (150 + 4 * 50)
        assert "[x; h] re-scoring" not in passes and "SFT on traces" not in passes
        assert ("old-policy scoring" in passes) == (iterations > 1)
        assert passes.get("old-policy scoring", passes["prompt-only scoring"]).tokens == 2 * (100 + 4 * 50)
        reused = tokens.step_passes(plan_step(MethodConfig(name="opsd"), 1, 4), inputs, rollout_step=False)
        assert [p.name for p in reused] == ["prompt-only scoring"]  # a reused batch keeps its teacher log-probs
