"""Evaluation as the official harnesses run it: per-benchmark protocols, caps over expert traces,
BFCL expert traces as a file that validates."""

from __future__ import annotations

import pytest

from pact_cotrain.data.trace_format import Task
from pact_cotrain.eval.benchmarks import BENCHMARKS, eval_settings
from pact_cotrain.eval.caps import Caps, caps_report
from pact_cotrain.rollout.engine import complete_calls_text


def test_protocol_defaults_and_overrides():
    toolhop = eval_settings(BENCHMARKS["toolhop"])
    assert (toolhop.max_turns, toolhop.temperature, toolhop.greedy, toolhop.deviations) == (9, 0.0, True, [])
    assert eval_settings(BENCHMARKS["ftrl"]).max_turns == 20
    capped = eval_settings(BENCHMARKS["toolhop"], max_turns=3, max_new_tokens_per_turn=128)
    assert capped.max_turns == 3 and capped.deviations == ["max_turns 3 (protocol 9)",
                                                           "max_new_tokens_per_turn 128 (protocol 1024)"]
    assert eval_settings(BENCHMARKS["toolhop"], max_turns=50).max_turns == 9  # only lowers


def test_complete_calls_text_drops_only_an_unclosed_trailing_block():
    done = '<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call>'
    assert complete_calls_text(done + "\nmore text") == done + "\nmore text"
    assert complete_calls_text(done + '\n<tool_call>\n{"name": "b", "argu') == done + "\n"


def test_caps_report_on_hand_made_tasks(tokenizer):
    call = {"role": "assistant", "content": "", "tool_calls": [{"name": "f", "arguments": {"x": "y" * 40}}]}
    short = {"role": "assistant", "content": "ok"}
    tasks = [Task("a", [{"role": "user", "content": "q"}], [], trace=[short]),
             Task("b", [{"role": "user", "content": "q"}], [],
                  trace=[call, {"role": "tool", "name": "f", "content": "r"}, short]),
             Task("c", [{"role": "user", "content": "q"}], [])]
    report = caps_report(tasks, tokenizer, Caps(max_turns=1, max_new_tokens_per_turn=20))
    assert (report.n_tasks, report.n_without_trace, report.n_turns) == (2, 1, 3)
    assert report.turns_over_token_cap == 1 and report.traces_over_turn_cap == 1
    assert report.over_ids == ["b"] and report.trace_share == 0.5 and report.exceeds()
    assert not caps_report(tasks, tokenizer, Caps()).exceeds()


def test_data_traces_bfcl_writes_800_rows_that_validate(tmp_path, capsys):
    pytest.importorskip("bfcl_eval")
    from pact_cotrain.cli import main

    out = tmp_path / "bfcl.jsonl"
    assert main(["data", "traces", "bfcl", "--out", str(out)]) == 0
    assert main(["data", "validate", str(out)]) == 0
    assert "800 valid tasks, 800 with an expert trace" in capsys.readouterr().out
