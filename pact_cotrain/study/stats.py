"""The study's statistics: pure functions over arrays of scores. The distributions and the standard tests
are scipy.stats' (the project writes no statistics library of its own); what scipy.stats does not have
is written here, each as a short function with its formula:

    welch_t_test(pact_seed_means, grpo_seed_means)          -> TestResult (difference, se, t, df, p)
        scipy.stats.ttest_ind(equal_var=False); scipy.stats.ttest_1samp against an arm of one value
    t_two_sided_p(t, df), t_quantile(q, df)                 -> scipy.stats.t.sf / scipy.stats.t.ppf
    paired_bootstrap(pact_scores, grpo_scores, rng=0)       -> BootstrapResult (mean, 95 % CI, p)
        not scipy's: scipy.stats.bootstrap resamples observations, not tasks jointly and seeds within
        each arm (the two-level scheme below), and has no bootstrap p-value
    holm([p1, p2, ...])                                     -> Holm-adjusted p-values, same order
        not scipy's: scipy.stats.false_discovery_control has Benjamini-Hochberg and -Yekutieli only
    minimum_detectable_difference(seeds=5, tasks=256, seed_std=0.03, task_std=0.35)   (normal quantiles: scipy)
    seed_level_mdd(seed_std, n_a, n_b), paired_mdd(sd_difference, n)   (t quantiles: scipy)
    variance_components(scores)                             -> (seed_std, task_std) of a pilot arm (numpy)

An arm's scores are a (seeds, tasks) array: row s holds the per-task score (e.g. Solve-F1 in [0, 1])
of the run with seed s on each evaluation task, every row over the same tasks in the same order
(`per_task.jsonl.gz` of each run; `per_task_matrix` builds the array). An arm's result is the mean
of the array: the mean over seeds of each run's mean over tasks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

# ---------------------------------------------------------------------------------------------
# Student's t distribution (scipy.stats.t), under the names the report and the diagnostics call


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's T with `df` (real, > 0) degrees of freedom."""
    return float(2.0 * scipy_stats.t.sf(abs(t), df))


def t_quantile(q: float, df: float) -> float:
    """Student's t quantile: the t with P(T <= t) = q, for 0 < q < 1."""
    return float(scipy_stats.t.ppf(q, df))


# ---------------------------------------------------------------------------------------------
# Seed-level test


@dataclass(frozen=True)
class TestResult:
    difference: float  # mean(a) - mean(b)
    se: float
    t: float
    df: float
    p: float  # two-sided


