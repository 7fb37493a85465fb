"""A study run's held-out curve (study/curve.py): weights kept every few steps, each evaluated once
on a subset, and the curve read on that subset from step 0 (vanilla) to the run's own last evaluation."""

from __future__ import annotations

import json
import os

import pytest
import torch
from transformers import AutoModelForCausalLM

from pact_cotrain.errors import UserError
from pact_cotrain.study import curve as study_curve
from pact_cotrain.study.runner import run_dir, train_or_resume
from pact_cotrain.study.evaluate import EvalSet, write_per_task
from pact_cotrain.config import load_config
from pact_cotrain.testing import tiny_llama, tiny_tokenizer
from tests.test_robustness import SMALL


def test_snapshots_keep_the_weights_every_few_steps_but_not_the_last(tmp_path):
    tok = tiny_tokenizer()
    model = tiny_llama(tok)
    cfg = load_config("sft", SMALL + ["train.max_steps=4", "train.save_steps=2", "train.save_total_limit=1",
                                      f"output_dir={tmp_path}/train"])
    train_or_resume(cfg, callbacks=[study_curve.Snapshots(tmp_path / "curve", 2)], model=model, tokenizer=tok)
    assert sorted(os.listdir(tmp_path / "curve")) == ["step-2"]  # step 4 is the run's final/
    snapshot = tmp_path / "curve" / "step-2"
    assert not (snapshot / "optimizer.pt").exists()
    at_2 = AutoModelForCausalLM.from_pretrained(snapshot)
    final = AutoModelForCausalLM.from_pretrained(tmp_path / "train" / "final")
    assert any(not torch.equal(a, b) for a, b in zip(at_2.parameters(), final.parameters()))


def _episodes(eval_dir, name, scores):
    eval_dir.mkdir(parents=True, exist_ok=True)
    with open(eval_dir / f"episodes_{name}.jsonl", "w") as handle:
        for task_id, score in scores.items():
            handle.write(json.dumps({"task_id": task_id, "metrics": {"solve_f1": score}}) + "\n")


def test_each_kept_step_is_evaluated_once_on_the_subset(tmp_path, monkeypatch):
    directory = tmp_path / "run"
    for step in (2, 4):
        (directory / "curve" / f"step-{step}").mkdir(parents=True)
        (directory / "curve" / f"step-{step}" / "config.json").write_text("{}")
    calls = []

    def fake_evaluate(study, sets, model_dir, out_dir, seed):
        calls.append((model_dir, [(s.name, s.limit) for s in sets]))
        _episodes(out_dir, "test", {"a": 1.0, "b": 0.0})

    monkeypatch.setattr("pact_cotrain.study.evaluate.evaluate_sets", fake_evaluate)
    sets = [EvalSet("test", "toolworld", "tasks.jsonl", None, 5)]
    assert study_curve.evaluate_snapshots({}, sets, directory, "sft", 0, limit=2) == 2
    assert [limit for _, specs in calls for _, limit in specs] == [2, 2]
    assert sorted(os.listdir(directory / "curve" / "step-2")) == ["eval"]  # weights dropped after evaluation
    assert study_curve.evaluate_snapshots({}, sets, directory, "sft", 0, limit=2) == 2
    assert len(calls) == 2  # nothing evaluated twice


def test_curve_table_reads_vanilla_the_kept_steps_and_the_final_evaluation_on_the_subset(tmp_path):
    def rows(method, scores, step=None):
        return [{"method": method, "seed": 0, "eval_set": "test", "task_id": t, "solve_f1": v,
                 **({"step": step} if step is not None else {})} for t, v in scores.items()]

    run = run_dir(tmp_path, "sft_curve", 0)
    run.mkdir(parents=True)
    write_per_task(run / "curve.jsonl.gz", rows("sft_curve", {"a": 1.0, "b": 0.0}, step=8))
    write_per_task(run / "per_task.jsonl.gz", rows("sft_curve", {"a": 1.0, "b": 1.0, "c": 0.0}))
    (run / "done.json").write_text(json.dumps({"max_steps": 16}))
    vanilla = run_dir(tmp_path, "vanilla", 0)
    vanilla.mkdir(parents=True)
    write_per_task(vanilla / "per_task.jsonl.gz", rows("vanilla", {"a": 0.0, "b": 0.0, "c": 1.0}))
    # task c is not in the curve's subset: left out at every step
    assert study_curve.curve_table(tmp_path, "sft_curve", 0) == {"test": {0: 0.0, 8: 50.0, 16: 100.0}}


def test_a_curve_spec_is_checked():
    assert study_curve.curve_spec({"config": "sft"}, "sft") is None
    assert study_curve.curve_spec({"curve": {"every": 8, "limit": 64}}, "sft") == {"every": 8, "limit": 64}
    with pytest.raises(UserError, match="methods.sft.curve"):
        study_curve.curve_spec({"curve": {"every": 8}}, "sft")


def test_a_study_extends_another_replacing_the_keys_it_sets():
    from pact_cotrain.study.runner import load_study

    pilot, v2 = load_study("v2_pilot"), load_study("v2")
    assert "extends" not in pilot and pilot["seeds"] == [0] and "pact_numerics" in pilot["methods"]
    assert {k: v for k, v in pilot.items() if k not in ("seeds", "methods", "screen", "eval", "primary")} == \
        {k: v for k, v in v2.items() if k not in ("seeds", "methods", "screen", "eval", "primary")}
    assert pilot["primary"] is None and v2["primary"]["reference"] == "pact"  # the tests are the main phase's
    assert pilot["screen"] == {**v2["screen"], "eval_samples": None}  # merged key by key
    # eval merged too: its sets replaced by the same two the main phase has (neither evaluates the floored
    # toolworld_ood), the rest v2's
    assert pilot["eval"] == v2["eval"] and list(pilot["eval"]["sets"]) == ["toolworld_test", "toolworld_ood_tools"]
    assert pilot["methods"]["sft_curve"]["curve"] == {"every": 8, "limit": 64}
