"""The demo's report says what ran, what the RL term did, how noisy the evaluation is, where the model is."""

import re

from transformers import AutoModelForCausalLM

from pact_cotrain.recipes.demo import run_demo
from pact_cotrain.reporting import CURVES, binomial_se, paired_bootstrap_se, zero_rl_gradient_steps
from pact_cotrain.testing import tiny_llama, tiny_tokenizer

TINY = ["train.max_steps=2", "train.mixed_precision=null", "train.rollout_dtype=null", "train.report_to=[]",
        "train.gradient_checkpointing=false", "sampling.max_turns=2", "sampling.max_new_tokens_per_turn=8",
        "sampling.max_completion_tokens=64", "data.n_train=8", "train.disable_tqdm=true"]


def test_demo_report_states_steps_zero_gradient_noise_and_model(tmp_path, monkeypatch):
    import pact_cotrain.recipes.demo as demo

    tokenizer = tiny_tokenizer()
    monkeypatch.setattr(demo, "evaluate_toolworld", _fast_eval(demo.evaluate_toolworld))
    out = tmp_path / "demo"
    assert run_demo(str(out), overrides=TINY, warmup_config="demo_warmup",
                    warmup_overrides=["train.max_steps=1", "train.mixed_precision=null", "data.n_train=4",
                                      "train.gradient_checkpointing=false", "train.disable_tqdm=true"],
                    n_eval=3, model=tiny_llama(tokenizer), tokenizer=tokenizer) == 0
    report = (out / "report.md").read_text()
    assert "2 of 2 planned PACT steps completed" in report
    assert "1 of 1 SFT steps" in report
    # A random model earns no reward: every group is all-equal, so both steps are listed as zero-gradient.
    assert "zero gradient (all rewards equal in every group) at steps 1, 2" in report
    assert "3 held-out toolworld test tasks" in report and f"at most {binomial_se(0.5, 3):.3f}" in report
    # a random model scores 0 at every evaluation
    assert "PACT's change (after PACT minus after warm-up) 0.000; the whole change 0.000" in report
    # three evaluations, so PACT's own change is not confused with the warm-up's
    assert "| metric | base model | after warm-up | after PACT | PACT's change | whole change |" in report
    assert (out / "episodes_warmup.jsonl").exists() and "after warm-up" in report
    assert f"`{out / 'final'}`" in report
    for _, label, _, words in CURVES:
        assert f"**{label}**" in report and words in report
    assert re.search(r"\| Solve-F1 \| \d\.\d{3} \| \d\.\d{3} \|", report)
    assert (out / "training_curves.png").stat().st_size > 0
    reloaded = AutoModelForCausalLM.from_pretrained(out / "final")
    assert reloaded.config.vocab_size == len(tokenizer)
    assert (out / "final" / "tokenizer_config.json").exists()


def _fast_eval(evaluate):
    from pact_cotrain.rollout.engine import SamplingConfig

    def fast(model, tokenizer, tasks, episodes_out=None, progress=None):
        return evaluate(model, tokenizer, tasks, SamplingConfig(greedy=True, max_turns=2, max_new_tokens_per_turn=8,
                                                                max_completion_tokens=64), episodes_out, progress)
    return fast


def test_zero_gradient_steps_are_those_with_every_group_equal():
    history = [{"step": 1, "rl/groups_all_equal": 1.0}, {"step": 2, "rl/groups_all_equal": 0.5}, {"step": 3}]
    assert zero_rl_gradient_steps(history) == [1]


def test_binomial_standard_error():
    assert binomial_se(0.5, 25) == 0.1
    assert binomial_se(0.0, 10) == 0.0


def test_paired_bootstrap_se_matches_the_standard_error_of_the_mean_difference():
    before, after = [0.0] * 50, [1.0] * 25 + [0.0] * 25  # differences: half 1, half 0 -> SE ~ sqrt(.25/50)
    assert abs(paired_bootstrap_se(before, after) - (0.25 / 50) ** 0.5) < 0.01
    assert paired_bootstrap_se([0.5, 0.5], [0.5, 0.5]) == 0.0
