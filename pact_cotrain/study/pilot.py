"""A study pilot's numbers (issue 14 item 7): what its pre-registered plan is sized from.

    python -m pact_cotrain.study.pilot runs/study-v2-pilot --out results/study-v2/pilot

From the pilot's finished runs it measures, per evaluation set:
- every run's mean Solve-F1 (x100) and its standard error over tasks;
- the noise of one configuration: the std of PACT's run means over its seeds (on the set's fixed tasks),
  the per-task std, and the numerics pair (PACT seed 0 against the same run with its step split into
  micro-batches): how far rounding alone moves a run;
- the minimum detectable difference for several seed counts, with the run-mean std as measured and at
  its upper 80 % confidence bound (three seeds pin a std down poorly), and the seeds 3 points would need.
  Every arm is evaluated on the same fixed tasks, so a task's difficulty is common to all arms and
  cancels in a difference; what varies from run to run, training noise and which tasks a run happens to
  solve, is all in the std of run means S, and the difference of two arms' means over n seeds each has
  variance 2 S^2 / n (`minimum_detectable_difference` with seed_std S and task_std 0);
- the cost of each run in core-hours and its trained tokens, and the ratios of PACT's tokens to the
  other arms' (the matched-tokens multipliers);
- the curve of a `curve:` run (`curve.curve_table`).

Writes OUT/pilot.md and OUT/pilot.json, and copies every run's per-task results to OUT/runs/.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
import numpy as np
import yaml
from scipy import stats as scipy_stats

from pact_cotrain.study import stats as study_stats
from pact_cotrain.study.evaluate import read_per_task
from pact_cotrain.study.export import copy_run_files

SEED_COUNTS = (3, 5, 8, 12, 16, 24)
TARGET_POINTS = 3.0


def chi2_quantile(p: float, df: int) -> float:
    """The chi-square quantile (scipy.stats.chi2.ppf; this was Wilson-Hilferty's approximation, within about
    1 %, until scipy became a dependency)."""
    return float(scipy_stats.chi2.ppf(p, df))


def std_upper_bound(std: float, n: int, level: float = 0.8) -> float:
    """One-sided `level` upper confidence bound of a normal std estimated from n values."""
    if n < 2:
        return math.nan
    return std * math.sqrt((n - 1) / chi2_quantile(1.0 - level, n - 1))


def finished_runs(out: Path) -> dict[tuple[str, int], dict]:
    """{(method, seed): {"done": done.json, "rows": per-task rows}} of every finished run."""
    runs = {}
    for done_path in sorted(out.glob("runs/*/seed*/done.json")):
        done = json.loads(done_path.read_text())
        per_task = done_path.parent / "per_task.jsonl.gz"
        history = done_path.parent / "log_history.json"
        runs[(done["method"], int(done["seed"]))] = {
            "done": done, "rows": read_per_task(per_task) if per_task.exists() else [], "dir": done_path.parent,
            "history": json.loads(history.read_text()) if history.exists() else []}
    return runs


def run_means(rows: list[dict], eval_set: str, metric: str = "solve_f1") -> tuple[float, float, int]:
    """(mean x100, standard error over tasks x100, tasks) of one run on one set."""
    x = np.array([float(r[metric]) for r in rows if r["eval_set"] == eval_set])
    if len(x) == 0:
        return math.nan, math.nan, 0
    return 100 * x.mean(), 100 * x.std(ddof=1) / math.sqrt(len(x)) if len(x) > 1 else math.nan, len(x)


def noise(runs: dict, eval_set: str, arm: str = "pact", numerics: str = "pact_numerics") -> dict:
    """Seed and task noise of `arm` on one set, the numerics pair, and the power they imply (x100)."""
    rows = [r for (method, _), run in runs.items() if method == arm for r in run["rows"]]
    scores, seeds, tasks = study_stats.per_task_matrix(rows, eval_set=eval_set)
    _, task_std = study_stats.variance_components(scores)
    run_std = float(scores.mean(axis=1).std(ddof=1))
    out = {"arm": arm, "seeds": seeds, "tasks": len(tasks), "seed_means": [100 * m for m in scores.mean(axis=1)],
           "run_std": 100 * run_std, "task_std": 100 * task_std,
           "run_std_upper80": 100 * std_upper_bound(run_std, len(seeds))}
    pair = runs.get((numerics, 0)), runs.get((arm, 0))
    if all(pair):
        a = {r["task_id"]: float(r["solve_f1"]) for r in pair[1]["rows"] if r["eval_set"] == eval_set}
        b = {r["task_id"]: float(r["solve_f1"]) for r in pair[0]["rows"] if r["eval_set"] == eval_set}
        shared = sorted(set(a) & set(b))
        out["numerics"] = {"difference": 100 * float(np.mean([b[t] - a[t] for t in shared])),
                           "tasks_that_differ": sum(a[t] != b[t] for t in shared), "tasks": len(shared)}
    n_tasks = len(tasks)
    out["mdd"] = {}
    for label, std in (("measured", run_std), ("upper80", out["run_std_upper80"] / 100)):
        if math.isnan(std):
            continue
        out["mdd"][label] = {n: 100 * study_stats.minimum_detectable_difference(n, n_tasks, std, 0.0)
                             for n in SEED_COUNTS}
        out["mdd"][label]["seeds_for_3_points"] = study_stats.seeds_needed(TARGET_POINTS / 100, n_tasks, std, 0.0)
    return out


def costs(runs: dict) -> dict:
    """Per run: core-hours (`cost.run_core_hours`: logged step times plus evaluation, times threads,
    right across resumed segments), the training steps' minutes, evaluation minutes, trained tokens, steps."""
    from pact_cotrain.study.cost import run_core_hours, training_step_seconds

    table = {}
    for (method, seed), run in runs.items():
        d = run["done"]
        step_seconds = training_step_seconds(run)
        table[f"{method}:{seed}"] = {
            "train_min": step_seconds / 60, "eval_min": (d["total_seconds"] - d["train_seconds"]) / 60,
            "threads": d.get("threads") or 1, "core_hours": run_core_hours(run),
            "trained_tokens": d["compute"].get("trained_tokens"), "forward_tokens": d["compute"].get("forward_tokens"),
            "steps": d["compute"].get("steps"),
            "commit": (d.get("git") or {}).get("commit")}
    return table


