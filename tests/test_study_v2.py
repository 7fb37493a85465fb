"""Study v2's infrastructure (issue 14): named evaluation sets, per-task results, the screening step,
matched-tokens arms, and what done.json records (trained tokens, the git commit)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from pact_cotrain.data.trace_format import load_tasks, write_tasks
from pact_cotrain.envs.toolworld import generate_tasks
from pact_cotrain.errors import UserError
from pact_cotrain.study import runner as study_recipe
from pact_cotrain.study.evaluate import read_per_task
from pact_cotrain.testing import tiny_llama, tiny_tokenizer

REPO = Path(__file__).resolve().parents[1]


def _head() -> str:
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def _tiny_study(**extra) -> dict:
    study = {
        "model": "tiny", "seeds": [0], "workers": 1,
        "data": {"toolworld_train": 6, "ftrl_dev_percent": 25, "ftrl_train": False},
        "warmup": {"config": "sft"},
        "budget": {"train.max_steps": 8, "sampling.max_turns": 1, "sampling.max_new_tokens_per_turn": 8,
                   "sampling.max_completion_tokens": 64},
        "methods": {"vanilla": None, "sft": {"config": "sft"}},
        "eval": {"sets": {"toolworld_test": {"benchmark": "toolworld",
                                             "toolworld": {"split": "test", "n": 3, "seed": 1000}},
                          "toolworld_ood": {"benchmark": "toolworld", "toolworld": {"split": "ood", "n": 2},
                                            "max_turns": 1}},
                 "max_turns": 2, "max_new_tokens_per_turn": 8, "max_completion_tokens": 64, "backend": "hf",
                 "dtype": "float32", "batch_size": 8},
    }
    study.update(extra)
    return study


def _save_tiny(path: Path) -> Path:
    tokenizer = tiny_tokenizer()
    tiny_llama(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_v2_study_evaluates_fixed_sets_of_256_tasks_greedy_in_fp32():
    study = study_recipe.load_study("v2")
    sets = study["eval"]["sets"]
    assert {n: (s["benchmark"], s["toolworld"]["split"], s["toolworld"]["n"]) for n, s in sets.items()} == {
        "toolworld_test": ("toolworld", "test", 256), "toolworld_ood_tools": ("toolworld", "ood", 256)}
    assert study["eval"]["dtype"] == "float32" and study["eval"]["vllm"]["dtype"] == "float32"
    assert study["screen"]["samples"] == 8 and study["screen"]["keep"] == [0.2, 0.6]
    assert not study_recipe.needs_ftrl(study)
    assert {"vanilla", "pact", "pact_q1", "sft"} <= set(study["methods"])
    # the pre-registered comparisons are arms of the study, on one of its sets (PLAN.md section 4)
    assert set(study["primary"]["comparisons"]) <= set(study["methods"]) and study["primary"]["set"] in sets
    assert study_recipe.method_overrides(study, "sft_matched_tokens")[-1] == "train.max_steps=82"  # 24 x 3.41
    from pact_cotrain.eval.caps import Caps

    # one set of rollout caps for every trained arm (measured in the config's comments to cut no expert trace)
    trained = [m for m in study["methods"] if study["methods"][m]]
    assert study_recipe.training_caps(study) == {Caps(4, 224, 1024): trained}


def test_a_run_evaluates_every_named_set_and_keeps_per_task_results(tmp_path):
    from pact_cotrain.eval.benchmarks import BENCHMARKS, PROTOCOLS

    study = _tiny_study()
    _save_tiny(tmp_path / "warmup" / "final")
    study_recipe._train_and_eval(study, tmp_path, "vanilla", 0)

    directory = study_recipe.run_dir(tmp_path, "vanilla", 0)
    results = json.loads((directory / "eval" / "results.json").read_text())
    assert list(results["benchmarks"]) == ["toolworld_test", "toolworld_ood"]
    assert results["benchmarks"]["toolworld_test"]["n_episodes"] == 3
    assert results["benchmarks"]["toolworld_ood"]["max_turns"] == 1  # the set's own cap
    assert results["benchmarks"]["toolworld_test"]["max_turns"] == 2  # the evaluation's
    assert results["benchmarks"]["toolworld_test"]["settings"]["temperature"] == 0.0  # greedy
    assert "toolworld_ood" not in BENCHMARKS and "toolworld_ood" not in PROTOCOLS  # registered for the call only
    # the generated sets are fixed files, the same tasks as the generator's
    assert [t.id for t in load_tasks(tmp_path / "data" / "eval_toolworld_ood.jsonl")] == [
        t.id for t in generate_tasks(2, seed=0, split="ood")]

    rows = read_per_task(directory / "per_task.jsonl.gz")
    assert [(r["eval_set"], r["task_id"]) for r in rows] == (
        [("toolworld_test", f"toolworld_test_1000_{i:05d}") for i in range(3)]
        + [("toolworld_ood", f"toolworld_ood_0_{i:05d}") for i in range(2)])
    episodes = [json.loads(line) for line in (directory / "eval" / "episodes_toolworld_test.jsonl").open()]
    for row, ep in zip(rows, episodes):
        assert (row["method"], row["seed"], row["benchmark"]) == ("vanilla", 0, "toolworld")
        assert {k: row[k] for k in ("solve_f1", "solve_r", "solve_p", "answer_correct")} == {
            k: ep["metrics"][k] for k in ("solve_f1", "solve_r", "solve_p", "answer_correct")}
    done = json.loads((directory / "done.json").read_text())
    assert done["per_task_rows"] == 5
    assert done["git"]["commit"] == _head() and len(done["git"]["commit"]) == 40


class _Trained:
    """What train_or_resume returns, with a log of two steps (rollout and supervised tokens)."""

    def __init__(self):
        self.state = type("S", (), {"log_history": [
            {"step": 1, "loss": 1.0, "rollout_tokens": 100.0, "sft/n_supervised": 40.0, "forward_tokens": 300.0},
            {"step": 2, "loss": 0.5, "rollout_tokens": 60.0, "sft/n_supervised": 40.0, "forward_tokens": 250.0}]})()

    def close_rollout_engine(self):
        pass


def test_steps_multiplier_gives_an_arm_more_steps_and_done_json_records_tokens_and_commit(tmp_path, monkeypatch):
    study = _tiny_study(methods={"grpo_matched": {"config": "grpo", "steps_multiplier": 1.5},
                                 "grpo": {"config": "grpo", "overrides": {"train.max_steps": 3}}})
    seen = []

    def fake_train(cfg, **kwargs):
        seen.append(cfg["train"]["max_steps"])
        assert json.loads((Path(cfg["output_dir"]) / "code_version.json").read_text())["commit"] == _head()
        return _Trained()

    monkeypatch.setattr(study_recipe, "train_or_resume", fake_train)
    monkeypatch.setattr(study_recipe, "evaluate", lambda *a, **k: {})
    study_recipe._train_and_eval(study, tmp_path, "grpo_matched", 0)
    study_recipe._train_and_eval(study, tmp_path, "grpo", 0)
    assert seen == [12, 3]  # round(8 x 1.5); an explicit train.max_steps override
    done = json.loads((study_recipe.run_dir(tmp_path, "grpo_matched", 0) / "done.json").read_text())
    assert done["compute"] == {"steps": 2, "rollout_steps": 2, "rollout_tokens": 160, "sft_tokens": 80,
                               "forward_tokens": 550, "trained_tokens": 240}
    assert (done["max_steps"], done["steps_multiplier"]) == (12, 1.5)
    assert done["git"]["commit"] == done["git_at_start"]["commit"] == _head()
    assert isinstance(done["git"]["dirty"], bool)
    assert set(done["host"]) == {"cpu", "native_bf16", "gpu"} and isinstance(done["host"]["native_bf16"], bool)
    assert done["train_data"] == str(tmp_path / "data" / "train.jsonl")

    for bad in ({"config": "grpo", "steps_multiplier": 0}, {"config": "grpo", "steps": 3}):
        with pytest.raises(UserError):
            study_recipe.method_overrides({**study, "methods": {"x": bad}}, "x")


def test_an_arm_runs_at_its_own_seeds_seed_by_seed(tmp_path):
    """A secondary arm given fewer seeds (`seeds:` in its spec) runs only at those; jobs go seed by seed
    (a session's end leaves whole seeds done); vanilla runs once; the report counts missing runs by each
    arm's own seeds."""
    from pact_cotrain.study.report import collect

    study = _tiny_study(seeds=[10, 11, 12], methods={"vanilla": None, "pact": {"config": "pact"},
                                                      "sft_more": {"config": "sft", "seeds": [10, 12]}})
    assert study_recipe.method_seeds(study, "pact") == [10, 11, 12]
    assert study_recipe.method_seeds(study, "sft_more") == [10, 12]
    assert study_recipe.method_seeds(study, "vanilla") == [10]
    assert study_recipe.study_jobs(study, list(study["methods"])) == [
        ("vanilla", 10), ("pact", 10), ("sft_more", 10), ("pact", 11), ("pact", 12), ("sft_more", 12)]
    # --seeds: those seeds for every trained method, as before
    assert study_recipe.study_jobs(study, ["vanilla", "sft_more"], seeds=[11]) == [("sft_more", 11)]
    assert collect(tmp_path, study) == {"vanilla": [], "pact": [], "sft_more": []}
    for bad in ([], [1.5], "10", [True]):
        with pytest.raises(UserError, match="sft_more.seeds"):
            study_recipe.method_seeds({**study, "methods": {"sft_more": {"config": "sft", "seeds": bad}}}, "sft_more")


# ---------------------------------------------------------------------------------------------
# Screening


def _write_study(tmp_path: Path, study: dict) -> str:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return str(path)


def test_screening_keeps_the_tasks_whose_rate_is_in_the_band(tmp_path):
    from pact_cotrain.study.screen import run_screen

    config = _write_study(tmp_path, _tiny_study(screen={"samples": 5, "keep": [0.2, 0.6]}))
    pool = generate_tasks(6, seed=0, split="train")
    write_tasks(tmp_path / "pool.jsonl", pool)
    successes = {t.id: n for t, n in zip(pool, [0, 1, 2, 3, 4, 5])}  # rates 0, .2, .4, .6, .8, 1
    asked = []

    def rates(tasks, partial):
        asked.append([t.id for t in tasks])
        return successes

    out = tmp_path / "screened.jsonl"
    summary = run_screen(config, "unused", str(out), pool=str(tmp_path / "pool.jsonl"), rate_fn=rates)
    assert asked == [[t.id for t in pool]]
    kept = load_tasks(out)
    assert [t.id for t in kept] == [t.id for t in pool[1:4]]  # both ends of the band included
    assert [t.metadata["screen"] for t in kept] == [{"rate": r, "successes": n, "samples": 5}
                                                    for r, n in ((0.2, 1), (0.4, 2), (0.6, 3))]
    assert kept[0].trace == pool[1].trace and kept[0].tools == pool[1].tools  # trainable as they were
    records = [json.loads(line) for line in open(f"{out}.rates.jsonl")]
    assert [(r["rate"], r["kept"]) for r in records] == [(0.0, False), (0.2, True), (0.4, True), (0.6, True),
                                                         (0.8, False), (1.0, False)]
    assert summary["successes_histogram"] == {f"{k}/5": 1 for k in range(6)}
    assert (summary["pool"], summary["kept"], summary["success"]) == (6, 3, "solve_f1 >= 1.0")
    assert summary["git"]["commit"] == _head()
    assert json.loads(Path(f"{out}.summary.json").read_text()) == summary

    none = tmp_path / "none.jsonl"
    with pytest.raises(UserError, match="no task of 6 has a success rate in"):
        run_screen(config, "unused", str(none), pool=str(tmp_path / "pool.jsonl"),
                   rate_fn=lambda ts, partial: {t.id: 5 for t in ts})
    assert not none.exists() and Path(f"{none}.rates.jsonl").exists()


def test_pact_study_screen_samples_a_tiny_model(tmp_path, capsys):
    from pact_cotrain.cli import main

    study = _tiny_study(screen={"samples": 2, "keep": [0.0, 1.0], "batch_tasks": 2})
    config = _write_study(tmp_path, study)
    model = _save_tiny(tmp_path / "model")
    out = tmp_path / "screened.jsonl"
    assert main(["study", "screen", "--config", config, "--model", str(model), "--out", str(out)]) == 0
    records = [json.loads(line) for line in open(f"{out}.rates.jsonl")]
    assert [r["task_id"] for r in records] == [t.id for t in generate_tasks(6, seed=0, split="train")]
    assert all(r["samples"] == 2 and r["successes"] in (0, 1, 2) for r in records)
    summary = json.loads(Path(f"{out}.summary.json").read_text())
    assert summary["caps"] == {"max_turns": 1, "max_new_tokens_per_turn": 8, "max_completion_tokens": 64}
    assert len(load_tasks(out)) == 6  # the band [0, 1] keeps all
    assert "screen: kept 6 of 6 tasks" in capsys.readouterr().out
    assert not Path(f"{out}.partial.jsonl").exists()  # removed once the screening is complete

    # Stopped after its first batch (2 of 6 tasks), a screening resumes from its partial record: the
    # recorded batch is not sampled again, and the result is the uninterrupted one's.
    again = tmp_path / "again.jsonl"
    first = [json.dumps({"task_id": r["task_id"], "successes": r["successes"]}) + "\n" for r in records[:2]]
    Path(f"{again}.partial.jsonl").write_text("".join(first) + '{"task_id": "cut-by-a-ki')
    capsys.readouterr()
    assert main(["study", "screen", "--config", config, "--model", str(model), "--out", str(again)]) == 0
    printed = capsys.readouterr().out
    assert "screen: 2/6" not in printed and "screen: 4/6" in printed and "screen: 6/6" in printed
    assert [json.loads(line) for line in open(f"{again}.rates.jsonl")] == records
    assert main(["study", "screen", "--config", config, "--out", str(out)]) == 2  # no --model: one line


def test_study_screens_once_after_the_warmup_and_arms_train_on_the_kept_tasks(tmp_path, monkeypatch, tokenizer):
    from pact_cotrain.recipes import common

    study = _tiny_study(screen={"samples": 2})
    config = _write_study(tmp_path, study)
    out = tmp_path / "out"
    spawned = []
    monkeypatch.setattr(common, "load_tokenizer", lambda name: tokenizer)
    monkeypatch.setattr(study_recipe, "_warmup", lambda *args: spawned.append("warmup"))
    monkeypatch.setattr(study_recipe, "_spawn", lambda args, *rest, **kw: spawned.append(" ".join(args)) or 0)
    assert study_recipe.run_study(config, str(out), force_caps=True) == 0  # the tiny caps cut the expert format
    data = out / "data"
    assert spawned[:2] == ["warmup", f"study screen --config {config} --model {out / 'warmup' / 'final'} "
                                     f"--out {data / 'screened.jsonl'} --pool {data / 'train.jsonl'}"]
    assert any("--run-one sft:0" in s for s in spawned[2:])
    # a run reads the screened pool, and refuses to start without it
    with pytest.raises(UserError, match="screened.jsonl is missing"):
        study_recipe._train_and_eval(study, out, "sft", 0)
    write_tasks(data / "screened.jsonl", generate_tasks(2, seed=0, split="train"))
    seen = {}
    monkeypatch.setattr(study_recipe, "train_or_resume", lambda cfg, **k: seen.update(cfg["data"]) or _Trained())
    monkeypatch.setattr(study_recipe, "evaluate", lambda *a, **k: {})
    study_recipe._train_and_eval(study, out, "sft", 0)
    assert (seen["source"], seen["path"]) == ("file", str(data / "screened.jsonl"))


def test_study_runs_the_jobs_given_in_their_order(tmp_path, monkeypatch, tokenizer):
    from pact_cotrain.cli import main
    from pact_cotrain.recipes import common

    config = _write_study(tmp_path, _tiny_study())
    spawned = []
    monkeypatch.setattr(common, "load_tokenizer", lambda name: tokenizer)
    monkeypatch.setattr(study_recipe, "_warmup", lambda *args: None)
    monkeypatch.setattr(study_recipe, "_spawn", lambda args, *rest, **kw: spawned.append(args[-1]) or 0)
    monkeypatch.setattr("pact_cotrain.study.report.write_report", lambda *a: None)
    out = str(tmp_path / "out")
    assert main(["study", "--config", config, "--out", out, "--force-caps", "--workers", "1",
                 "--jobs", "sft:2,sft:0"]) == 0
    assert spawned == ["sft:2", "sft:0"]
    assert main(["study", "--config", config, "--out", out, "--force-caps", "--jobs", "nope:0"]) == 2
    assert main(["study", "--config", config, "--out", out, "--force-caps", "--jobs", "sft"]) == 2


# ---------------------------------------------------------------------------------------------
# The report: per-set columns and the per-task tests


def _fake_set_run(out: Path, method: str, seed: int, scores: dict[str, list[float]]):
    from pact_cotrain.study.evaluate import write_per_task

    d = out / "runs" / method / f"seed{seed}"
    (d / "eval").mkdir(parents=True)
    benchmarks = {name: {"metrics": {"solve_f1": sum(v) / len(v)}, "turns_cut_fraction": 0.0}
                  for name, v in scores.items()}
    (d / "eval" / "results.json").write_text(json.dumps({"paper": {"values": {}}, "benchmarks": benchmarks}))
    (d / "log_history.json").write_text("[]")
    (d / "done.json").write_text(json.dumps({"train_seconds": 6.0, "total_seconds": 9.0}))
    write_per_task(d / "per_task.jsonl.gz", [{"method": method, "seed": seed, "eval_set": name, "task_id": f"t{i}",
                                              "solve_f1": v} for name, vs in scores.items() for i, v in enumerate(vs)])


def test_report_has_per_set_columns_and_paired_per_task_tests(tmp_path):
    from pact_cotrain.study.report import write_report

    study = _tiny_study(seeds=[0, 1], methods={"vanilla": None, "pact": {"config": "pact"}, "grpo": {"config": "grpo"},
                                               "sft": {"config": "sft"}})
    for seed in (0, 1):
        _fake_set_run(tmp_path, "pact", seed, {"toolworld_test": [1.0, 1.0, 0.0, 1.0], "toolworld_ood": [1.0, 0.0]})
        _fake_set_run(tmp_path, "grpo", seed, {"toolworld_test": [0.5, 1.0, 0.0, 0.5], "toolworld_ood": [1.0, 0.0]})
    _fake_set_run(tmp_path, "vanilla", 0, {"toolworld_test": [0.0, 0.0, 0.0, 0.0], "toolworld_ood": [0.0, 0.0]})
    _fake_set_run(tmp_path, "sft", 0, {"toolworld_test": [0.0, 0.0, 0.0], "toolworld_ood": [0.0, 0.0]})  # a task short
    write_report(study, tmp_path)
    md = (tmp_path / "results.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| method "))
    assert "| toolworld_test Solve-F1 | toolworld_test answer |" in header and "toolworld_ood Solve-F1" in header
    pact_row = next(line for line in md.splitlines() if line.startswith("| pact "))
    assert "| 75.0 ± 0.0 |" in pact_row
    # PACT minus GRPO on the test set: 75 - 50 = +25 points; equal on OOD: Δ 0, p 1
    grpo = next(line for line in md.splitlines() if line.startswith("| toolworld_test | grpo |"))
    assert "| 2, 2 | +25.0 |" in grpo
    ood = next(line for line in md.splitlines() if line.startswith("| toolworld_ood | grpo |"))
    assert "| +0.0 | [+0.0, +0.0] | 1 | 1 |" in ood
    assert "| toolworld_test | vanilla | 2, 1 | +75.0 |" in md
    assert "| toolworld_test | sft | – |" in md and "seed 0 has no score for 1 task(s), e.g. t3" in md
    assert "| toolworld_ood | sft | 2, 1 | +50.0 |" in md
    assert "sets toolworld_test (toolworld, 3 test tasks), toolworld_ood (toolworld, 2 ood tasks)" in md
    # paired by seed, on every set's Solve-F1: PACT - GRPO +25 on test, 0 on OOD at both seeds
    assert "| Δ toolworld_test Solve-F1 (points) | Δ toolworld_ood Solve-F1 (points) |" in md
    assert "| grpo | 0,1 | 25.0 ± 0.0 | 0.0 ± 0.0 |" in md
    assert "BFCL" not in md.split("\n\n")[1]  # the legend names only columns the table has