def welch_t_test(a, b) -> TestResult:
    """Welch's t-test of two arms' per-seed means (one value per seed and arm; unpaired).

        d  = mean(a) - mean(b)
        se = sqrt(s_a^2 / n_a + s_b^2 / n_b)                    (s^2: sample variances, ddof 1)
        t  = d / se
        df = se^4 / ((s_a^2 / n_a)^2 / (n_a - 1) + (s_b^2 / n_b)^2 / (n_b - 1))   (Welch-Satterthwaite)
        p  = P(|T_df| >= |t|)

    The test is scipy.stats.ttest_ind(a, b, equal_var=False); `se` is computed here (scipy does not return it).
    An arm with one value (the deterministic `vanilla` evaluation) contributes no variance and no
    degrees of freedom: the test becomes a one-sample t-test of the other arm against that value
    (scipy.stats.ttest_1samp). So does an arm whose values are all equal: with its variance 0 the
    formulas above give the one-sample test's t, df (n - 1 of the other arm) and p, and ttest_ind would
    only add a precision-loss warning about the constant arm.
    Both arms with one value leave no variance to estimate: se, t, df and p are NaN (no test). Zero
    sample variance with a non-zero difference gives se = 0: p is 0 when d != 0 and 1 when d == 0
    (reported, not hidden).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size == 0 or b.size == 0:
        raise ValueError("each arm needs at least one per-seed mean")
    d = float(a.mean() - b.mean())
    parts = [(float(x.var(ddof=1)) / x.size, x.size - 1) for x in (a, b) if x.size > 1]
    if not parts:
        return TestResult(d, math.nan, math.nan, math.nan, math.nan)
    var = sum(v for v, _ in parts)
    se = math.sqrt(var)
    if se == 0.0:
        return TestResult(d, 0.0, math.copysign(math.inf, d) if d else 0.0, float("nan"), 0.0 if d else 1.0)
    var_a, var_b = (float(x.var(ddof=1)) if x.size > 1 else 0.0 for x in (a, b))
    if var_a > 0 and var_b > 0:
        test = scipy_stats.ttest_ind(a, b, equal_var=False)
        t, df, p = test.statistic, test.df, test.pvalue
    elif var_a > 0:  # b is one value, or all its values are equal: a one-sample test of a against it
        test = scipy_stats.ttest_1samp(a, b.mean())
        t, df, p = test.statistic, test.df, test.pvalue
    else:  # the same with the arms swapped, with the sign of a - b
        test = scipy_stats.ttest_1samp(b, a.mean())
        t, df, p = -test.statistic, test.df, test.pvalue
    return TestResult(d, se, float(t), float(df), float(p))


# ---------------------------------------------------------------------------------------------
# Task-level paired bootstrap


@dataclass(frozen=True)
class BootstrapResult:
    mean: float  # the observed difference of arm means, mean(a) - mean(b)
    low: float  # 2.5th percentile of the bootstrap differences
    high: float  # 97.5th percentile
    p: float  # two-sided bootstrap p-value
    n_boot: int


def paired_bootstrap(a, b, n_boot: int = 10_000, rng: int | np.random.Generator = 0, level: float = 0.95,
                     chunk: int = 500) -> BootstrapResult:
    """The difference of two arms' means over the same evaluation tasks, with a bootstrap CI and p.

    `a` is (seeds_a, T), `b` is (seeds_b, T); column j of both is task j. One bootstrap replicate
    draws T task indices with replacement, the *same* for both arms (the pairing: a hard task is hard
    for both), and, independently per arm, that arm's seeds with replacement:

        d* = mean_{s in S_a*} mean_{j in J*} a[s, j]  -  mean_{s in S_b*} mean_{j in J*} b[s, j]

    The CI is the percentile interval of d* at `level`; the two-sided p-value is

        p = min(1, 2 * min(#{d* <= 0} + 1, #{d* >= 0} + 1) / (n_boot + 1))

    (0 outside the percentile CI at level 1 - alpha is, up to the +1s, p < alpha). An arm with one
    seed contributes only task resampling.
    """
    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    if a.shape[1] != b.shape[1] or a.shape[1] == 0:
        raise ValueError(f"both arms need the same, non-empty set of tasks (columns): {a.shape} vs {b.shape}")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    n_tasks = a.shape[1]
    diffs = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        tasks = gen.integers(n_tasks, size=(m, n_tasks))  # (m, T): the same tasks for both arms
        means = []
        for arm in (a, b):
            per_seed = arm[:, tasks].mean(axis=2)  # (seeds, m): each seed's mean over the drawn tasks
            seeds = gen.integers(arm.shape[0], size=(m, arm.shape[0]))  # (m, seeds) drawn per replicate
            means.append(np.take_along_axis(per_seed.T, seeds, axis=1).mean(axis=1))
        diffs[start : start + m] = means[0] - means[1]
    tail = (1.0 - level) / 2.0
    below, above = int((diffs <= 0).sum()), int((diffs >= 0).sum())
    p = min(1.0, 2.0 * min(below + 1, above + 1) / (n_boot + 1))
    return BootstrapResult(float(a.mean() - b.mean()), float(np.quantile(diffs, tail)),
                           float(np.quantile(diffs, 1.0 - tail)), p, n_boot)


# ---------------------------------------------------------------------------------------------
# Multiple comparisons


def holm(p_values) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order: with the m p-values sorted ascending,

        p_adj_(i) = max_{j <= i} min(1, (m - j + 1) * p_(j))

    Reject hypothesis i at family-wise level alpha when p_adj_i <= alpha."""
    p = np.asarray(p_values, dtype=float)
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.maximum.accumulate(adjusted)
    out = np.empty(m)
    out[order] = adjusted
    return out.tolist()


# ---------------------------------------------------------------------------------------------
# Power


def minimum_detectable_difference(seeds: int, tasks: int, seed_std: float, task_std: float,
                                  alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference of two arms' means that a two-sided test at `alpha` detects with
    probability `power`, each arm with `seeds` runs evaluated on the same `tasks` tasks (normal
    approximation):

        Var(arm mean) = seed_std^2 / seeds + task_std^2 / (seeds * tasks)
        MDD = (z_{1 - alpha/2} + z_{power}) * sqrt(2 * Var(arm mean))

    `seed_std`: the standard deviation, over seeds, of a run's true mean score (training noise, not
    the noise of scoring a finite task set); `task_std`: the standard deviation of a run's per-task
    scores around their run mean (for 0/1 scores with mean m, about sqrt(m (1 - m))). Treating task
    noise as independent between arms ignores the pairing over shared tasks, which cancels part of it:
    the MDD is conservative. With alpha 0.05 and power 0.8, z_{0.975} + z_{0.8} = 1.95996 + 0.84162
    = 2.80158.
    """
    if seeds < 1 or tasks < 1:
        raise ValueError("seeds and tasks must be at least 1")
    z = float(scipy_stats.norm.ppf(1.0 - alpha / 2.0) + scipy_stats.norm.ppf(power))
    var_arm = seed_std ** 2 / seeds + task_std ** 2 / (seeds * tasks)
    return z * math.sqrt(2.0 * var_arm)


def seed_level_mdd(seed_std: float, n_a: int, n_b: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The minimum detectable difference of the seed-level t-test (PLAN.md section 6), two-sided, with the
    t-distribution, for arms of `n_a` and `n_b` seeds whose run means have std `seed_std`:

        MDD = (t_{1 - alpha/2, df} + t_{power, df}) * seed_std * sqrt(1/n_a + 1/n_b),   df = n_a + n_b - 2

    At n_a = n_b = 8, seed_std 6.05, alpha 0.05: (2.145 + 0.868) * 6.05 * 0.5 = 9.1."""
    df = n_a + n_b - 2
    if df < 1:
        raise ValueError("the seed-level MDD needs at least 3 runs in all")
    return (t_quantile(1.0 - alpha / 2.0, df) + t_quantile(power, df)) * seed_std * math.sqrt(1.0 / n_a + 1.0 / n_b)


def paired_mdd(sd_difference: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The minimum detectable difference of the two-sided paired t-test over `n` seeds whose per-seed
    differences have std `sd_difference` (the t-approximation; the noncentral t gives a little more):

        MDD = (t_{1 - alpha/2, n-1} + t_{power, n-1}) * sd_difference / sqrt(n)"""
    if n < 2:
        raise ValueError("the paired MDD needs at least 2 seeds")
    return (t_quantile(1.0 - alpha / 2.0, n - 1) + t_quantile(power, n - 1)) * sd_difference / math.sqrt(n)


def seeds_needed(difference: float, tasks: int, seed_std: float, task_std: float, alpha: float = 0.05,
                 power: float = 0.8, max_seeds: int = 1000) -> int | None:
    """The fewest seeds per arm whose `minimum_detectable_difference` is at most `difference`
    (None if more than `max_seeds`)."""
    for n in range(1, max_seeds + 1):
        if minimum_detectable_difference(n, tasks, seed_std, task_std, alpha, power) <= difference:
            return n
    return None


def variance_components(scores) -> tuple[float, float]:
    """(seed_std, task_std) of one arm's (seeds, T) per-task scores, for `minimum_detectable_difference`.

        task_std^2 = mean over seeds of the sample variance over tasks of that seed's scores
        seed_std^2 = max(0, sample variance over seeds of the seed means - task_std^2 / T)

    The seed means' variance holds the task noise of a T-task evaluation (task_std^2 / T) on top
    of the training noise; it is subtracted (method of moments; clamped at 0)."""
    x = np.atleast_2d(np.asarray(scores, dtype=float))
    n_seeds, n_tasks = x.shape
    task_var = float(x.var(axis=1, ddof=1).mean()) if n_tasks > 1 else 0.0
    seed_var = float(x.mean(axis=1).var(ddof=1)) - task_var / n_tasks if n_seeds > 1 else 0.0
    return math.sqrt(max(0.0, seed_var)), math.sqrt(task_var)


# ---------------------------------------------------------------------------------------------
# From per-task rows to arrays


def per_task_matrix(rows: list[dict], metric: str = "solve_f1", eval_set: str | None = None,
                    tasks: list[str] | None = None) -> tuple[np.ndarray, list[int], list[str]]:
    """(scores (seeds, T), seeds, task ids) from one arm's `per_task.jsonl.gz` rows (dicts with seed,
    eval_set, task_id and the metric). Rows of other sets are skipped; every seed must have scored
    every task any seed scored (in `tasks` order when given, else sorted ids), or a ValueError says which is missing."""
    by_seed: dict[int, dict[str, float]] = {}
    for row in rows:
        if eval_set is None or row["eval_set"] == eval_set:
            by_seed.setdefault(int(row["seed"]), {})[row["task_id"]] = float(row[metric])
    if not by_seed:
        raise ValueError(f"no per-task rows for eval set {eval_set!r}")
    ids = list(tasks) if tasks is not None else sorted(set().union(*by_seed.values()))
    seeds = sorted(by_seed)
    for seed in seeds:
        missing = [i for i in ids if i not in by_seed[seed]]
        if missing:
            raise ValueError(f"seed {seed} has no score for {len(missing)} task(s), e.g. {missing[0]}")
    return np.array([[by_seed[s][i] for i in ids] for s in seeds]), seeds, ids
