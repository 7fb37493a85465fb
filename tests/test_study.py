"""`pact study`: the dev split, the report's mean ± std, missing runs, and the FTRL training env."""

from __future__ import annotations

import json
from statistics import mean, stdev

from pact_cotrain.data.trace_format import Task
from pact_cotrain.study.runner import is_dev, load_study
from pact_cotrain.study.report import write_report
from pact_cotrain.recipes.train import env_factory_for

STUDY = {
    "seeds": [0, 1, 2],
    "methods": {"vanilla": None, "pact": {"config": "pact"}, "grpo": {"config": "grpo"}},
    "budget": {"train.max_steps": 2},
    "eval": {"benchmarks": ["toolworld", "ftrl"], "limit": {"toolworld": 2}, "max_turns": None,
             "max_new_tokens_per_turn": 8},
}


def _fake_run(out, method, seed, solve_f1, tw):
    d = out / "runs" / method / f"seed{seed}"
    (d / "eval").mkdir(parents=True)
    paper = {"Solve-R": 0.1, "Solve-P": 0.5, "Solve-F1": solve_f1, "BFCL Avg": None, "ToolHop AC": None, "Avg": None}
    results = {"paper": {"values": paper}, "benchmarks": {"toolworld": {"metrics": {"solve_f1": tw, "answer_correct": 0.0}}}}
    (d / "eval" / "results.json").write_text(json.dumps(results))
    (d / "log_history.json").write_text(json.dumps([{"step": 1, "reward": solve_f1}, {"step": 2, "reward": tw}]))
    (d / "done.json").write_text(json.dumps({"train_seconds": 60.0, "total_seconds": 90.0}))


def test_dev_split_is_a_stable_hash_of_the_id():
    ids = [f"ftrl_test_{i:03d}" for i in range(400)]
    dev = [i for i in ids if is_dev(i, 25)]
    assert dev == [i for i in ids if is_dev(i, 25)]
    assert 70 < len(dev) < 130
    assert not [i for i in ids if is_dev(i, 0)] and len([i for i in ids if is_dev(i, 100)]) == 400


def test_report_is_mean_and_sample_std_over_finished_seeds(tmp_path):
    for seed, f1, tw in ((0, 0.2, 0.5), (1, 0.4, 0.25), (2, 0.3, 0.0)):
        _fake_run(tmp_path, "pact", seed, f1, tw)
    _fake_run(tmp_path, "grpo", 0, 0.1, 0.2)
    (tmp_path / "runs" / "grpo" / "seed1" / "eval").mkdir(parents=True)  # crashed: no done.json
    write_report(STUDY, tmp_path)
    md = (tmp_path / "results.md").read_text()
    pact_row = next(line for line in md.splitlines() if line.startswith("| pact "))
    cells = [c.strip() for c in pact_row.strip("|").split("|")]
    assert cells[1] == "0,1,2"
    assert cells[4] == f"{mean([20, 40, 30]):.1f} ± {stdev([20, 40, 30]):.1f}" == "30.0 ± 10.0"
    assert cells[5] == "–"  # BFCL not evaluated
    assert cells[8] == f"{mean([50, 25, 0]):.1f} ± {stdev([50, 25, 0]):.1f}"
    grpo_row = next(line for line in md.splitlines() if line.startswith("| grpo "))
    assert "10.0 (n=1)" in grpo_row
    assert "Runs not finished (2): grpo seed 1, grpo seed 2" in md
    assert "vanilla" not in md.split("Runs not finished")[1]
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert len((tmp_path / "results_per_seed.csv").read_text().splitlines()) == 1 + 4
    # Paired by seed: only seed 0 has both PACT (TW 50) and GRPO (TW 20).
    assert "| grpo | 0 | 30.0 (one seed) |" in md


def test_paired_differences_use_common_seeds_and_vanilla_for_every_seed(tmp_path):
    for seed, tw in ((0, 0.5), (1, 0.25), (2, 0.0)):
        _fake_run(tmp_path, "pact", seed, 0.0, tw)
    for seed, tw in ((1, 0.5), (2, 0.25)):
        _fake_run(tmp_path, "grpo", seed, 0.0, tw)
    _fake_run(tmp_path, "vanilla", 0, 0.0, 0.25)
    write_report(STUDY, tmp_path)
    md = (tmp_path / "results.md").read_text()
    assert f"| grpo | 1,2 | {mean([-25, -25]):.1f} ± {stdev([-25, -25]):.1f} |" in md
    assert f"| vanilla | 0,1,2 | {mean([25, 0, -25]):.1f} ± {stdev([25, 0, -25]):.1f} |" in md


def test_builtin_cpu_study_names_every_method_and_ablation():
    study = load_study("cpu")
    assert {"vanilla", "sft", "grpo", "ftrl", "toolrl", "chord_phi", "matchtir", "sft_then_matchtir", "hint_rollouts",
            "pact", "pact_no_tc_rl", "pact_no_sft", "pact_no_anchor", "pact_q0.2", "pact_q0.5",
            "pact_trace_no_tool_responses"} == set(study["methods"])
    assert study["seeds"] == [0, 1, 2]
    # matched compute: no method may change the shared budget
    for spec in study["methods"].values():
        assert not spec or not set(spec.get("overrides") or {}) & set(study["budget"])


def test_training_env_factory_runs_ftrl_tasks_in_the_sandbox():
    from pact_cotrain.envs.ftrl import FtrlEnv
    from pact_cotrain.envs.toolworld import ToolworldEnv

    make = env_factory_for([], max_steps=3)
    ftrl = Task(id="f", messages=[{"role": "user", "content": "q"}], tools=[], trace=[], metadata={"benchmark": "ftrl"})
    tw = Task(id="t", messages=[{"role": "user", "content": "q"}], tools=[], trace=[], metadata={})
    assert isinstance(make(ftrl), FtrlEnv) and make(ftrl).max_steps == 3
    assert isinstance(make(tw), ToolworldEnv)
