"""A study run's cost in core-hours, and the report's cost table.

A run resumed across sessions leaves its times in pieces: its log history holds every training step's time,
its done.json only the last segment's wall times, and its console log says how many evaluation episodes an
earlier segment had already written.
"""

from __future__ import annotations

import re
from pathlib import Path
from statistics import mean


def training_step_seconds(run: dict) -> float:
    """A run's training steps' own times (`step_time`), summed over its log: a run resumed across sessions
    counts every segment, where done.json's `train_seconds` holds only the last one."""
    return sum(h.get("step_time", 0.0) for h in run["history"] if "loss" in h)


RESUMED_EVALUATION = re.compile(r"^eval \S+: resuming after (\d+) episodes already written", re.M)


def resumed_eval_episodes(log: Path) -> int:
    """Episodes that a run's last segment found already evaluated, from its log (`eval SET: resuming after K
    episodes`; the log holds the last segment only): an evaluation that the end of a session cut."""
    if not log.exists():
        return 0
    return sum(int(k) for k in RESUMED_EVALUATION.findall(log.read_text(errors="replace")))


def pace(results: dict, resumed: int) -> float | None:
    """Seconds per episode that the last segment evaluated itself (its sets' wall time over its new
    episodes); None when it evaluated none."""
    sets = results["benchmarks"].values()
    new = sum(b.get("n_episodes", 0) for b in sets) - resumed
    return sum(b.get("wall_seconds", 0.0) for b in sets) / new if new > 0 else None


def run_core_hours(run: dict) -> float:
    """A run's core-hours: its training steps' times plus its evaluation, times the torch threads it ran with.
    The evaluation is the last segment's total minus its training wall time; when that segment resumed an
    evaluation cut by a session's end, the episodes an earlier segment evaluated (their time is in no file)
    are added at the last segment's pace per episode."""
    steps = training_step_seconds(run)
    evaluation = run["done"]["total_seconds"] - run["done"]["train_seconds"]
    if run.get("eval_resumed_episodes") and run.get("eval_seconds_per_new_episode"):
        evaluation += run["eval_resumed_episodes"] * run["eval_seconds_per_new_episode"]
    return (steps + evaluation) * (run["done"].get("threads") or 1) / 3600


def cost_lines(found: dict[str, list[dict]]) -> list[str]:
    lines = ["Cost per arm (core-hours: training steps + evaluation, times threads):", "",
             "| arm | runs | core-hours/run | core-hours |", "|---|---|---|---|"]
    total, elsewhere = 0.0, []
    for arm, runs in found.items():
        if runs:
            hours = [run_core_hours(r) for r in runs]
            where = next((r["elsewhere"] for r in runs if r.get("elsewhere")), None)
            if where is None:
                total += sum(hours)
            else:  # an arm read from another study (runs_from): spent there, not counted here
                elsewhere.append(arm)
            lines.append(f"| {arm}{f' (runs of {where})' if where else ''} | {len(runs)} | {mean(hours):.2f} | "
                         f"{sum(hours):.1f} |")
    lines += ["", f"All arms: {total:.1f} core-hours (the warm-up and screenings not included"
              + (f"; {', '.join(elsewhere)} spent in another study, not counted" if elsewhere else "") + ")."]
    resumed = [f"{arm} seed {r['seed']} ({r['eval_resumed_episodes']})" for arm, runs in found.items() for r in runs
               if r.get("eval_resumed_episodes")]
    if resumed:
        lines.append(f"Evaluations resumed after a session's end (episodes evaluated before it): {', '.join(resumed)}; "
                     "those episodes are costed at the pace of the episodes evaluated after it.")
    return lines + [""]
