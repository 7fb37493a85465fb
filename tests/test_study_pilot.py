"""The pilot's numbers (study/pilot.py) from finished runs' files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml

from pact_cotrain.study import pilot as study_pilot, stats as study_stats
from pact_cotrain.study.runner import run_dir
from pact_cotrain.study.evaluate import write_per_task


def test_chi2_quantile_and_the_std_bound():
    assert study_pilot.chi2_quantile(0.2, 2) == pytest.approx(-2 * math.log(0.8), rel=1e-12)  # closed form for df 2
    assert study_pilot.chi2_quantile(0.5, 10) == pytest.approx(9.341818, abs=1e-6)  # the chi-square table's median
    # three seeds: the 80 % upper bound of a std is sqrt(2 / chi2_0.2(2)) = 2.12 times the estimate
    assert study_pilot.std_upper_bound(1.0, 3) == pytest.approx(math.sqrt(2 / (-2 * math.log(0.8))), rel=1e-12)


def _run(out, method, seed, scores, tokens, seconds=3600.0, threads=1, forward=None):
    directory = run_dir(out, method, seed)
    directory.mkdir(parents=True)
    rows = [{"method": method, "seed": seed, "eval_set": "ood", "task_id": f"t{i}", "solve_f1": v}
            for i, v in enumerate(scores)]
    write_per_task(directory / "per_task.jsonl.gz", rows)
    (directory / "done.json").write_text(json.dumps({
        "method": method, "seed": seed, "train_seconds": seconds / 2, "total_seconds": seconds, "threads": threads,
        "compute": {"trained_tokens": tokens, "forward_tokens": forward, "steps": 8}, "git": {"commit": "abc"}}))


def test_pilot_summary_measures_noise_costs_and_token_ratios(tmp_path):
    (tmp_path / "study.yaml").write_text(yaml.safe_dump({"eval": {"sets": {"ood": {"benchmark": "toolworld"}}}}))
    rng = np.random.default_rng(0)
    pact = (rng.random((3, 40)) < np.array([[0.3], [0.4], [0.5]])).astype(float)
    for seed in range(3):  # seed 0 ran before forward tokens were logged
        _run(tmp_path, "pact", seed, pact[seed].tolist(), tokens=2000, forward=None if seed == 0 else 6000)
    numerics = pact[0].copy()
    numerics[:4] = 1 - numerics[:4]  # rounding moved 4 tasks
    _run(tmp_path, "pact_numerics", 0, numerics.tolist(), tokens=2000, forward=9000)  # contexts repeated per part
    _run(tmp_path, "grpo", 0, pact[1].tolist(), tokens=1000, seconds=1800, threads=2, forward=4000)

    summary = study_pilot.summarise(tmp_path)
    noise = summary["noise"]["ood"]
    run_std = pact.mean(axis=1).std(ddof=1)  # the fixed tasks' difficulty cancels between arms: S is the noise
    assert noise["run_std"] == pytest.approx(100 * run_std)
    assert noise["task_std"] == pytest.approx(100 * study_stats.variance_components(pact)[1])
    assert noise["seed_means"] == pytest.approx(list(100 * pact.mean(axis=1)))
    assert noise["numerics"]["tasks_that_differ"] == 4 and noise["numerics"]["tasks"] == 40
    assert noise["numerics"]["difference"] == pytest.approx(100 * (numerics - pact[0]).mean())
    assert noise["mdd"]["measured"][5] == pytest.approx(
        100 * 2.80158 * math.sqrt(2 * run_std ** 2 / 5), rel=1e-4)
    assert noise["mdd"]["upper80"][5] > noise["mdd"]["measured"][5]
    assert summary["costs"]["grpo:0"]["core_hours"] == pytest.approx(0.5)  # evaluation 15 min on 2 threads, no steps logged
    assert summary["token_ratios_to_pact"] == {"trained_tokens": {"pact:0 / grpo:0": pytest.approx(2.0)},
                                               "forward_tokens": {"pact:1 / grpo:0": pytest.approx(1.5)}}
    mean, se = summary["runs"]["pact:0"]["ood"]
    assert mean == pytest.approx(100 * pact[0].mean()) and se == pytest.approx(100 * pact[0].std(ddof=1) / math.sqrt(40))

    out = tmp_path / "report"
    assert study_pilot.main([str(tmp_path), "--out", str(out)]) == 0
    text = (out / "pilot.md").read_text()
    assert "## Noise on ood (40 tasks)" in text and "Numerics pair" in text
    assert "PACT's forward tokens over each run's: pact:1 / grpo:0 1.50x" in text
    assert (out / "runs" / "pact" / "seed2" / "per_task.jsonl.gz").exists()