def test_report_gives_intervals_a_differences_figure_costs_and_a_dose_response(tmp_path):
    from pact_cotrain.study import cost as study_cost, report as study_report

    study = _tiny_study(seeds=[0, 1, 2], methods={"pact": {"config": "pact"}, "grpo": {"config": "grpo"}})
    pact = {0: [1.0, 1.0, 0.0, 0.0], 1: [1.0, 0.0, 1.0, 0.0], 2: [1.0, 1.0, 1.0, 0.0]}  # run means 50, 50, 75
    for seed, scores in pact.items():
        _fake_set_run(tmp_path, "pact", seed, {"toolworld_ood": scores})
        _fake_set_run(tmp_path, "grpo", seed, {"toolworld_ood": [1.0, 0.0, 0.0, 0.0]})
    # a resumed run: its log's step times (2 x 30 s) count, its last segment's training wall time does not
    done = tmp_path / "runs" / "pact" / "seed0"
    (done / "log_history.json").write_text(json.dumps([{"loss": 1.0, "step_time": 30.0, "step": 1},
                                                       {"loss": 1.0, "step_time": 30.0, "step": 2}]))
    (done / "done.json").write_text(json.dumps({"train_seconds": 10.0, "total_seconds": 3610.0, "threads": 2}))
    (tmp_path / "data").mkdir()
    rates = [{"task_id": f"t{i}", "rate": r} for i, r in enumerate([0.0, 0.25, 0.75, 1.0])]
    (tmp_path / "data" / "screened_toolworld_ood.jsonl.rates.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rates))
    study_report.write_report(study, tmp_path)
    md = (tmp_path / "results.md").read_text()
    # mean 58.3, t_{0.975, 2} = 4.303, std of (50, 50, 75) = 14.43: half-width 35.9
    assert "| pact | 3 | 58.3 [22.5, 94.2] |" in md
    assert "| grpo | 3 | 25.0 [25.0, 25.0] |" in md
    assert (tmp_path / "differences.png").stat().st_size > 0
    assert study_cost.run_core_hours(study_report.collect(tmp_path, study)["pact"][0]) == pytest.approx(
        (60.0 + 3600.0) * 2 / 3600)
    assert "| pact | 3 | " in md and "core-hours/run" in md
    # the summary table's step minutes count the resumed run's every segment: (60 + 0 + 0) s / 3 runs = 0.3 min
    pact_row = next(line for line in md.splitlines() if line.startswith("| pact | 0,1,2 |")).split(" | ")
    assert pact_row[-5] == "0.3"
    # by rate bin: t0 (0) ours 1 vs 1 -> 0; t1 (0.25] ours 2/3 vs 0; t2 (0.5, 1) 2/3 vs 0; t3 (1) 0 vs 0
    assert "| arm | 0 (1) | (0, 0.5] (1) | (0.5, 1) (1) | 1 (1) |" in md
    assert "| grpo | +0.0 | +66.7 | +66.7 | +0.0 |" in md


def test_report_states_the_preregistered_tests_and_their_verdicts(tmp_path, monkeypatch):
    """The plan's primary comparisons: Welch on the per-seed run means, Holm over the comparisons, a verdict;
    each pair's paired bootstrap is computed once and shown alike in both tables."""
    from pact_cotrain.study import stats as study_stats
    from pact_cotrain.study.report import write_report

    bootstrapped = []
    real_bootstrap = study_stats.paired_bootstrap
    monkeypatch.setattr(study_stats, "paired_bootstrap",
                        lambda ours, theirs, **kw: bootstrapped.append(1) or real_bootstrap(ours, theirs, **kw))

    study = _tiny_study(seeds=[0, 1, 2], methods={"pact": {"config": "pact"}, "sft": {"config": "sft"},
                                                  "grpo": {"config": "grpo"}, "pact_q1": {"config": "pact"},
                                                  "short": {"config": "sft"}},
                        primary={"set": "toolworld_ood", "comparisons": ["sft", "grpo", "pact_q1", "short"]})
    pact = {0: [1.0, 1.0, 1.0, 0.0], 1: [1.0, 1.0, 0.0, 1.0], 2: [1.0, 1.0, 1.0, 1.0]}  # run means 75, 75, 100
    sft = {0: [1.0, 0.0, 0.0, 0.0], 1: [0.0, 1.0, 0.0, 0.0], 2: [1.0, 1.0, 0.0, 0.0]}  # 25, 25, 50
    for seed in (0, 1, 2):
        _fake_set_run(tmp_path, "pact", seed, {"toolworld_ood": pact[seed]})
        _fake_set_run(tmp_path, "sft", seed, {"toolworld_ood": sft[seed]})
        _fake_set_run(tmp_path, "grpo", seed, {"toolworld_ood": [1.0, 1.0, 1.0, 1.0]})  # 100 at every seed
    _fake_set_run(tmp_path, "short", 0, {"toolworld_ood": [1.0, 1.0, 1.0]})  # a task short: no test, not in Holm
    write_report(study, tmp_path)
    md = (tmp_path / "results.md").read_text()
    # PACT - SFT: d = 50, se = sqrt(2 x 208.33 / 3) = 11.79, t = 4.24, df = 4, p = 0.0132; Holm over the two
    # finished comparisons: 2 x 0.01324 = 0.0265 < 0.05. PACT - GRPO: d = -16.7, se = 8.33 (GRPO has no
    # variance), t = -2.00, df = 2, p = 0.184 (Holm: max(0.0265, 0.184)): not decided.
    sft_line = next(line for line in md.splitlines() if line.startswith("| pact > sft |"))
    assert "| 3, 3 | +50.0 | 4.24 (4.0) | 0.0132 | 0.0265 |" in sft_line and sft_line.endswith("| supported |")
    grpo_line = next(line for line in md.splitlines() if line.startswith("| pact > grpo |"))
    assert "| -16.7 | -2.00 (2.0) | 0.184 | 0.184 |" in grpo_line and grpo_line.endswith("| not decided |")
    assert "| pact > pact_q1 | no finished run yet |" in md and "final only when every comparison" in md
    short = next(line for line in md.splitlines() if line.startswith("| pact > short |"))
    assert "has no score for 1 task(s)" in short and short.endswith("| not tested |")
    # two pairs with runs on the one set (sft, grpo; `short` scored other tasks): two bootstraps, not four
    assert len(bootstrapped) == 2
    interval = sft_line.split("|")[7].strip()
    assert f"| toolworld_ood | sft | 3, 3 | +50.0 | {interval} |" in md
    # what the seeds could detect: pooled std sqrt(208.33) = 14.43, df 4, sqrt(1/3 + 1/3) = 0.8165;
    # alpha 0.05: (2.776 + 0.941) x 14.43 x 0.8165 = 43.8; Holm's first step, alpha 0.05 / 4 = 0.0125 (t 4.31): 61.9
    assert "pact > sft with its 3 and 3 seeds (pooled std of the run means 14.43): 61.9 at α 0.0125, 43.8 at α 0.05" in md


def test_report_with_one_seed_a_side_tests_nothing_at_the_seed_level(tmp_path):
    """The main phase's first finished seeds: the per-task bootstrap is shown, the Welch test is not (and is
    not a verdict)."""
    from pact_cotrain.study.report import write_report

    study = _tiny_study(seeds=[0], methods={"pact": {"config": "pact"}, "sft": {"config": "sft"}},
                        primary={"set": "toolworld_ood", "comparisons": ["sft"]})
    _fake_set_run(tmp_path, "pact", 0, {"toolworld_ood": [1.0, 1.0, 0.0, 1.0]})
    _fake_set_run(tmp_path, "sft", 0, {"toolworld_ood": [0.0, 1.0, 0.0, 0.0]})
    write_report(study, tmp_path)
    md = (tmp_path / "results.md").read_text()
    line = next(line for line in md.splitlines() if line.startswith("| pact > sft |"))
    assert "| 1, 1 | +50.0 | – | – | – |" in line and line.endswith("| not tested (one seed each so far) |")
    assert "| supported |" not in md and "| contradicted |" not in md and "final only when every comparison" in md
    per_task = next(line for line in md.splitlines() if line.startswith("| toolworld_ood | sft |"))
    assert per_task.endswith("| – (one seed each) |")


def test_report_gives_no_verdict_before_the_planned_seeds_are_in(tmp_path):
    """Two of three planned seeds a side separate clearly, but the plan fixes the seeds and has no interim
    analysis: the row is interim, not supported, and Holm is not final."""
    from pact_cotrain.study.report import write_report

    study = _tiny_study(seeds=[0, 1, 2], methods={"pact": {"config": "pact"}, "sft": {"config": "sft"}},
                        primary={"set": "toolworld_ood", "comparisons": ["sft"], "planned_mdd_points": {0.05: 9.1}})
    for seed, (ours, theirs) in enumerate([([1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]),
                                           ([1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0])]):
        _fake_set_run(tmp_path, "pact", seed, {"toolworld_ood": ours})
        _fake_set_run(tmp_path, "sft", seed, {"toolworld_ood": theirs})
    write_report(study, tmp_path)
    md = (tmp_path / "results.md").read_text()
    line = next(line for line in md.splitlines() if line.startswith("| pact > sft |"))
    assert "| 2, 2 | +75.0 |" in line and line.endswith("| interim, no verdict (2 of 3, 2 of 3 seeds) |")
    assert "| supported |" not in md and "final only when every comparison has all its planned seeds" in md
    assert "Minimum detectable difference (power 0.8, two-sided t-test over seeds): planned 9.1 points at α 0.05" in md


def test_cost_counts_an_evaluation_resumed_across_sessions_at_its_pace(tmp_path):
    """A run whose evaluation a session's end cut: done.json holds only the last segment, whose log says how
    many episodes were already written. Those are costed at the pace of the last segment's own episodes."""
    from pact_cotrain.study import cost as study_cost, report as study_report

    study = _tiny_study(seeds=[0, 1], methods={"pact": {"config": "pact"}})
    for seed in (0, 1):
        _fake_set_run(tmp_path, "pact", seed, {"toolworld_test": [1.0, 0.0], "toolworld_ood": [1.0, 0.0]})
    results = tmp_path / "runs" / "pact" / "seed1" / "eval" / "results.json"
    data = json.loads(results.read_text())
    # 4 episodes per set; the last segment evaluated 1 of toolworld_test's and 3 of toolworld_ood's in 40 s
    data["benchmarks"]["toolworld_test"].update(n_episodes=4, wall_seconds=10.0)
    data["benchmarks"]["toolworld_ood"].update(n_episodes=4, wall_seconds=30.0)
    results.write_text(json.dumps(data))
    (tmp_path / "runs" / "pact" / "seed1.log").write_text(
        "resuming from runs/pact/seed1/train/checkpoint-2 (step 2)\n"
        "eval toolworld_test: resuming after 3 episodes already written\n"
        "eval toolworld_ood: resuming after 1 episodes already written\n")
    found = study_report.collect(tmp_path, study)["pact"]
    # seed 0: no log, its 3 s of evaluation; seed 1: 3 s plus 4 earlier episodes at 40 s / 4 episodes
    assert [study_cost.run_core_hours(r) * 3600 for r in found] == pytest.approx([3.0, 3.0 + 4 * 10.0])
    lines = study_cost.cost_lines({"pact": found})
    assert any("pact seed 1 (4)" in line for line in lines)


def test_export_copies_the_report_and_each_finished_runs_small_outputs(tmp_path):
    """`pact study --report --export DIR`: results.md, the per-seed CSV and every finished run's per-task
    results, done.json and log land in DIR (what results/study-v2/ commits); no weights, no unfinished run."""
    from pact_cotrain.cli import main

    out, target = tmp_path / "out", tmp_path / "results"
    study = _tiny_study(seeds=[0, 1], methods={"pact": {"config": "pact"}, "sft": {"config": "sft"}})
    config = _write_study(tmp_path, study)
    for seed in (0, 1):
        _fake_set_run(out, "pact", seed, {"toolworld_test": [1.0, 0.0]})
    (out / "runs" / "pact" / "seed0" / "final").mkdir()
    (out / "runs" / "pact" / "seed0" / "final" / "model.safetensors").write_bytes(b"weights")
    (out / "runs" / "sft" / "seed0" / "train").mkdir(parents=True)  # started, not finished: no done.json
    (out / "runs" / "pact" / "seed1.log").write_text("eval toolworld_test: resuming after 1 episodes already written\n")
    (out / "runs" / "sft" / "seed0.log").write_text("a run still going\n")
    assert main(["study", "--config", config, "--out", str(out), "--report", "--export", str(target)]) == 0
    assert (target / "results.md").read_text() == (out / "results.md").read_text()
    assert (target / "results_per_seed.csv").exists()
    copied = sorted(str(p.relative_to(target)) for p in (target / "runs").rglob("*") if p.is_file())
    assert copied == ["runs/pact/seed0/" + name for name in
                      ("done.json", "eval/results.json", "log_history.json", "per_task.jsonl.gz")] + [
        "runs/pact/seed1.log"] + ["runs/pact/seed1/" + name for name in
                                  ("done.json", "eval/results.json", "log_history.json", "per_task.jsonl.gz")]
    assert read_per_task(target / "runs" / "pact" / "seed1" / "per_task.jsonl.gz")[0]["solve_f1"] == 1.0


def test_an_exported_study_regenerates_the_same_report(tmp_path):
    """The committed folder alone (no weights, no task files) rewrites results.md to the same text, the
    training pool's screening and the dose-response by screened success rate included."""
    from pact_cotrain.cli import main

    out, target = tmp_path / "out", tmp_path / "results"
    study = _tiny_study(seeds=[0, 1], methods={"pact": {"config": "pact"}, "sft": {"config": "sft"}})
    config = _write_study(tmp_path, study)
    for seed in (0, 1):
        _fake_set_run(out, "pact", seed, {"toolworld_ood": [1.0, 0.0, 1.0, 0.0]})
        _fake_set_run(out, "sft", seed, {"toolworld_ood": [1.0, 0.0, 0.0, 0.0]})
    (out / "data").mkdir()
    rates = [{"task_id": f"t{i}", "rate": r} for i, r in enumerate([0.0, 0.25, 0.75, 1.0])]
    (out / "data" / "screened_toolworld_ood.jsonl.rates.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rates))
    (out / "data" / "screened.jsonl.summary.json").write_text(json.dumps(
        {"kept": 3, "pool": 8, "keep": [0.2, 0.6], "samples": 8, "temperature": 1.0, "success": "solve_f1 >= 1.0",
         "successes_histogram": {"0/8": 5, "2/8": 3}}))
    (out / "data" / "screened.jsonl").write_text("{}\n")  # the kept tasks: large, and not what the report reads
    assert main(["study", "--config", config, "--out", str(out), "--report", "--export", str(target)]) == 0
    report = (out / "results.md").read_text()
    assert "by the task's screened success rate" in report and "Training pool screened" in report
    assert not (target / "data" / "screened.jsonl").exists()
    (target / "results.md").unlink()
    assert main(["study", "--config", config, "--out", str(target), "--report"]) == 0
    assert (target / "results.md").read_text() == report


def test_evaluation_sets_are_screened_for_rates_only_under_their_own_caps(tmp_path, monkeypatch, tokenizer):
    from pact_cotrain.cli import main
    from pact_cotrain.recipes import common

    study = _tiny_study(screen={"samples": 2, "eval_samples": 3, "batch_tasks": 2})
    config = _write_study(tmp_path, study)
    model = _save_tiny(tmp_path / "model")
    pool = tmp_path / "ood.jsonl"
    write_tasks(pool, generate_tasks(2, seed=0, split="ood"))
    out = tmp_path / "screened_toolworld_ood.jsonl"
    assert main(["study", "screen", "--config", config, "--model", str(model), "--out", str(out), "--pool", str(pool),
                 "--eval-set", "toolworld_ood"]) == 0
    summary = json.loads(Path(f"{out}.summary.json").read_text())
    assert summary["eval_set"] == "toolworld_ood" and summary["samples"] == 3
    assert summary["caps"] == {"max_turns": 1, "max_new_tokens_per_turn": 8, "max_completion_tokens": 64}  # the set's
    assert len(Path(f"{out}.rates.jsonl").read_text().splitlines()) == 2
    assert not out.exists() and not Path(f"{out}.partial.jsonl").exists()  # rates only, nothing to train on
    assert main(["study", "screen", "--config", config, "--model", str(model), "--out", str(out),
                 "--eval-set", "toolworld_ood"]) == 2  # no --pool: one line

    # the study screens each evaluation set once, after the training pool
    spawned = []
    monkeypatch.setattr(common, "load_tokenizer", lambda name: tokenizer)
    monkeypatch.setattr(study_recipe, "_warmup", lambda *args: None)
    monkeypatch.setattr(study_recipe, "_spawn", lambda args, *rest, **kw: spawned.append(args) or 0)
    study_recipe.run_study(config, str(tmp_path / "study"), force_caps=True, jobs=[])
    screens = [a[a.index("--eval-set") + 1] for a in spawned if "--eval-set" in a]
    assert sorted(screens) == ["toolworld_ood", "toolworld_test"]



# ---------------------------------------------------------------------------------------------
# An arm read from another study (runs_from), and a plan with the paired test (study v2b)


def _means_run(out: Path, method: str, seed: int, ood: int, test: int = 5):
    """A fake run scoring `ood` of 10 toolworld_ood tasks and `test` of 10 toolworld_test tasks."""
    _fake_set_run(out, method, seed, {"toolworld_ood": [1.0] * ood + [0.0] * (10 - ood),
                                      "toolworld_test": [1.0] * test + [0.0] * (10 - test)})


def test_an_arm_read_from_another_study_is_paired_by_seed_and_never_run(tmp_path):
    """`runs_from: DIR`: the reference arm's runs come from the study it extends (DIR/runs/<arm>/seed<N>). No job
    runs it, the report pairs them by seed with this study's runs, and their cost is not this study's."""
    from pact_cotrain.study.report import collect, write_report

    v2, v2b = tmp_path / "v2", tmp_path / "v2b"
    study = _tiny_study(seeds=[0, 1, 2], methods={"vanilla": None, "pact": {"config": "pact", "runs_from": str(v2)},
                                                   "grpo": {"config": "grpo"}},
                        primary={"set": "toolworld_ood", "comparisons": ["grpo"], "test": "paired"})
    assert study_recipe.runs_from(study, "pact") == v2 and study_recipe.runs_from(study, "grpo") is None
    assert study_recipe.study_jobs(study, list(study["methods"])) == [("vanilla", 0), ("grpo", 0), ("grpo", 1),
                                                                      ("grpo", 2)]
    assert study_recipe.study_jobs(study, ["pact", "grpo"], seeds=[1]) == [("grpo", 1)]
    assert [m for methods in study_recipe.training_caps(study).values() for m in methods] == ["grpo"]
    with pytest.raises(UserError, match="runs_from"):
        study_recipe.run_one(_write_study(tmp_path, study), str(v2b), "pact:0")
    for seed, (ours, theirs) in enumerate([(5, 4), (6, 4), (7, 5)]):  # run means: PACT's (in v2's folder), GRPO's
        _means_run(v2, "pact", seed, ours)
        _means_run(v2b, "grpo", seed, theirs)
    assert [r["dir"] for r in collect(v2b, study)["pact"]] == [v2 / "runs" / "pact" / f"seed{s}" for s in (0, 1, 2)]
    write_report(study, v2b)
    md = (v2b / "results.md").read_text()
    assert "| pact | 0,1,2 | 50.0 ± 0.0 |" in md  # read from v2's folder (toolworld_test, the first column)
    # d = 10, 20, 20 points: mean 16.67, sd 5.77, t = 16.67 / (5.77 / sqrt 3) = 5.00, df 2, p = 1 - t / sqrt(t^2 + 2)
    # = 0.0377; 95 % interval 16.67 -+ 4.3027 x 5.77 / sqrt 3 = [+2.32, +31.01]; one comparison: Holm's p is p
    line = next(line for line in md.splitlines() if line.startswith("| pact > grpo |"))
    assert "| 3 | +16.67 | 5.77 | +5.00 (2) | 0.0377 | 0.0377 | [+2.32, +31.01] |" in line
    assert line.endswith("| supported |")
    assert "(sd of Δ 5.77): 17.9 at α 0.05" in md  # (t_0.975,2 4.3027 + t_0.8,2 1.0607) x 5.77 / sqrt 3
    assert "EXPLORATORY, not pre-registered: PLAN.md fixed Welch's test" not in md  # the tests above are paired
    assert "| pact (runs of " in md and "pact spent in another study, not counted" in md


def test_a_paired_plan_tests_its_secondary_sets_alike_and_waits_for_the_planned_seeds(tmp_path):
    from pact_cotrain.study.report import write_report

    study = _tiny_study(seeds=[0, 1, 2, 3], methods={"pact": {"config": "pact"}, "grpo": {"config": "grpo"},
                                                      "opsd": {"config": "opsd"}},
                        primary={"set": "toolworld_ood", "comparisons": ["grpo", "opsd"], "test": "paired",
                                 "secondary_sets": ["toolworld_test"]})
    for seed, (ours, theirs) in enumerate([(9, 1), (9, 2), (8, 1)]):  # 3 of the 4 planned seeds
        _means_run(tmp_path, "pact", seed, ours, test=6)
        _means_run(tmp_path, "grpo", seed, theirs, test=6)
    write_report(study, tmp_path)
    md = (tmp_path / "results.md").read_text()
    assert "Pre-registered tests (PLAN.md): toolworld_ood" in md
    assert "Secondary, the same tests (PLAN.md): toolworld_test" in md
    rows = [line for line in md.splitlines() if line.startswith("| pact > grpo |")]
    assert len(rows) == 2 and all(line.endswith("| interim, no verdict (3 of 4 seeds) |") for line in rows)
    assert "| +0.00 | 0.00 |" in rows[1]  # equal on the secondary set: no spread, p 1
    assert sum(line.startswith("| pact > opsd | no finished run yet |") for line in md.splitlines()) == 2
    with pytest.raises(UserError, match="primary.test"):
        write_report({**study, "primary": {**study["primary"], "test": "bootstrap"}}, tmp_path)
    with pytest.raises(UserError, match="secondary_sets needs"):
        write_report({**study, "primary": {**study["primary"], "test": "welch"}}, tmp_path)


def test_study_v2b_extends_v2_and_reads_v2s_pact_runs(monkeypatch):
    """results/study-v2b/study.yaml: v2's model, warm-up, pool, budget, evaluation sets and seeds; the four new
    arms run here, PACT's 8 runs are v2's committed ones, paired by seed."""
    from pact_cotrain.study.report import collect

    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # its paths are relative to the repository root
    v2 = study_recipe.load_study("results/study-v2/study.yaml")
    v2b = study_recipe.load_study("results/study-v2b/study.yaml")
    for key in ("model", "seeds", "data", "warmup", "budget", "eval"):
        assert v2b[key] == v2[key], key
    assert v2b["screen"] == {**v2["screen"], "eval_samples": None}
    assert v2b["primary"]["comparisons"] == ["grpo", "sft_then_matchtir", "chord_phi", "opsd"]
    jobs = study_recipe.study_jobs(v2b, list(v2b["methods"]))
    assert len(jobs) == 1 + 4 * 8 + 1 and not any(m == "pact" for m, _ in jobs)
    found = collect(Path("runs/not-a-study"), v2b)
    assert [r["seed"] for r in found["pact"]] == v2["seeds"] == list(range(10, 18))
    # v2's other trained arms, read for the table of every arm side by side: v2's specs, in no test
    read = [m for m in v2b["methods"] if study_recipe.runs_from(v2b, m)]
    assert read == ["pact", "sft", "pact_q1", "sft_matched_tokens"]
    for arm in read:
        assert {k: v for k, v in v2b["methods"][arm].items() if k != "runs_from"} == v2["methods"][arm], arm
        assert [r["seed"] for r in found[arm]] == study_recipe.method_seeds(v2, arm), arm
    assert not set(read[1:]) & set(v2b["primary"]["comparisons"])
