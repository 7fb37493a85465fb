"""The study's report: the paper's table as mean ± std over seeds, per-seed numbers, and curves.

Reads what `pact study` left under OUT/runs/<method>/seed<N>/ (done.json, eval/results.json,
log_history.json, per_task.jsonl.gz) and writes OUT/results.md, OUT/results_per_seed.csv and
OUT/curves.png. Runs that are not done are listed as missing, never filled in. A study with named
evaluation sets gets one group of columns per set, each arm's mean with its 95 % interval over seeds,
and PACT against every other arm per set: the paired per-task bootstrap (CI and p, Holm-corrected over
the arms of a set) and Welch's test of the per-seed means (`study_stats`), drawn side by side in
OUT/differences.png, and by the evaluation task's screened success rate when the sets were screened.
Every report gives each arm's cost in core-hours.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from statistics import mean, stdev

from pact_cotrain.study import exploratory
from pact_cotrain.study.provenance import code_version_lines, host_lines
from pact_cotrain.study.runner import arm_run_dir, method_seeds, runs_from
from pact_cotrain.study.cost import cost_lines, pace, resumed_eval_episodes, training_step_seconds

# (column label, where to read it in results.json)
COLUMNS = [
    ("Solve-R", ("paper", "Solve-R")),
    ("Solve-P", ("paper", "Solve-P")),
    ("Solve-F1", ("paper", "Solve-F1")),
    ("BFCL Avg", ("paper", "BFCL Avg")),
    ("ToolHop AC", ("paper", "ToolHop AC")),
    ("Avg", ("paper", "Avg")),
    ("TW Solve-F1", ("toolworld", "solve_f1")),
    ("TW answer", ("toolworld", "answer_correct")),
    ("TW Solve-R", ("toolworld", "solve_r")),
    ("TW Solve-P", ("toolworld", "solve_p")),
]
# The columns of each named evaluation set: (label suffix, metric)
SET_COLUMNS = [("Solve-F1", "solve_f1"), ("answer", "answer_correct"), ("Solve-R", "solve_r"), ("Solve-P", "solve_p")]
CURVES = [("reward", "rollout reward (mean)"), ("loss/sft", "SFT loss"),
          ("over_reliance_gap", "log pi(tau|x,h) - log pi_vLLM(tau|x) (nats/token)"), ("rollout/n_calls", "calls per rollout")]


def _value(results: dict, where: tuple[str, str]) -> float | None:
    section, key = where
    if section == "paper":
        return results["paper"]["values"].get(key)
    metrics = (results["benchmarks"].get(section) or {}).get("metrics") or {}
    return metrics.get(key)


def columns_for(study: dict) -> list[tuple[str, tuple[str, str]]]:
    """The report's columns: the paper's and toolworld's for the plain form, else per evaluation set."""
    sets = study["eval"].get("sets")
    if not sets:
        return COLUMNS
    return [(f"{name} {label}", (name, key)) for name in sets for label, key in SET_COLUMNS]


def collect(out: Path, study: dict) -> dict[str, list[dict]]:
    """method -> [{seed, values, history, done, dir, ...}] for the finished runs, in study order; an arm with
    `runs_from` is read from that study's folder (`dir`; `elsewhere`: that folder)."""
    columns = columns_for(study)
    found: dict[str, list[dict]] = {m: [] for m in study["methods"]}
    for method in study["methods"]:
        for seed in method_seeds(study, method):
            directory = arm_run_dir(study, out, method, seed)
            if not (directory / "done.json").exists():
                continue
            results = json.loads((directory / "eval" / "results.json").read_text())
            resumed = resumed_eval_episodes(directory.parent / f"seed{seed}.log")
            found[method].append({
                "seed": seed,
                "dir": directory,
                "elsewhere": runs_from(study, method),
                "values": {label: _value(results, where) for label, where in columns},
                "turns_cut": {name: res.get("turns_cut_fraction") for name, res in results["benchmarks"].items()},
                "history": json.loads((directory / "log_history.json").read_text()),
                "done": json.loads((directory / "done.json").read_text()),
                "eval_seconds_per_new_episode": pace(results, resumed),
                "eval_resumed_episodes": resumed,
            })
    return found


