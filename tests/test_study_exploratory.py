"""The exploratory report sections (issue 32): the paired-by-seed re-analysis and answer accuracy per seed,
on hand-computed numbers."""

import math

import pytest

from pact_cotrain.study.exploratory import answer_by_seed_lines, paired_seed_analysis

approx = pytest.approx


def test_paired_seed_analysis_hand_computed():
    # d = 1, 2, 3: mean 2, sd 1, t = 2 / (1 / sqrt 3) = 3.4641, df 2; for df 2 the two-sided p is
    # 1 - |t| / sqrt(t^2 + 2) = 0.0741799 (scipy.stats.ttest_rel gives the same); t_{0.975, 2} = 4.3026527
    res = paired_seed_analysis({1: 11.0, 2: 12.0, 3: 13.0}, {1: 10.0, 2: 10.0, 3: 10.0})
    assert (res["mean"], res["sd"], res["df"]) == approx((2.0, 1.0, 2))
    assert res["t"] == approx(2 * math.sqrt(3)) and res["p"] == approx(0.0741799, abs=1e-6)
    half = 4.3026527 / math.sqrt(3)
    assert res["ci"] == approx((2 - half, 2 + half), abs=1e-5)
    assert math.isnan(res["r"])  # the second arm does not vary
    assert paired_seed_analysis({1: 1.0, 2: 2.0}, {1: 0.0, 2: 0.0}) is None  # fewer than 3 shared seeds


def test_seeds_needed_paired_against_welch():
    # same-seed runs that move together: sd of the differences 1, arms' std about 3.9: pairing needs far fewer seeds
    ours = {s: 40.0 + 5 * (s % 3) + (s % 2) for s in range(8)}
    theirs = {s: 40.0 + 5 * (s % 3) for s in range(8)}
    res = paired_seed_analysis(ours, theirs, target=3.0)
    paired, welch = res["seeds_needed"][0.05]
    assert res["r"] > 0.9 and paired < welch
    # (t_{0.975, n-1} + t_{0.8, n-1}) sd / sqrt(n) <= 3 at n = paired, not at n - 1
    from pact_cotrain.study.stats import t_quantile

    mdd = lambda n: (t_quantile(0.975, n - 1) + t_quantile(0.8, n - 1)) * res["sd"] / math.sqrt(n)  # noqa: E731
    assert mdd(paired) <= 3.0 < mdd(paired - 1)


def test_answer_by_seed_counts_all_tasks_and_the_solved_ones():
    rows = {"pact": [{"seed": 13, "eval_set": "ood", "answer_correct": a, "solve_f1": f}
                     for a, f in [(1.0, 1.0), (0.0, 1.0), (0.0, 0.5), (1.0, 0.0)]]}
    lines = answer_by_seed_lines(rows)
    assert "| pact | 13 | 50.0 | 50.0 (2) |" in lines
