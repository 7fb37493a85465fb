"""A study run's held-out curve: how many steps a budget needs (issue 14 item 3: "steps such that SFT's
held-out curve flattens").

A method entry with `curve: {every: E, limit: L}` keeps the weights every E steps while it trains
(`Snapshots`, from the checkpoint the run writes anyway), and after its normal evaluation evaluates each
kept step on an evenly spread subset of L tasks of every evaluation set (`evaluate_snapshots`), then drops
those weights. The run's final step is the full evaluation, and step 0 is the warm-up checkpoint
(`vanilla`); `curve_table` reads both on the same subset, so no checkpoint is evaluated twice.

    methods:
      sft_curve: {config: sft, overrides: {train.max_steps: 48}, curve: {every: 8, limit: 64}}

Files: <run>/curve/step-N/ (weights until evaluated, then eval/), <run>/curve.jsonl.gz (per-task rows
with their step, as per_task.jsonl.gz). Resumable: a step already evaluated is skipped.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from transformers import TrainerCallback

from pact_cotrain.errors import UserError

CURVE_KEYS = {"every", "limit"}


def curve_spec(spec: dict | None, method: str) -> dict | None:
    curve = (spec or {}).get("curve")
    if curve is None:
        return None
    if not isinstance(curve, dict) or set(curve) != CURVE_KEYS or any(
            not isinstance(curve[k], int) or curve[k] < 1 for k in CURVE_KEYS):
        raise UserError(f"methods.{method}.curve: {{every: STEPS, limit: TASKS}}, both positive integers; got {curve!r}")
    return curve


class Snapshots(TrainerCallback):
    """After each checkpoint at a multiple of `every` steps, a copy of its weights (no optimiser state) in
    curve/step-N: checkpoints keep only the newest, so the curve keeps its own."""

    def __init__(self, curve_dir: Path, every: int):
        self.curve_dir, self.every = curve_dir, every

    def on_save(self, args, state, control, **kwargs):
        from pact_cotrain.recipes.train import save_final_from_checkpoint

        step = state.global_step
        target = self.curve_dir / f"step-{step}"
        # the last step is the run's own (full) evaluation
        if step % self.every == 0 and step < state.max_steps and args.should_save and not target.exists():
            save_final_from_checkpoint(str(Path(args.output_dir) / f"checkpoint-{step}"), str(target))


def evaluate_snapshots(study: dict, sets: list, directory: Path, method: str, seed: int, limit: int) -> int:
    """Evaluate every curve/step-N not yet evaluated on `limit` tasks of each set; rewrite curve.jsonl.gz
    with every evaluated step's rows. Returns the number of steps evaluated so far."""
    from pact_cotrain.study.evaluate import evaluate_sets, per_task_rows, write_per_task

    subsets = [dataclasses.replace(s, limit=min(limit, s.limit or limit)) for s in sets]
    rows, steps = [], 0
    curve_dir = directory / "curve"
    for step_dir in sorted(curve_dir.glob("step-*"), key=lambda p: int(p.name.split("-")[1])):
        step = int(step_dir.name.split("-")[1])
        if (step_dir / "config.json").exists():  # weights not yet evaluated (or an interrupted evaluation)
            shutil.rmtree(step_dir / "eval", ignore_errors=True)
            evaluate_sets(study, subsets, str(step_dir), step_dir / "eval", seed)
            for leftover in step_dir.iterdir():  # keep only the evaluation
                if leftover.name != "eval":
                    shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        rows += [dict(row, step=step) for row in per_task_rows(step_dir / "eval", subsets, method, seed)]
        steps += 1
    if rows:
        write_per_task(directory / "curve.jsonl.gz", rows)
    return steps


def curve_table(study_out: Path, method: str, seed: int, metric: str = "solve_f1") -> dict[str, dict[int, float]]:
    """{set: {step: mean metric (x100)}} over the curve's subset: step 0 from vanilla's per-task results,
    the kept steps from curve.jsonl.gz, the last step from the run's own (full) evaluation."""
    from pact_cotrain.study.runner import run_dir
    from pact_cotrain.study.evaluate import read_per_task

    directory = run_dir(study_out, method, seed)
    curve_rows = read_per_task(directory / "curve.jsonl.gz") if (directory / "curve.jsonl.gz").exists() else []
    subset = {(r["eval_set"], r["task_id"]) for r in curve_rows}
    sources = [(r["step"], r) for r in curve_rows]
    final = directory / "per_task.jsonl.gz"
    if final.exists():
        import json

        last = json.loads((directory / "done.json").read_text()).get("max_steps")
        sources += [(last, r) for r in read_per_task(final)]
    vanilla = run_dir(study_out, "vanilla", 0) / "per_task.jsonl.gz"
    if vanilla.exists():
        sources += [(0, r) for r in read_per_task(vanilla)]
    table: dict[str, dict[int, list[float]]] = {}
    for step, row in sources:
        if (row["eval_set"], row["task_id"]) in subset:
            table.setdefault(row["eval_set"], {}).setdefault(step, []).append(float(row.get(metric, 0.0)))
    return {name: {step: 100 * sum(v) / len(v) for step, v in sorted(steps.items())} for name, steps in table.items()}