def mean_std(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    pct = [100 * v for v in values]
    if len(pct) == 1:
        return f"{pct[0]:.1f} (n=1)"
    return f"{mean(pct):.1f} ± {stdev(pct):.1f}"


def table(found: dict[str, list[dict]], columns=COLUMNS) -> list[str]:
    from pact_cotrain.recipes.phased import compute_summary

    # compute per run, every phase counted; steps without rollouts count 0 rollout tokens; trained
    # tokens = rollout tokens + supervised trace tokens (what a matched-tokens arm matches)
    header = ["method", "seeds", *[label for label, _ in columns], "step min/run", "steps/run", "rollout tokens/run",
              "trained tokens/run", "forward tokens/run"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, runs in found.items():
        if not runs:
            continue
        cells = [method, ",".join(str(r["seed"]) for r in runs)]
        cells += [mean_std([r["values"][label] for r in runs]) for label, _ in columns]
        cells.append(f"{mean(training_step_seconds(r) for r in runs) / 60:.1f}")  # every segment of a resumed run
        compute = [compute_summary(r["history"]) for r in runs]
        cells += [f"{mean(c['steps'] for c in compute):.0f}", f"{mean(c['rollout_tokens'] for c in compute):.0f}",
                  f"{mean(c['rollout_tokens'] + c['sft_tokens'] for c in compute):.0f}",
                  f"{mean(c['forward_tokens'] for c in compute):.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def paired_differences(found: dict[str, list[dict]], reference: str = "pact",
                       labels: tuple[str, ...] = ("TW Solve-F1",)) -> list[str]:
    """`reference` minus every other method on each column of `labels`, paired by seed (same seed: same data
    order and the same first rollouts), in points: mean ± sample std over the seeds both have finished."""
    ours = {r["seed"]: r["values"] for r in found.get(reference, [])}
    lines = [f"| {reference} minus | seeds | " + " | ".join(f"Δ {label} (points)" for label in labels) + " |",
             "|" + "---|" * (2 + len(labels))]
    for method, runs in found.items():
        if method == reference:
            continue
        # vanilla is one evaluation, the same starting point for every seed
        theirs = {s: r["values"] for r in runs for s in (ours if method == "vanilla" else [r["seed"]])}
        seeds = sorted(set(ours) & set(theirs))
        cells = []
        for label in labels:
            both = [s for s in seeds if ours[s][label] is not None and theirs[s][label] is not None]
            cells.append(mean_std([ours[s][label] - theirs[s][label] for s in both]).replace(" (n=1)", " (one seed)"))
        if seeds:
            lines.append(f"| {method} | {','.join(map(str, seeds))} | " + " | ".join(cells) + " |")
    return lines if len(lines) > 2 else []


def write_per_seed_csv(found: dict[str, list[dict]], path: Path, columns=COLUMNS) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "seed", *[label for label, _ in columns], "train_seconds", "total_seconds"])
        for method, runs in found.items():
            for r in runs:
                writer.writerow([method, r["seed"], *[r["values"][label] for label, _ in columns],
                                 round(r["done"]["train_seconds"], 1), round(r["done"]["total_seconds"], 1)])


