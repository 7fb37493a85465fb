"""Report sections added after a study's plan was fixed (issue 32): answer accuracy per seed, and a
paired-by-seed re-analysis of the primary comparisons. Both are EXPLORATORY: not pre-registered, so
they inform the next study's design and decide nothing in this one.

Paired by seed: runs of two arms with the same seed see the same data order (and the same first
rollouts), so their run means correlate. With d_s = reference_s - arm_s over the seeds both arms ran,

    mean d,  sd d (n - 1),  t = mean d / (sd d / sqrt n),  df = n - 1,  95 % CI mean d ± t_{0.975, df} sd d / sqrt n

and the seeds a paired design needs to detect `target` points (power 0.8, two-sided α): the least n with
(t_{1-α/2, n-1} + t_{0.8, n-1}) sd_d / sqrt(n) <= target, beside Welch's least n per arm with
(t_{1-α/2, 2n-2} + t_{0.8, 2n-2}) s sqrt(2 / n) <= target (s: the two arms' pooled std of run means;
study.stats.seed_level_mdd). The paired test and its interval are scipy.stats.ttest_rel's, r is
scipy.stats.pearsonr's, the t quantiles scipy.stats.t's.
"""

from __future__ import annotations

import math
from statistics import mean, stdev


def answer_by_seed_lines(rows: dict[str, list[dict]]) -> list[str]:
    """Per arm and seed, on each evaluation set: answer accuracy over all tasks, and over the tasks whose
    calls were all right (Solve-F1 = 1; the reward Solve-F1 does not look at the answer). Percent."""
    rows = {arm: [r for r in arm_rows if "answer_correct" in r] for arm, arm_rows in rows.items()}
    sets = list(dict.fromkeys(r["eval_set"] for arm in rows.values() for r in arm))
    if not sets:  # no per-task answer scores (e.g. a benchmark without a final answer)
        return []
    header = [f"{s} answer | {s} answer when Solve-F1 = 1 (tasks)" for s in sets]
    lines = ["Answer accuracy per seed (percent; EXPLORATORY, not pre-registered). The training reward, Solve-F1, "
             "scores the calls only; the answer column is the final answer's correctness.", "",
             "| arm | seed | " + " | ".join(header) + " |", "|---|---|" + "---|---|" * len(sets)]
    for arm, arm_rows in rows.items():
        for seed in sorted({r["seed"] for r in arm_rows}):
            cells = []
            for s in sets:
                here = [r for r in arm_rows if r["seed"] == seed and r["eval_set"] == s]
                solved = [r for r in here if r["solve_f1"] == 1]
                cells.append(f"{100 * mean(r['answer_correct'] for r in here):.1f}" if here else "–")
                cells.append(f"{100 * mean(r['answer_correct'] for r in solved):.1f} ({len(solved)})" if solved else "–")
            lines.append(f"| {arm} | {seed} | " + " | ".join(cells) + " |")
    return lines + [""]


def paired_seed_analysis(ours: dict[int, float], theirs: dict[int, float], target: float = 3.0,
                         alpha: float = 0.05, power: float = 0.8, max_seeds: int = 1000) -> dict | None:
    """The paired-by-seed statistics of the module docstring, on run means in points, keyed by seed."""
    from scipy import stats as scipy_stats

    from pact_cotrain.study.stats import paired_mdd, seed_level_mdd

    seeds = sorted(set(ours) & set(theirs))
    if len(seeds) < 3:
        return None
    d = [ours[s] - theirs[s] for s in seeds]
    n, md, sd = len(d), mean(d), stdev(d)
    a, b = [ours[s] for s in seeds], [theirs[s] for s in seeds]
    if sd > 0:
        test = scipy_stats.ttest_rel(a, b)
        t, p = float(test.statistic), float(test.pvalue)
        ci = tuple(float(x) for x in test.confidence_interval(1 - alpha))
    else:  # every seed the same difference: no spread to test against (scipy would divide by zero);
        # as study.stats.welch_t_test: p 0 when that difference is not 0, 1 when it is
        t, p = (math.copysign(math.inf, md), 0.0) if md else (0.0, 1.0)
        ci = (md, md)
    r = float(scipy_stats.pearsonr(a, b).statistic) if stdev(a) > 0 and stdev(b) > 0 else float("nan")
    pooled = math.sqrt((stdev(a) ** 2 + stdev(b) ** 2) / 2)
    needed = {}
    for level in (alpha, alpha / 2):  # alpha / 2: Holm's first step over two comparisons
        paired_n = next((m for m in range(3, max_seeds + 1) if paired_mdd(sd, m, level, power) <= target), None)
        welch_n = next((m for m in range(2, max_seeds + 1) if seed_level_mdd(pooled, m, m, level, power) <= target),
                       None)
        needed[level] = (paired_n, welch_n)
    return {"seeds": seeds, "mean": md, "sd": sd, "t": t, "df": n - 1, "p": p, "ci": ci, "r": r, "pooled_sd": pooled,
            "seeds_needed": needed}


def paired_by_seed_lines(study: dict, found: dict[str, list[dict]], target: float = 3.0) -> list[str]:
    """The study's primary comparisons (its `primary:` block) paired by seed, on the run means."""
    plan = study.get("primary")
    if not plan:
        return []
    name, metric, reference = plan["set"], plan.get("metric", "solve_f1"), plan.get("reference", "pact")
    label = next((f"{name} {lab}" for lab, key in _set_columns() if key == metric), None)

    def run_means(arm: str) -> dict[int, float]:
        return {r["seed"]: 100 * r["values"][label] for r in found.get(arm, []) if r["values"].get(label) is not None}

    ours = run_means(reference)
    lines = [f"Paired by seed (EXPLORATORY, not pre-registered: PLAN.md fixed Welch's test): {name} {metric}, "
             f"{reference} minus each arm, points, over the seeds both ran. Paired t on the per-seed differences "
             f"with its 95 % t-interval; r: the correlation of the two arms' run means over seeds; seeds per arm "
             f"that {target:g} points would need (power 0.8, two-sided), paired and by Welch's test, at α 0.05 and at "
             "α 0.025 (Holm's first step over the two comparisons).", "",
             f"| minus | seeds | mean Δ | sd of Δ | paired t (df) | p | 95% CI | r | seeds for {target:g} points at α 0.05: "
             "paired, Welch | at α 0.025: paired, Welch |", "|---|---|---|---|---|---|---|---|---|---|"]
    for arm in plan.get("comparisons", []):
        res = paired_seed_analysis(ours, run_means(arm), target)
        if res is None:
            continue
        needed = lambda pair: ", ".join("> 1000" if n is None else str(n) for n in pair)  # noqa: E731
        lines.append(f"| {arm} | {len(res['seeds'])} | {res['mean']:+.2f} | {res['sd']:.2f} | {res['t']:+.2f} "
                     f"({res['df']}) | {res['p']:.3g} | [{res['ci'][0]:+.2f}, {res['ci'][1]:+.2f}] | {res['r']:.2f} | "
                     + " | ".join(needed(pair) for pair in res["seeds_needed"].values()) + " |")
    return lines + [""] if len(lines) > 4 else []


def _set_columns():
    from pact_cotrain.study.report import SET_COLUMNS

    return SET_COLUMNS
