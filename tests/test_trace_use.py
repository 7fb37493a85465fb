"""The trace-use diagnostic (`pact diagnose trace-use`): its statistics on hand-made numbers and one run of the
command on a tiny model."""

import json

import pytest

from pact_cotrain.eval import trace_use as tu

approx = pytest.approx


def test_success_comparison_is_paired_by_task():
    # per task: with h (1, .5, .75, 1), prompt-only (.5, .5, .25, .5): differences .5, 0, .5, .5
    out = tu.success_comparison([1.0, 0.5, 0.75, 1.0], [0.5, 0.5, 0.25, 0.5], n_resamples=500)
    assert out["mean_difference"] == approx(0.375)
    assert out["success_with_trace"] == approx(0.8125) and out["success_prompt_only"] == approx(0.4375)
    low, high = out["difference_ci95"]
    assert 0.0 <= low <= 0.375 <= high <= 0.5  # resampled means of {0, .5, .5, .5} lie in [0, .5]
    # paired t: mean .375, sd .25, n 4 -> t = 3, df 3, p = 0.0577 (scipy.stats.ttest_rel gives 0.05767)
    assert out["paired_t_p"] == approx(0.05767, abs=1e-4)
    same = tu.success_comparison([0.5, 0.5], [0.5, 0.5])
    assert same["mean_difference"] == 0.0 and same["difference_ci95"] == [0.0, 0.0] and same["paired_t_p"] is None


def test_context_kl_pools_tokens_over_tasks():
    out = tu.context_kl([1.0, 3.0], [10, 30], n_resamples=200)
    assert out["kl_per_token"] == approx(0.1) and out["tokens"] == 40
    assert out["ci95"] == approx([0.1, 0.1])  # both tasks at 0.1 per token
    assert tu.context_kl([0.0], [0])["kl_per_token"] is None


def test_share_with_variance():
    assert tu.share_with_variance([[1, 1, 1], [0, 1, 0], [0.5, 0.5], [0.2, 0.3]]) == 0.5


def test_trace_use_command_on_a_tiny_model(tmp_path, tokenizer, capsys, monkeypatch):
    """`pact diagnose trace-use` end to end (a tiny random model saved to a directory, 3 toolworld tasks in
    batches of 2, so a progress line is written after a partial batch set)."""
    monkeypatch.setenv("PACT_PROGRESS", "plain")
    from pact_cotrain.cli import main
    from pact_cotrain.data.trace_format import write_tasks
    from pact_cotrain.envs.toolworld import generate_tasks
    from pact_cotrain.testing import tiny_llama

    tiny_llama(tokenizer).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    write_tasks(tmp_path / "tasks.jsonl", generate_tasks(3, seed=0, split="train"))
    out = tmp_path / "trace_use.json"
    assert main(["diagnose", "trace-use", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "tasks.jsonl"),
                 "--k", "2", "--max-turns", "2", "--max-new-tokens", "8", "--max-completion-tokens", "32",
                 "--tasks-per-batch", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["success"]["n_tasks"] == 3
    assert "trace-use: task 3/3" in capsys.readouterr().err
    assert result["kl_prompt_vs_trace_context"]["tokens"] > 0
    assert result["kl_prompt_vs_trace_context"]["kl_per_token"] is not None
    assert set(result["groups_with_reward_variance"]) == {"prompt_only", "with_trace"}