def plot_curves(found: dict[str, list[dict]], path: Path) -> None:
    """One panel per logged quantity; one line per method, the mean over its seeds at each step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    # One colour per method in every panel (matplotlib's cycle would shift where a method has no data).
    colours = {method: plt.get_cmap("tab20")(i % 20) for i, method in enumerate(found)}
    for ax, (key, label) in zip(axes.flat, CURVES):
        for method, runs in found.items():
            by_step: dict[int, list[float]] = {}
            for r in runs:
                for h in r["history"]:
                    if h.get(key) is not None and "step" in h:
                        by_step.setdefault(h["step"], []).append(h[key])
            if by_step:
                steps = sorted(by_step)
                ax.plot(steps, [mean(by_step[s]) for s in steps], marker=".", label=method, color=colours[method])
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("optimiser step", fontsize=8)
        ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    shown = [m for m, runs in found.items() if runs and any(r["history"] for r in runs)]
    if shown:
        fig.legend([Line2D([], [], color=colours[m], marker=".") for m in shown], shown, loc="lower center",
                   ncol=6, fontsize=8)
    fig.suptitle("training curves, mean over seeds")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def turns_cut_lines(found: dict[str, list[dict]]) -> list[str]:
    """Per method, the share of assistant turns cut by a token limit: in each evaluated benchmark
    (results.json's turns_cut_fraction) and in the training rollouts (the mean of the per-step
    `rollout/turns_cut`), mean over the finished seeds; '–' where not recorded."""
    benchmarks = list(dict.fromkeys(b for runs in found.values() for r in runs for b in r.get("turns_cut", {})))
    if not benchmarks:
        return []
    lines = ["Turns cut by a token limit (percent of assistant turns, mean over seeds):", "",
             "| method | " + " | ".join(benchmarks) + " | training rollouts |",
             "|---|" + "---|" * (len(benchmarks) + 1)]
    for method, runs in found.items():
        if not runs:
            continue
        cells = [mean_std([r["turns_cut"].get(b) for r in runs]).replace(" (n=1)", "") for b in benchmarks]
        train = [mean(steps) for r in runs if (steps := [h["rollout/turns_cut"] for h in r["history"]
                                                         if "rollout/turns_cut" in h])]
        cells.append(mean_std(train).replace(" (n=1)", ""))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines + [""]


def caps_lines(out: Path) -> list[str]:
    """What out/caps.json (written by `pact study` before any run) says: for the training caps and each
    evaluation's caps, the share of expert turns and traces over them, each evaluation's deviations
    from its benchmark's protocol, and whether the caps were forced past the limit."""
    from pact_cotrain.eval.caps import describe_caps

    path = out / "caps.json"
    if not path.exists():
        return ["Caps: not measured (no caps.json; `pact study` writes it before any run).", ""]
    record = json.loads(path.read_text())
    limit = 100 * record["limit"]
    lines = [f"Caps against the expert traces (a study starts only when at most {limit:.0f}% of the expert turns "
             f"and traces are over them, unless forced):", ""]
    for name, report in record["reports"].items():
        deviations = report.get("deviations")
        where = ("; caps lowered or changed from the protocol: " + ", ".join(deviations) if deviations
                 else "; the protocol's caps" if report.get("kind") == "eval" else "")
        lines.append(f"- {name}: {describe_caps(report)}{where}.")
    lines.append("")
    if record.get("forced"):
        lines += [f"**Caps forced** (`--force-caps`): {', '.join(record['over'])} cut more than {limit:.0f}% of "
                  "the expert format, so those runs were capped below what the expert traces need.", ""]
    return lines


def per_task_rows_by_arm(out: Path, found: dict[str, list[dict]]) -> dict[str, list[dict]]:
    from pact_cotrain.study.evaluate import read_per_task

    return {m: [row for r in runs
                if (path := r.get("dir", out / "runs" / m / f"seed{r['seed']}") / "per_task.jsonl.gz").exists()
                for row in read_per_task(path)] for m, runs in found.items()}


def cached_bootstrap(cache: dict | None, key: tuple, ours, theirs, n_boot: int = 10_000):
    """The paired per-task bootstrap of `ours` minus `theirs` (rng 0), computed once per `key` when a `cache`
    is given: the pre-registered table and the all-arms table test the same pairs on the primary set."""
    from pact_cotrain.study.stats import paired_bootstrap

    key = (*key, n_boot)
    if cache is None:
        return paired_bootstrap(ours, theirs, n_boot=n_boot, rng=0)
    if key not in cache:
        cache[key] = paired_bootstrap(ours, theirs, n_boot=n_boot, rng=0)
    return cache[key]