def token_ratios(table: dict, key: str = "trained_tokens") -> dict[str, float]:
    """PACT's `key` over each other run's: the steps_multiplier of a matched-tokens arm. PACT's is its
    first plain seed that logged `key` (`forward_tokens` is newer than the first runs; pact_numerics
    repeats a group's context in every micro-batch that holds its rollouts)."""
    reference = next((name for name in sorted(table) if name.startswith("pact:") and table[name].get(key)), None)
    if reference is None:
        return {}
    ref = table[reference][key]
    return {f"{reference} / {name}": ref / row[key] for name, row in table.items()
            if row.get(key) and not name.startswith("pact")}


def summarise(out: Path) -> dict:
    from pact_cotrain.study.curve import curve_table

    study = yaml.safe_load((out / "study.yaml").read_text())
    runs = finished_runs(out)
    sets = list((study["eval"].get("sets") or {}))
    summary = {"runs": {f"{m}:{s}": {name: run_means(run["rows"], name)[:2] for name in sets}
                        for (m, s), run in sorted(runs.items())},
               "costs": costs(runs), "noise": {}, "curves": {}}
    summary["token_ratios_to_pact"] = {key: token_ratios(summary["costs"], key) for key in ("trained_tokens", "forward_tokens")}
    for name in sets:
        if sum(1 for m, _ in runs if m == "pact") >= 2:
            summary["noise"][name] = noise(runs, name)
    for (method, seed), run in runs.items():
        if (run["done"].get("curve") or {}).get("every"):
            summary["curves"][f"{method}:{seed}"] = curve_table(out, method, seed)
    screened = out / "data" / "screened.jsonl.summary.json"
    if screened.exists():
        summary["screen"] = json.loads(screened.read_text())
    return summary


