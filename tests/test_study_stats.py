"""The study's statistics on hand-computed cases: Student's t tail, Welch's test, the paired per-task
bootstrap, Holm's correction, the minimum detectable difference and the pilot's variance components."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pact_cotrain.study.stats import (
    holm,
    minimum_detectable_difference,
    paired_bootstrap,
    per_task_matrix,
    seed_level_mdd,
    seeds_needed,
    t_quantile,
    t_two_sided_p,
    variance_components,
    welch_t_test,
)


def test_t_tail_matches_the_closed_forms_for_one_and_two_degrees_of_freedom():
    # df 1 is Cauchy: P(|T| >= t) = 1 - (2/pi) atan(t); df 2: P(|T| >= t) = 1 - t / sqrt(2 + t^2)
    for t in (0.3, 1.0, 2.0, 9.0):
        assert t_two_sided_p(t, 1) == pytest.approx(1 - 2 / math.pi * math.atan(t), abs=1e-12)
        assert t_two_sided_p(-t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-12)
    assert t_two_sided_p(1.0, 1) == pytest.approx(0.5)
    assert t_two_sided_p(2.228139, 10) == pytest.approx(0.05, abs=1e-6)  # the t table's 97.5 % point, df 10
    assert t_two_sided_p(1.959964, 1e7) == pytest.approx(0.05, abs=1e-5)  # large df: the normal
    assert t_two_sided_p(0.0, 5) == 1.0


def test_welch_on_two_seeds_per_arm():
    # a = [1, 3], b = [0, 2]: d = 1, s_a^2 = s_b^2 = 2, se = sqrt(2/2 + 2/2) = sqrt 2, t = 1/sqrt 2,
    # df = (1 + 1)^2 / (1^2/1 + 1^2/1) = 2, p = 1 - t / sqrt(2 + t^2) = 1 - 0.70711 / 1.58114 = 0.55279
    r = welch_t_test([1, 3], [0, 2])
    assert (r.difference, r.se, r.t, r.df) == pytest.approx((1.0, math.sqrt(2), 1 / math.sqrt(2), 2.0))
    assert r.p == pytest.approx(0.552786, abs=1e-6)


def test_welch_with_unequal_arms_uses_satterthwaite_df():
    # a = [1, 2, 3]: mean 2, s^2 1, v_a = 1/3; b = [4, 5, 6, 7]: mean 5.5, s^2 5/3, v_b = 5/12
    # se = sqrt(3/4); df = (3/4)^2 / ((1/3)^2 / 2 + (5/12)^2 / 3) = 0.5625 / 0.1134259 = 4.95918
    r = welch_t_test([1, 2, 3], [4, 5, 6, 7])
    assert r.difference == pytest.approx(-3.5)
    assert r.t == pytest.approx(-3.5 / math.sqrt(0.75))
    assert r.df == pytest.approx(4.959184, abs=1e-5)
    assert 0.005 < r.p < 0.02


def test_welch_against_a_single_value_is_a_one_sample_test():
    # a = [0, 2] against vanilla's one evaluation 10: se = sqrt(2/2) = 1, t = -9, df = 1 (Cauchy)
    r = welch_t_test([0, 2], [10])
    assert (r.t, r.df) == pytest.approx((-9.0, 1.0))
    assert r.p == pytest.approx(1 - 2 / math.pi * math.atan(9), abs=1e-12)  # 0.070447
    same = welch_t_test([0.5, 0.5], [0.5])
    assert (same.se, same.p) == (0.0, 1.0)
    assert welch_t_test([0.6, 0.6], [0.5]).p == 0.0


def test_welch_against_an_arm_of_equal_values_is_the_one_sample_test_without_a_warning():
    # b = [100, 100, 100] has variance 0: se = sqrt(s_a^2 / 3) with a = [75, 75, 100] (s_a^2 = 208.33) = 8.333,
    # t = -16.67 / 8.333 = -2, df = (v_a)^2 / (v_a^2 / 2) = 2, p = 1 - 2 / sqrt(6) = 0.183503 (df 2 closed form);
    # scipy's ttest_ind would warn of precision loss about the constant arm
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = welch_t_test([75.0, 75.0, 100.0], [100.0, 100.0, 100.0])
        swapped = welch_t_test([100.0, 100.0, 100.0], [75.0, 75.0, 100.0])
    assert (r.t, r.df, r.p) == pytest.approx((-2.0, 2.0, 1 - 2 / math.sqrt(6)))
    assert (swapped.t, swapped.df, swapped.p) == pytest.approx((2.0, 2.0, r.p))


def test_welch_with_one_value_a_side_is_no_test():
    # no variance can be estimated: NaN, not p = 0 (a first finished seed of each arm must not read as proof)
    r = welch_t_test([0.7], [0.5])
    assert r.difference == pytest.approx(0.2)
    assert all(math.isnan(x) for x in (r.se, r.t, r.df, r.p))


def test_bootstrap_of_a_constant_per_task_shift_has_no_spread_because_tasks_are_paired():
    rng = np.random.default_rng(3)
    b = rng.integers(0, 2, size=(1, 64)).astype(float)  # one seed: only the tasks are resampled
    r = paired_bootstrap(b + 0.25, b, n_boot=2000, rng=1)
    # the same task draw for both arms: every replicate's difference is exactly 0.25
    assert (r.mean, r.low, r.high) == pytest.approx((0.25, 0.25, 0.25))
    assert r.p == pytest.approx(2 / 2001)
    r = paired_bootstrap(b, b, n_boot=500)
    assert (r.mean, r.low, r.high, r.p) == (0.0, 0.0, 0.0, 1.0)


def test_bootstrap_resamples_tasks():
    # one seed each, a = [1, 0], b = [0, 0]: d* = mean of a over two drawn tasks: 1 (1/4), 0.5 (1/2), 0 (1/4)
    r = paired_bootstrap([[1.0, 0.0]], [[0.0, 0.0]], n_boot=20_000, rng=0)
    assert r.mean == 0.5 and (r.low, r.high) == (0.0, 1.0)
    assert r.p == pytest.approx(2 * 0.25, abs=0.02)  # P(d* <= 0) = 1/4


def test_bootstrap_resamples_seeds_within_each_arm():
    # a's seeds score 1 and 0 on every task, b one seed of 0: d* = mean of two drawn seeds: 1, 0.5, 0
    r = paired_bootstrap([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]], n_boot=20_000, rng=0)
    assert r.mean == 0.5 and (r.low, r.high) == (0.0, 1.0)
    assert r.p == pytest.approx(0.5, abs=0.02)
    with pytest.raises(ValueError):
        paired_bootstrap([[1.0, 0.0]], [[0.0, 0.0, 1.0]])


def test_holm_step_down():
    # sorted: 0.005 * 4 = 0.02, 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 = 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([0.02]) == pytest.approx([0.02])


def test_minimum_detectable_difference():
    # Var(arm) = 0.03^2 / 5 + 0.4^2 / (5 * 256) = 0.00018 + 0.000125 = 0.000305
    # MDD = (1.959964 + 0.841621) * sqrt(2 * 0.000305) = 2.801585 * 0.0246982 = 0.069194
    assert minimum_detectable_difference(5, 256, 0.03, 0.4) == pytest.approx(0.069194, abs=1e-5)
    # more seeds shrink both terms; more tasks only the task term
    assert minimum_detectable_difference(10, 256, 0.03, 0.4) < minimum_detectable_difference(5, 256, 0.03, 0.4)
    assert minimum_detectable_difference(5, 10**9, 0.03, 0.4) == pytest.approx(2.801585 * math.sqrt(2 * 0.00018),
                                                                               abs=1e-5)
    assert seeds_needed(minimum_detectable_difference(5, 256, 0.03, 0.4), 256, 0.03, 0.4) == 5
    assert seeds_needed(1e-6, 256, 0.03, 0.4, max_seeds=50) is None


def test_t_quantile_matches_the_t_table():
    assert t_quantile(0.975, 10) == pytest.approx(2.228139, abs=1e-6)
    assert t_quantile(0.975, 14) == pytest.approx(2.144787, abs=1e-6)
    assert t_quantile(0.8, 14) == pytest.approx(0.868, abs=1e-3)  # the table's 3 decimals
    assert t_quantile(0.75, 1) == pytest.approx(1.0, abs=1e-9)  # Cauchy: tan(pi / 4)


def test_seed_level_mdd_gives_the_plans_numbers():
    # PLAN.md section 6: 8 seeds a side, S = 6.05, df 14:
    # (2.145 + 0.868) * 6.05 * sqrt(2 / 8) = 3.013 * 3.025 = 9.11; at alpha 0.025, t_0.9875 = 2.510: 10.22
    assert seed_level_mdd(6.05, 8, 8) == pytest.approx(9.11, abs=0.01)
    assert seed_level_mdd(6.05, 8, 8, alpha=0.025) == pytest.approx(10.22, abs=0.01)
    with pytest.raises(ValueError):
        seed_level_mdd(6.05, 1, 1)


def test_variance_components_of_a_pilot_arm():
    # rows [1, 0, 1, 0] and [1, 1, 1, 1]: task variances 1/3 and 0 -> task_std^2 = 1/6;
    # seed means 0.5 and 1 -> variance 0.125, minus (1/6) / 4 -> seed_std^2 = 1/12
    seed_std, task_std = variance_components([[1, 0, 1, 0], [1, 1, 1, 1]])
    assert seed_std == pytest.approx(math.sqrt(1 / 12)) and task_std == pytest.approx(math.sqrt(1 / 6))
    assert variance_components([[1, 0], [1, 0]])[0] == 0.0  # no seed spread beyond task noise: clamped


def test_per_task_matrix_aligns_seeds_and_tasks():
    rows = [{"seed": s, "eval_set": e, "task_id": t, "solve_f1": v}
            for s, e, t, v in [(1, "ood", "b", 0.5), (0, "ood", "a", 1.0), (0, "ood", "b", 0.0), (1, "ood", "a", 0.25),
                               (0, "test", "a", 0.9)]]
    x, seeds, ids = per_task_matrix(rows, eval_set="ood")
    assert seeds == [0, 1] and ids == ["a", "b"] and x.tolist() == [[1.0, 0.0], [0.25, 0.5]]
    with pytest.raises(ValueError, match="seed 1 has no score"):
        per_task_matrix(rows[:3], eval_set="ood")