def per_task_tests(out: Path, study: dict, found: dict[str, list[dict]], reference: str = "pact",
                   metric: str = "solve_f1", n_boot: int = 10_000, differences: dict | None = None,
                   bootstraps: dict | None = None) -> list[str]:
    """Per evaluation set, `reference` minus every other arm with per-task results: the paired per-task
    bootstrap (tasks resampled jointly, seeds within each arm; 95 % CI and p), its p Holm-corrected over
    the arms compared in that set, and Welch's t-test of the per-seed means. In points of `metric`.
    `differences`, when given, receives {set: {arm: (mean, low, high)}} in points (for the figure);
    `bootstraps` is a cache shared with `preregistered_tests`."""
    from pact_cotrain.study.stats import holm, per_task_matrix, welch_t_test

    rows = per_task_rows_by_arm(out, found)
    if not rows.get(reference):
        return []
    lines = [f"{reference} minus each arm, per evaluation set ({metric}, points): paired per-task bootstrap "
             f"({n_boot} replicates: the same tasks for both arms, seeds resampled within each arm), p Holm-corrected "
             "over the arms of a set; Welch's t-test of the per-seed means.", "",
             "| set | minus | seeds (ours, theirs) | Δ | 95% CI | p | p Holm | Welch p |",
             "|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(row["eval_set"] for row in rows[reference]):
        ours, our_seeds, tasks = per_task_matrix(rows[reference], metric, name)
        results = []
        for method, theirs_rows in rows.items():
            if method == reference or not any(row["eval_set"] == name for row in theirs_rows):
                continue
            try:
                theirs, their_seeds, _ = per_task_matrix(theirs_rows, metric, name, tasks)
            except ValueError as exc:  # a run scored other tasks: no paired test, and the report says why
                lines.append(f"| {name} | {method} | – | – | – | – | – | – ({exc}) |")
                continue
            boot = cached_bootstrap(bootstraps, (name, reference, method, metric), ours, theirs, n_boot)
            results.append((method, their_seeds, boot, welch_t_test(ours.mean(axis=1), theirs.mean(axis=1))))
        if differences is not None:
            differences[name] = {m: (100 * b.mean, 100 * b.low, 100 * b.high) for m, _, b, _ in results}
        for (method, their_seeds, boot, welch), p_holm in zip(results, holm([b.p for _, _, b, _ in results])):
            lines.append(f"| {name} | {method} | {len(our_seeds)}, {len(their_seeds)} | {100 * boot.mean:+.1f} | "
                         f"[{100 * boot.low:+.1f}, {100 * boot.high:+.1f}] | {boot.p:.3g} | {p_holm:.3g} | "
                         f"{'– (one seed each)' if math.isnan(welch.p) else f'{welch.p:.3g}'} |")
    return lines + [""]


def preregistered_tests(out: Path, study: dict, found: dict[str, list[dict]],
                        bootstraps: dict | None = None) -> list[str]:
    """The plan's confirmatory tests (the study's `primary:` block): on the primary set, `reference` minus
    each arm in `comparisons`, Welch's t-test of the per-seed run means, the p-values Holm-corrected
    together; a hypothesis is supported (corrected p < alpha, reference higher), contradicted (corrected
    p < alpha, reference lower) or not decided. The paired per-task bootstrap's 95 % interval is beside it
    (`bootstraps`: a cache shared with `per_task_tests`)."""
    from pact_cotrain.study.stats import holm, per_task_matrix, seed_level_mdd, welch_t_test

    plan = study.get("primary")
    if not plan:
        return []
    test = plan.get("test", "welch")
    if test not in ("welch", "paired") or (plan.get("secondary_sets") and test != "paired"):
        from pact_cotrain.errors import UserError

        raise UserError(f"primary.test: welch (the default) or paired, got {test!r}; primary.secondary_sets needs "
                        "test: paired")
    if test == "paired":
        return [line for i, name in enumerate([plan["set"], *(plan.get("secondary_sets") or [])])
                for line in paired_preregistered_tests(out, study, found, name, bootstraps, secondary=i > 0)]
    name, metric, reference = plan["set"], plan.get("metric", "solve_f1"), plan.get("reference", "pact")
    alpha = plan.get("alpha", 0.05)
    rows = per_task_rows_by_arm(out, found)
    lines = [f"Pre-registered tests (PLAN.md): {name} {metric}, {reference} minus each arm, points. Welch's t-test "
             f"of the per-seed run means, p Holm-corrected over these {len(plan['comparisons'])} comparisons; "
             f"supported / contradicted at corrected p < {alpha}; the paired per-task bootstrap's 95 % interval "
             "beside it.", "",
             "| hypothesis | seeds (ours, theirs) | Δ | Welch t (df) | p | p Holm | bootstrap 95% CI | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    if not any(row["eval_set"] == name for row in rows.get(reference, [])):
        return lines + [f"| – | no finished {reference} run on {name} yet | | | | | | |", ""]
    ours, our_seeds, tasks = per_task_matrix(rows[reference], metric, name)
    done, waiting, untested = [], [], 0
    for arm, theirs, their_seeds in _arms_scored(rows, plan["comparisons"], reference, name, metric, tasks, 5,
                                                 lines, waiting):
        welch = welch_t_test(100 * ours.mean(axis=1), 100 * theirs.mean(axis=1))
        boot = cached_bootstrap(bootstraps, (name, reference, arm, metric), ours, theirs)
        if math.isnan(welch.p):  # one seed a side: no seed-level variance, no test yet (and not in Holm)
            lines.append(f"| {reference} > {arm} | 1, 1 | {welch.difference:+.1f} | – | – | – | "
                         f"[{100 * boot.low:+.1f}, {100 * boot.high:+.1f}] | not tested (one seed each so far) |")
            untested += 1
            continue
        done.append((arm, their_seeds, welch, boot, theirs.mean(axis=1)))
    planned = {arm: len(method_seeds(study, arm)) for arm in (reference, *plan["comparisons"])}
    interim = untested
    for (arm, their_seeds, welch, boot, _), p_holm in zip(done, holm([w.p for _, _, w, _, _ in done])):
        verdict = ("supported" if welch.difference > 0 else "contradicted") if p_holm < alpha else "not decided"
        if len(our_seeds) < planned[reference] or len(their_seeds) < planned[arm]:
            # The plan fixes the seeds and has no interim analysis: a verdict on part of them is no verdict.
            verdict = (f"interim, no verdict ({len(our_seeds)} of {planned[reference]}, "
                       f"{len(their_seeds)} of {planned[arm]} seeds)")
            interim += 1
        lines.append(f"| {reference} > {arm} | {len(our_seeds)}, {len(their_seeds)} | {welch.difference:+.1f} | "
                     f"{welch.t:.2f} ({welch.df:.1f}) | {welch.p:.3g} | {p_holm:.3g} | "
                     f"[{100 * boot.low:+.1f}, {100 * boot.high:+.1f}] | {verdict} |")
    lines += [f"| {reference} > {arm} | no finished run yet | | | | | | |" for arm in waiting]
    # "Not decided" means little without what could have been decided: the plan's MDD, and the MDD that
    # the seeds finished so far give with their own spread (power 0.8, two-sided; PLAN.md section 6).
    lines.append("")
    planned_mdd = plan.get("planned_mdd_points") or {}
    mdd = ["Minimum detectable difference (power 0.8, two-sided t-test over seeds)"
           + (": planned " + ", ".join(f"{v} points at α {a}" for a, v in planned_mdd.items()) if planned_mdd else "")]
    steps = sorted({alpha / len(plan["comparisons"]), alpha})  # Holm's first and last step
    for arm, their_seeds, _, _, their_means in done:
        n_ours, n_theirs = len(our_seeds), len(their_seeds)
        if min(n_ours, n_theirs) < 2:  # no spread to pool on one side
            continue
        squares = sum(((100 * m - (100 * m).mean()) ** 2).sum() for m in (ours.mean(axis=1), their_means))
        spread = math.sqrt(squares / (n_ours + n_theirs - 2))  # pooled std of the run means
        mdd.append(f"{reference} > {arm} with its {n_ours} and {n_theirs} seeds (pooled std of the run means "
                   f"{spread:.2f}): " + ", ".join(
                       f"{seed_level_mdd(spread, n_ours, n_theirs, a):.1f} at α {a:g}" for a in steps))
    lines.append("; ".join(mdd) + ".")
    if waiting or interim:
        lines.append("")
        lines.append("Holm's correction above is over the comparisons with results so far; it is final only "
                     "when every comparison has all its planned seeds.")
    return lines + [""]


def _arms_scored(rows, arms, reference: str, name: str, metric: str, tasks, empty_cells: int, lines: list[str],
                 waiting: list[str]):
    """(arm, per-task matrix, seeds) of each arm with runs on set `name`. An arm with none is added to
    `waiting`; one whose runs scored other tasks gets a table row saying why it is not tested."""
    from pact_cotrain.study.stats import per_task_matrix

    for arm in arms:
        if not any(row["eval_set"] == name for row in rows.get(arm, [])):
            waiting.append(arm)
            continue
        try:
            theirs, their_seeds, _ = per_task_matrix(rows[arm], metric, name, tasks)
        except ValueError as exc:  # a run scored other tasks: no test, and the table says why
            lines.append(f"| {reference} > {arm} | – ({exc}) |" + " |" * empty_cells + " not tested |")
            continue
        yield arm, theirs, their_seeds


def paired_preregistered_tests(out: Path, study: dict, found: dict[str, list[dict]], name: str,
                               bootstraps: dict | None = None, secondary: bool = False) -> list[str]:
    """The plan's tests with `primary.test: paired`, on evaluation set `name`: per arm in `comparisons`, the
    differences d_s = reference_s - arm_s of the run means (points) over the seeds both ran, the two-sided
    paired t-test on them and its 95 % t-interval (`exploratory.paired_seed_analysis`: scipy.stats.ttest_rel),
    the p-values Holm-corrected over the comparisons; supported / contradicted / not decided as with Welch's
    test, and no verdict before both arms have their planned seeds. The per-task bootstrap's 95 % interval
    (tasks paired, seeds resampled within each arm) is beside it. `secondary`: a set in
    `primary.secondary_sets`, tested the same way, its own Holm family."""
    from pact_cotrain.study.exploratory import paired_seed_analysis
    from pact_cotrain.study.stats import holm, paired_mdd, per_task_matrix

    plan = study["primary"]
    metric, reference, alpha = plan.get("metric", "solve_f1"), plan.get("reference", "pact"), plan.get("alpha", 0.05)
    comparisons = plan["comparisons"]
    rows = per_task_rows_by_arm(out, found)
    lines = [("Secondary, the same tests" if secondary else "Pre-registered tests") + f" (PLAN.md): {name} {metric}, "
             f"{reference} minus each arm, points. Paired t-test of the per-seed differences of the run means over "
             f"the seeds both ran, two-sided, p Holm-corrected over these {len(comparisons)} comparisons; supported / "
             f"contradicted at corrected p < {alpha}; the mean difference's 95 % t-interval, and the per-task "
             "bootstrap's 95 % interval beside it.", "",
             "| hypothesis | seeds | Δ | sd of Δ | paired t (df) | p | p Holm | 95% t-interval | bootstrap 95% CI "
             "| verdict |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    if not any(row["eval_set"] == name for row in rows.get(reference, [])):
        return lines + [f"| – | no finished {reference} run on {name} yet | | | | | | | | |", ""]
    ours, our_seeds, tasks = per_task_matrix(rows[reference], metric, name)
    our_means = dict(zip(our_seeds, 100 * ours.mean(axis=1)))
    done, waiting, untested = [], [], 0
    for arm, theirs, their_seeds in _arms_scored(rows, comparisons, reference, name, metric, tasks, 7, lines,
                                                 waiting):
        boot = cached_bootstrap(bootstraps, (name, reference, arm, metric), ours, theirs)
        res = paired_seed_analysis(our_means, dict(zip(their_seeds, 100 * theirs.mean(axis=1))))
        if res is None:  # fewer than 3 seeds both ran: no test yet (and not in Holm)
            shared = len(set(our_seeds) & set(their_seeds))
            lines.append(f"| {reference} > {arm} | {shared} | | | | | | | "
                         f"[{100 * boot.low:+.1f}, {100 * boot.high:+.1f}] | "
                         f"not tested ({shared} seed(s) both ran so far; the test needs 3) |")
            untested += 1
            continue
        done.append((arm, res, boot))
    planned = {arm: set(method_seeds(study, arm)) for arm in (reference, *comparisons)}
    interim = untested
    for (arm, res, boot), p_holm in zip(done, holm([res["p"] for _, res, _ in done])):
        verdict = ("supported" if res["mean"] > 0 else "contradicted") if p_holm < alpha else "not decided"
        wanted = planned[reference] & planned[arm]
        if not wanted <= set(res["seeds"]):  # the plan fixes the seeds and has no interim analysis
            verdict = f"interim, no verdict ({len(res['seeds'])} of {len(wanted)} seeds)"
            interim += 1
        lines.append(f"| {reference} > {arm} | {len(res['seeds'])} | {res['mean']:+.2f} | {res['sd']:.2f} | "
                     f"{res['t']:+.2f} ({res['df']}) | {res['p']:.3g} | {p_holm:.3g} | "
                     f"[{res['ci'][0]:+.2f}, {res['ci'][1]:+.2f}] | [{100 * boot.low:+.1f}, {100 * boot.high:+.1f}] | "
                     f"{verdict} |")
    lines += [f"| {reference} > {arm} | no finished run yet | | | | | | | | |" for arm in waiting]
    lines.append("")
    planned_mdd = plan.get("planned_mdd_points") or {}
    mdd = ["Minimum detectable difference (power 0.8, two-sided paired t-test over seeds, "
           "(t_{1-α/2, n-1} + t_{0.8, n-1}) sd_Δ / √n)"
           + (": planned " + ", ".join(f"{v} points at α {a}" for a, v in planned_mdd.items()) if planned_mdd else "")]
    steps = sorted({alpha / len(comparisons), alpha})  # Holm's first and last step
    for arm, res, _ in done:
        mdd.append(f"{reference} > {arm} with its {len(res['seeds'])} seeds (sd of Δ {res['sd']:.2f}): " + ", ".join(
            f"{paired_mdd(res['sd'], len(res['seeds']), a):.1f} at α {a:g}" for a in steps))
    lines.append("; ".join(mdd) + ".")
    if waiting or interim:
        lines += ["", "Holm's correction above is over the comparisons with results so far; it is final only when "
                  "every comparison has all its planned seeds."]
    return lines + [""]


def arm_intervals(out: Path, found: dict[str, list[dict]], metric: str = "solve_f1") -> list[str]:
    """Per evaluation set and arm: the mean over seeds of the run means, and its 95 % t-interval over seeds
    (one seed: no interval), in points."""
    import numpy as np

    from pact_cotrain.study.stats import t_quantile

    rows = per_task_rows_by_arm(out, found)
    sets = list(dict.fromkeys(row["eval_set"] for arm in rows.values() for row in arm))
    if not sets:
        return []
    lines = [f"Each arm's {metric} (points): mean over seeds, 95 % t-interval over the seeds' run means.", "",
             "| arm | seeds | " + " | ".join(sets) + " |", "|---|---|" + "---|" * len(sets)]
    for arm, arm_rows in rows.items():
        if not arm_rows:
            continue
        cells = []
        for name in sets:
            by_seed: dict[int, list[float]] = {}
            for row in arm_rows:
                if row["eval_set"] == name:
                    by_seed.setdefault(int(row["seed"]), []).append(float(row[metric]))
            means = np.array([100 * np.mean(v) for v in by_seed.values()])
            if len(means) == 0:
                cells.append("–")
            elif len(means) == 1:
                cells.append(f"{means[0]:.1f}")
            else:
                half = t_quantile(0.975, len(means) - 1) * means.std(ddof=1) / np.sqrt(len(means))
                cells.append(f"{means.mean():.1f} [{means.mean() - half:.1f}, {means.mean() + half:.1f}]")
        seeds = sorted({int(row["seed"]) for row in arm_rows})
        lines.append(f"| {arm} | {len(seeds)} | " + " | ".join(cells) + " |")
    return lines + [""]


def plot_differences(differences: dict, path: Path, reference: str = "pact") -> None:
    """One panel per evaluation set, side by side: `reference` minus each arm with its 95 % paired
    bootstrap interval (points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(differences), figsize=(6 * len(differences), 0.5 * max(
        len(d) for d in differences.values()) + 1.5), sharey=True, squeeze=False)
    for ax, (name, arms) in zip(axes[0], differences.items()):
        labels = list(arms)
        means = [arms[a][0] for a in labels]
        errors = [[arms[a][0] - arms[a][1] for a in labels], [arms[a][2] - arms[a][0] for a in labels]]
        ax.errorbar(means, range(len(labels)), xerr=errors, fmt="o", capsize=3)
        ax.axvline(0, color="grey", lw=1)
        ax.set_yticks(range(len(labels)), labels)
        ax.set_title(f"{name}: {reference} minus arm", fontsize=10)
        ax.set_xlabel("Solve-F1 difference (points), 95 % paired bootstrap CI", fontsize=8)
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


RATE_BINS = (("0", lambda r: r == 0.0), ("(0, 0.5]", lambda r: 0.0 < r <= 0.5), ("(0.5, 1)", lambda r: 0.5 < r < 1.0),
             ("1", lambda r: r == 1.0))


def dose_response_lines(out: Path, found: dict[str, list[dict]], reference: str = "pact",
                        metric: str = "solve_f1") -> list[str]:
    """`reference` minus each arm by the evaluation task's screened success rate (the warm-up checkpoint's,
    from OUT/data/screened_<set>.jsonl.rates.jsonl: `pact study screen --pool OUT/data/eval_<set>.jsonl`),
    mean over tasks of the seed-averaged per-task difference, in points, per rate bin."""
    rows = per_task_rows_by_arm(out, found)
    if not rows.get(reference):
        return []
    lines = []
    for name in dict.fromkeys(row["eval_set"] for row in rows[reference]):
        path = out / "data" / f"screened_{name}.jsonl.rates.jsonl"
        if not path.exists():
            continue
        rate = {r["task_id"]: r["rate"] for r in map(json.loads, path.read_text().splitlines())}

        def task_means(arm_rows):
            by_task: dict[str, list[float]] = {}
            for row in arm_rows:
                if row["eval_set"] == name:
                    by_task.setdefault(row["task_id"], []).append(float(row[metric]))
            return {t: mean(v) for t, v in by_task.items()}

        ours = task_means(rows[reference])
        bins = [(label, [t for t in ours if t in rate and in_bin(rate[t])]) for label, in_bin in RATE_BINS]
        lines += [f"{reference} minus each arm on {name} by the task's screened success rate (warm-up checkpoint; "
                  f"{metric} points; tasks per bin in brackets):", "",
                  "| arm | " + " | ".join(f"{label} ({len(tasks)})" for label, tasks in bins) + " |",
                  "|---|" + "---|" * len(bins)]
        for arm, arm_rows in rows.items():
            if arm == reference or not arm_rows:
                continue
            theirs = task_means(arm_rows)
            cells = [f"{100 * mean(ours[t] - theirs[t] for t in tasks if t in theirs):+.1f}"
                     if any(t in theirs for t in tasks) else "–" for _, tasks in bins]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def screening_lines(out: Path) -> list[str]:
    """What the screening (`study.screen`) kept, from OUT/data/screened.jsonl.summary.json."""
    path = out / "data" / "screened.jsonl.summary.json"
    if not path.exists():
        return []
    s = json.loads(path.read_text())
    return [f"Training pool screened with the warm-up checkpoint: {s['kept']} of {s['pool']} tasks kept, those with "
            f"a success rate in {s['keep']} over {s['samples']} samples at temperature {s['temperature']} (success: "
            f"{s['success']}); tasks by successes: {s['successes_histogram']}. Every arm trained on the kept tasks.",
            ""]


def evaluation_line(ev: dict) -> str:
    if ev.get("sets"):
        sets = ", ".join(f"{name} ({spec['benchmark']}"
                         + (f", {spec['toolworld']['n']} {spec['toolworld'].get('split', 'test')} tasks"
                            if "toolworld" in spec else "") + ")" for name, spec in ev["sets"].items())
        return (f"Evaluation: greedy, sets {sets}, turn caps {ev.get('max_turns')} (a set's own max_turns wins), "
                f"{ev.get('max_new_tokens_per_turn') or 'the protocol'} new tokens per turn.")
    return (f"Evaluation: greedy, benchmarks {ev['benchmarks']}, subsets {ev.get('limit')}, turn caps "
            f"{ev.get('max_turns')}, {ev.get('max_new_tokens_per_turn') or 'the protocol'} new tokens per turn.")


def write_report(study: dict, out: Path) -> None:
    found = collect(out, study)
    differences: dict = {}
    bootstraps: dict = {}  # the paired bootstraps, shared by the pre-registered and the all-arms tables
    columns = columns_for(study)
    missing = [f"{m} seed {s}" for m in study["methods"] for s in method_seeds(study, m)
               if study["methods"][m] is not None and s not in {r["seed"] for r in found[m]}]
    ev = study["eval"]
    # the paired-by-seed table: each set's first metric (Solve-F1), else toolworld's
    labels = tuple(f"{name} {SET_COLUMNS[0][0]}" for name in ev["sets"]) if ev.get("sets") else ("TW Solve-F1",)
    lines = [
        "# Study results",
        "",
        "Percent, mean ± sample std over seeds (n = number of finished seeds). "
        + ("Columns per evaluation set (see Evaluation below). " if ev.get("sets") else
           "FTRL = the FTRL dev rows; BFCL Avg = the multi-turn categories evaluated; Avg = mean of Solve-R, "
           "Solve-P, Solve-F1, BFCL Avg and ToolHop AC; TW = held-out toolworld test tasks. ")
        + "`vanilla` is the warm-up checkpoint every method starts from (one greedy evaluation, the same for "
        "every seed).",
        "",
        *table(found, columns),
        "",
        *(["Paired by seed (a positive Δ: PACT scored higher):", "", *paired, ""]
          if (paired := paired_differences(found, labels=labels)) else []),
        *(preregistered_tests(out, study, found, bootstraps) if ev.get("sets") else []),
        # the exploratory paired re-analysis of a Welch plan (a paired plan's tests are the table above)
        *(exploratory.paired_by_seed_lines(study, found)
          if ev.get("sets") and (study.get("primary") or {}).get("test", "welch") == "welch" else []),
        *(exploratory.answer_by_seed_lines(per_task_rows_by_arm(out, found)) if ev.get("sets") else []),
        *(arm_intervals(out, found) if ev.get("sets") else []),
        *(per_task_tests(out, study, found, differences=differences, bootstraps=bootstraps)
          if ev.get("sets") else []),
        *(dose_response_lines(out, found) if ev.get("sets") else []),
        *cost_lines(found),
        evaluation_line(ev),
        "",
        *code_version_lines(found),
        *host_lines(found),
        *screening_lines(out),
        *caps_lines(out),
        *turns_cut_lines(found),
        "Budget shared by every trained method: " + ", ".join(f"`{k}={v}`" for k, v in study["budget"].items()),
        "",
        f"Runs not finished ({len(missing)}): " + (", ".join(missing) if missing else "none"),
        "",
    ]
    (out / "results.md").write_text("\n".join(lines))
    write_per_seed_csv(found, out / "results_per_seed.csv", columns)
    if any(found.values()):
        plot_curves(found, out / "curves.png")
    if any(differences.values()):
        plot_differences({k: v for k, v in differences.items() if v}, out / "differences.png")