def render(summary: dict) -> str:
    lines = ["# Study v2 pilot: measured numbers", "", "Generated by `python -m pact_cotrain.study.pilot`.", ""]
    if "screen" in summary:
        s = summary["screen"]
        lines += ["## Screening", "", f"{s['kept']} of {s['pool']} pool tasks kept (success rate in {s['keep']}, "
                  f"{s['samples']} samples at temperature {s['temperature']}, success {s['success']}); successes per "
                  f"task: {s['successes_histogram']}; mean rate {s['mean_rate']:.3f}.", ""]
    sets = sorted({name for run in summary["runs"].values() for name in run})
    lines += ["## Runs (Solve-F1 x100, mean ± standard error over tasks)", "",
              "| run | " + " | ".join(sets) + " | training steps, min | evaluation, min | core-hours | trained tokens | forward tokens |",
              "|---|" + "---|" * (len(sets) + 5)]
    for name, means in summary["runs"].items():
        c = summary["costs"][name]
        cells = [f"{m:.1f} ± {se:.1f}" for m, se in (means[s] for s in sets)]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {c['train_min']:.1f} | {c['eval_min']:.1f} | "
                     f"{c['core_hours']:.2f} | {c['trained_tokens']:,} | {c.get('forward_tokens') or 'not logged'} |")
    for key, ratios in summary["token_ratios_to_pact"].items():
        if ratios:
            lines += ["", f"PACT's {key.replace('_', ' ')} over each run's: " + ", ".join(
                f"{k} {v:.2f}x" for k, v in ratios.items()), ""]
    for name, n in summary["noise"].items():
        lines += [f"## Noise on {name} ({n['tasks']} tasks)", "",
                  f"- PACT seeds {n['seeds']}: means {', '.join(f'{m:.1f}' for m in n['seed_means'])}; std of the "
                  f"run means {n['run_std']:.2f} points (upper 80 % bound {n['run_std_upper80']:.2f}); per-task std "
                  f"{n['task_std']:.1f} points."]
        if "numerics" in n:
            p = n["numerics"]
            lines.append(f"- Numerics pair (seed 0, micro-batched minus plain): {p['difference']:+.2f} points, "
                         f"{p['tasks_that_differ']} of {p['tasks']} tasks scored differently.")
        for label, mdd in n["mdd"].items():
            lines.append(f"- Minimum detectable difference (alpha 0.05, power 0.8), run-mean std {label}: " + ", ".join(
                f"{k} seeds {v:.1f}" for k, v in mdd.items() if k != "seeds_for_3_points")
                + f"; 3 points needs {mdd['seeds_for_3_points']} seeds per arm.")
        lines.append("")
    for name, table in summary["curves"].items():
        lines += [f"## Curve of {name} (Solve-F1 x100 on the curve's subset)", "",
                  "| set | " + " | ".join(f"step {s}" for s in next(iter(table.values()))) + " |",
                  "|---|" + "---|" * len(next(iter(table.values())))]
        for set_name, steps in table.items():
            lines.append(f"| {set_name} | " + " | ".join(f"{v:.1f}" for v in steps.values()) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("study_out", help="the pilot's `pact study --out` folder")
    parser.add_argument("--out", required=True, help="where pilot.md, pilot.json and runs/ go")
    args = parser.parse_args(argv)
    study_out, out = Path(args.study_out), Path(args.out)
    summary = summarise(study_out)
    out.mkdir(parents=True, exist_ok=True)
    copy_run_files(study_out, out)
    (out / "pilot.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "pilot.md").write_text(render(summary) + "\n")
    print(f"wrote {out / 'pilot.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
