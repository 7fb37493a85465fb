"""The study's report: the paper's table as mean ± std over seeds, per-seed numbers, and curves.

Reads what `pact study` left under OUT/runs/<method>/seed<N>/ (done.json, eval/results.json,
log_history.json) and writes OUT/results.md, OUT/results_per_seed.csv and OUT/curves.png.
Runs that are not done are listed as missing, never filled in.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from statistics import mean, stdev

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
CURVES = [("reward", "rollout reward (mean)"), ("loss/sft", "SFT loss"),
          ("over_reliance_gap", "over-reliance gap (nats/token)"), ("rollout/n_calls", "calls per rollout")]


def _value(results: dict, where: tuple[str, str]) -> float | None:
    section, key = where
    if section == "paper":
        return results["paper"]["values"].get(key)
    metrics = (results["benchmarks"].get(section) or {}).get("metrics") or {}
    return metrics.get(key)


def collect(out: Path, study: dict) -> dict[str, list[dict]]:
    """method -> [{seed, values, history, done}] for the finished runs, in study order."""
    found: dict[str, list[dict]] = {m: [] for m in study["methods"]}
    for method in study["methods"]:
        for seed in study["seeds"]:
            directory = out / "runs" / method / f"seed{seed}"
            if not (directory / "done.json").exists():
                continue
            results = json.loads((directory / "eval" / "results.json").read_text())
            found[method].append({
                "seed": seed,
                "values": {label: _value(results, where) for label, where in COLUMNS},
                "turns_cut": {name: res.get("turns_cut_fraction") for name, res in results["benchmarks"].items()},
                "history": json.loads((directory / "log_history.json").read_text()),
                "done": json.loads((directory / "done.json").read_text()),
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


def table(found: dict[str, list[dict]]) -> list[str]:
    from pact_cotrain.recipes.phased import compute_summary

    # compute per run, every phase counted; steps without rollouts count 0 rollout tokens
    header = ["method", "seeds", *[label for label, _ in COLUMNS], "train min/run", "steps/run", "rollout tokens/run"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, runs in found.items():
        if not runs:
            continue
        cells = [method, ",".join(str(r["seed"]) for r in runs)]
        cells += [mean_std([r["values"][label] for r in runs]) for label, _ in COLUMNS]
        cells.append(f"{mean(r['done']['train_seconds'] for r in runs) / 60:.1f}")
        compute = [compute_summary(r["history"]) for r in runs]
        cells += [f"{mean(c['steps'] for c in compute):.0f}", f"{mean(c['rollout_tokens'] for c in compute):.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def paired_differences(found: dict[str, list[dict]], reference: str = "pact", label: str = "TW Solve-F1") -> list[str]:
    """`reference` minus every other method on `label`, paired by seed (same seed: same data order and
    the same first rollouts), in points: mean ± sample std over the seeds both have finished."""
    ours = {r["seed"]: r["values"][label] for r in found.get(reference, []) if r["values"][label] is not None}
    lines = [f"| {reference} minus | seeds | Δ {label} (points) |", "|---|---|---|"]
    for method, runs in found.items():
        if method == reference:
            continue
        # vanilla is one evaluation, the same starting point for every seed
        theirs = {s: r["values"][label] for r in runs for s in (ours if method == "vanilla" else [r["seed"]])
                  if r["values"][label] is not None}
        seeds = sorted(set(ours) & set(theirs))
        if seeds:
            lines.append(f"| {method} | {','.join(map(str, seeds))} | "
                         f"{mean_std([ours[s] - theirs[s] for s in seeds]).replace(' (n=1)', ' (one seed)')} |")
    return lines if len(lines) > 2 else []


def write_per_seed_csv(found: dict[str, list[dict]], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "seed", *[label for label, _ in COLUMNS], "train_seconds", "total_seconds"])
        for method, runs in found.items():
            for r in runs:
                writer.writerow([method, r["seed"], *[r["values"][label] for label, _ in COLUMNS],
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


def write_report(study: dict, out: Path) -> None:
    found = collect(out, study)
    missing = [f"{m} seed {s}" for m in study["methods"] for s in study["seeds"]
               if study["methods"][m] is not None and s not in {r["seed"] for r in found[m]}]
    ev = study["eval"]
    lines = [
        "# Study results",
        "",
        "Percent, mean ± sample std over seeds (n = number of finished seeds). FTRL = the FTRL dev rows; "
        "BFCL Avg = the multi-turn categories evaluated; Avg = mean of Solve-R, Solve-P, Solve-F1, BFCL Avg "
        "and ToolHop AC; TW = held-out toolworld test tasks. `vanilla` is the warm-up checkpoint every method "
        "starts from (one greedy evaluation, the same for every seed).",
        "",
        *table(found),
        "",
        *(["Paired by seed (a positive Δ: PACT scored higher):", "", *paired, ""] if (paired := paired_differences(found))
          else []),
        f"Evaluation: greedy, benchmarks {ev['benchmarks']}, subsets {ev.get('limit')}, turn caps "
        f"{ev.get('max_turns')}, {ev.get('max_new_tokens_per_turn') or 'the protocol'} new tokens per turn.",
        "",
        *caps_lines(out),
        *turns_cut_lines(found),
        "Budget shared by every trained method: " + ", ".join(f"`{k}={v}`" for k, v in study["budget"].items()),
        "",
        f"Runs not finished ({len(missing)}): " + (", ".join(missing) if missing else "none"),
        "",
    ]
    (out / "results.md").write_text("\n".join(lines))
    write_per_seed_csv(found, out / "results_per_seed.csv")
    if any(found.values()):
        plot_curves(found, out / "curves.png")
