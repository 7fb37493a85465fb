"""Caps against the expert format: `pact study` prints the shares of expert turns and traces over its
caps and refuses above 5 % unless forced; the trainer logs the share of rollout turns cut; a turn cut
by the token limit still runs its complete calls, and the evaluation report counts it."""

from __future__ import annotations

import json

import pytest
import yaml

from pact_cotrain.data.trace_format import write_tasks
from pact_cotrain.envs.toolworld import ToolworldEnv, generate_tasks
from pact_cotrain.eval.caps import Caps, caps_report, format_caps_report
from pact_cotrain.rollout import engine as engine_module
from pact_cotrain.rollout.backends import TurnOutput
from pact_cotrain.rollout.engine import RolloutEngine, SamplingConfig
from pact_cotrain.testing import tiny_llama

# ---------------------------------------------------------------------------------------------
# `pact study`: shares printed before any run, refusal above 5 %, --force-caps recorded


def _study_yaml(tmp_path, max_new_tokens_per_turn: int) -> str:
    study = {
        "model": "tiny", "seeds": [0], "workers": 1,
        "data": {"toolworld_train": 8, "ftrl_dev_percent": 25, "ftrl_train": False},
        "warmup": {"config": "sft"},
        "budget": {"train.max_steps": 1, "sampling.max_turns": 4,
                   "sampling.max_new_tokens_per_turn": max_new_tokens_per_turn,
                   "sampling.max_completion_tokens": 4096},
        "methods": {"vanilla": None, "grpo": {"config": "grpo"}},
        "eval": {"benchmarks": ["toolworld"], "limit": {"toolworld": 4}, "max_turns": {"toolworld": 4},
                 "max_new_tokens_per_turn": 1024, "backend": "hf"},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return str(path)


@pytest.fixture()
def study_env(tmp_path, monkeypatch, tokenizer):
    """`pact study` with its data and tokenizer made here and its runs recorded, not started."""
    from pact_cotrain.recipes import common
    from pact_cotrain.study import runner as study

    train = generate_tasks(8, seed=0, split="train")

    def prepare_data(_study, out):
        (out / "data").mkdir(parents=True, exist_ok=True)
        paths = {"train": str(out / "data" / "train.jsonl"), "ftrl_dev": str(out / "data" / "ftrl_dev.jsonl")}
        write_tasks(paths["train"], train)
        write_tasks(paths["ftrl_dev"], [])
        return paths

    started = []
    monkeypatch.setattr(study, "prepare_data", prepare_data)
    monkeypatch.setattr(common, "load_tokenizer", lambda name: tokenizer)
    monkeypatch.setattr(study, "_warmup", lambda *args: started.append("warmup"))
    monkeypatch.setattr(study, "_spawn", lambda args, *rest, **kw: started.append(" ".join(args)) or 0)
    return train, started


def test_study_refuses_caps_that_cut_more_than_5_percent(tmp_path, capsys, study_env, tokenizer):
    from pact_cotrain.cli import main

    train, started = study_env
    out = tmp_path / "out"
    assert main(["study", "--config", _study_yaml(tmp_path, 16), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert started == []  # nothing ran: no warm-up, no training run
    error = captured.err.strip()
    assert "\n" not in error and error.startswith("pact study: error: the caps cut more than 5% of the expert format")
    assert "--force-caps" in error and "train " in error and "toolworld" not in error
    # the shares, printed before any run: exactly what caps_report measures
    expected = caps_report(train, tokenizer, Caps(4, 16, 4096))
    assert expected.turn_share > 0.05
    assert format_caps_report("train", expected) in captured.out
    assert "caps [toolworld]" in captured.out
    record = json.loads((out / "caps.json").read_text())
    assert record["over"] == ["train"] and record["forced"] is False
    assert record["reports"]["train"]["turn_share"] == pytest.approx(expected.turn_share)
    assert record["reports"]["train"]["methods"] == ["grpo"]


def test_force_caps_goes_on_and_the_report_says_so(tmp_path, capsys, study_env):
    from pact_cotrain.cli import main

    _, started = study_env
    out = tmp_path / "out"
    assert main(["study", "--config", _study_yaml(tmp_path, 16), "--out", str(out), "--force-caps"]) == 0
    assert started[0] == "warmup" and any("--run-one grpo:0" in s for s in started)
    assert "caps: forced (--force-caps)" in capsys.readouterr().out
    assert json.loads((out / "caps.json").read_text())["forced"] is True
    report = (out / "results.md").read_text()
    assert "**Caps forced** (`--force-caps`): train cut more than 5%" in report
    assert "- train: under turns 4, new tokens/turn 16, completion 4096:" in report
    assert "- toolworld: under turns 4, new tokens/turn 1024" in report
    assert "max_turns 4 (protocol 10)" in report  # the evaluation's deviation from its protocol


def test_clean_caps_start_without_force(tmp_path, study_env):
    from pact_cotrain.cli import main

    _, started = study_env
    out = tmp_path / "out"
    assert main(["study", "--config", _study_yaml(tmp_path, 1024), "--out", str(out)]) == 0
    assert started[0] == "warmup"
    record = json.loads((out / "caps.json").read_text())
    assert record["over"] == [] and record["forced"] is False
    report = (out / "results.md").read_text()
    assert "expert traces (0.0%) over some cap" in report and "Caps forced" not in report


def test_the_cpu_study_measures_the_caps_of_every_trained_method():
    from pact_cotrain.study.runner import load_study, training_caps

    groups = training_caps(load_study("cpu"))
    assert list(groups) == [Caps(4, 208, 864)]  # the budget's caps: every method rolls out under them
    assert "vanilla" not in groups[Caps(4, 208, 864)] and "sft_then_matchtir" in groups[Caps(4, 208, 864)]


# ---------------------------------------------------------------------------------------------
# Scripted turns: a call cut by the token limit is still executed, and the cut is counted


def _call_text(call: dict) -> str:
    return "<tool_call>\n" + json.dumps({"name": call["name"], "arguments": call["arguments"]}) + "\n</tool_call>"


class CutThenAnswer:
    """Turn 1: the expert's first call, then more text that runs past max_new_tokens (cut); turn 2: an answer."""

    def __init__(self, tokenizer, call: dict):
        self.tokenizer, self.calls = tokenizer, 0
        self.first = tokenizer.encode(_call_text(call) + "\nNext I will look up the other one, then answer.",
                                      add_special_tokens=False)
        self.n_call_tokens = len(tokenizer.encode(_call_text(call), add_special_tokens=False))

    def generate(self, prompts, max_new_tokens, temperature, top_p, greedy):
        self.calls += 1
        if self.calls == 1:
            assert len(self.first) > max_new_tokens >= self.n_call_tokens + 2  # the call fits; the rest does not
            return [TurnOutput(self.first[:max_new_tokens], [0.0] * max_new_tokens, False) for _ in prompts]
        ids = self.tokenizer.encode("Done.", add_special_tokens=False) + [self.tokenizer.eos_token_id]
        return [TurnOutput(ids, [0.0] * len(ids), True) for _ in prompts]


def test_a_cut_turn_runs_its_complete_call_and_records_the_cut(tokenizer):
    task = generate_tasks(4, seed=1000, split="test")[0]
    call, response = task.trace[0]["tool_calls"][0], task.trace[1]["content"]
    backend = CutThenAnswer(tokenizer, call)
    sampling = SamplingConfig(max_turns=4, max_new_tokens_per_turn=backend.n_call_tokens + 4,
                              max_completion_tokens=10_000)
    engine = RolloutEngine(None, tokenizer, lambda t: ToolworldEnv(max_steps=10), sampling, backend=backend)
    ep = engine.rollout([task])[0]
    assert ep.turn_cut == [True, False] and ep.metrics["turns_cut"] == 1
    assert ep.metrics["n_calls"] == 1.0  # env.step executed the call of the cut turn
    tool = [m for m in ep.messages if m["role"] == "tool"]
    assert [m["content"] for m in tool] == [response]
    end = ep.turn_spans[0][1]  # the end-of-turn token the cut left out is inserted, not sampled
    assert ep.completion_ids[end] == tokenizer.eos_token_id and ep.generated_mask[end] == 0
    assert ep.stop_reason == "done" and len(ep.turn_spans) == 2


def test_the_evaluation_report_counts_the_cut_turn(tmp_path, monkeypatch, tokenizer):
    from pact_cotrain.eval.benchmarks import BENCHMARKS
    from pact_cotrain.eval.runner import run_eval, spread_subset

    task = spread_subset(BENCHMARKS["toolworld"].load(None), 1)[0]  # the task of a 1-task subset
    backend = CutThenAnswer(tokenizer, task.trace[0]["tool_calls"][0])

    class ScriptedEngine(RolloutEngine):  # run_eval's engine, with the scripted turns instead of the model's
        def __init__(self, model, tok, env_factory, sampling=None, **ignored):
            super().__init__(model, tok, env_factory, sampling, backend=backend)

    monkeypatch.setattr(engine_module, "RolloutEngine", ScriptedEngine)
    results = run_eval((tiny_llama(tokenizer), tokenizer), ["toolworld"], limit=1, out_dir=str(tmp_path),
                       max_turns=4, max_new_tokens_per_turn=backend.n_call_tokens + 4, device="cpu", progress=False)
    res = results["benchmarks"]["toolworld"]
    assert (res["turns"], res["turns_cut"], res["turns_cut_fraction"]) == (2, 1, 0.5)
    assert res["metrics"]["solve_r"] > 0  # the cut turn's call counted towards the answer's tools
    assert "Turns cut by a token limit: 1 of 2 (50.0%)" in (tmp_path / "results.md").read_text()


# ---------------------------------------------------------------------------------------------
# The trainer's rollout metric


class HalfCut:
    """Every other rollout of a batch is cut at max_new_tokens (text without a call: the episode ends);
    the others answer at once, so half of all turns are cut."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.filler = tokenizer.encode("a", add_special_tokens=False)[0]

    def generate(self, prompts, max_new_tokens, temperature, top_p, greedy):
        done = self.tokenizer.encode("Done.", add_special_tokens=False) + [self.tokenizer.eos_token_id]
        return [TurnOutput([self.filler] * max_new_tokens, [0.0] * max_new_tokens, False) if i % 2 == 0
                else TurnOutput(done, [0.0] * len(done), True) for i in range(len(prompts))]


def test_trainer_logs_the_share_of_rollout_turns_cut(tmp_path, monkeypatch, tokenizer):
    from pact_cotrain.config import load_config
    from pact_cotrain.recipes.train import build_trainer
    from pact_cotrain.training import trainer as trainer_module

    episodes = []

    class ScriptedEngine(RolloutEngine):  # the trainer's engine, with scripted turns; keeps what it rolled out
        def __init__(self, model, tok, env_factory, sampling=None, **ignored):
            super().__init__(model, tok, env_factory, sampling, backend=HalfCut(tok))

        def rollout(self, *args, **kwargs):
            out = super().rollout(*args, **kwargs)
            episodes.extend(out)
            return out

    monkeypatch.setattr(trainer_module, "RolloutEngine", ScriptedEngine)
    cfg = load_config("grpo", ["train.k=2", "train.prompts_per_step=2", "data.n_train=4", "train.max_steps=1",
                               "sampling.max_new_tokens_per_turn=8", "sampling.max_completion_tokens=64",
                               "sampling.max_turns=2", "train.report_to=[]", "train.disable_tqdm=true",
                               "train.save_steps=0", f"output_dir={tmp_path}/run"])
    trainer = build_trainer(cfg, model=tiny_llama(tokenizer), tokenizer=tokenizer)
    trainer.train()
    cuts = [c for ep in episodes for c in ep.turn_cut]
    assert len(cuts) == 4 and sum(cuts) == 2
    logged = [h["rollout/turns_cut"] for h in trainer.state.log_history if "rollout/turns_cut" in h]
    assert logged == [pytest.approx(0.5)]
