"""A study's committable outputs: the report and each finished run's small files (no weights), copied from
the study's working folder to a folder under results/ (`pact study --report --export DIR`)."""

from __future__ import annotations

import shutil
from pathlib import Path

RUN_FILES = ("per_task.jsonl.gz", "curve.jsonl.gz", "done.json", "log_history.json", "eval/results.json")
REPORT_FILES = ("results.md", "results_per_seed.csv", "curves.png", "differences.png", "study.yaml", "caps.json")


def copy_run_files(study_out: Path, target: Path) -> int:
    """Each finished run's small outputs (per-task results, done.json, its log history, its evaluation summary)
    from `study_out/runs/METHOD/seedN/` to `target/runs/METHOD/seedN/`, and its console log `seedN.log`
    beside that folder: what a report needs, without weights or checkpoints. Returns the number of runs copied."""
    copied = 0
    for done in sorted(study_out.glob("runs/*/seed*/done.json")):
        run = done.parent
        for name in RUN_FILES:
            if (run / name).exists():
                to = target / "runs" / run.relative_to(study_out / "runs") / name
                to.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(run / name, to)
        log = run.parent / f"{run.name}.log"  # its last segment's log: the report reads resumed evaluations there
        if log.exists():
            shutil.copy2(log, target / "runs" / run.relative_to(study_out / "runs").parent / log.name)
        copied += 1
    return copied


def export_study(study_out: Path, target: Path) -> int:
    """The report (results.md, results_per_seed.csv, figures, the study file and caps) and every finished
    run's small outputs, copied to `target` (a folder under results/, committed as runs finish)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in REPORT_FILES:
        if (study_out / name).exists():
            shutil.copy2(study_out / name, target / name)
    # the screenings' summaries and per-task rates, at the paths the report reads them from, so that
    # `pact study --report --out DIR` on the exported folder rewrites the same results.md (the report does
    # not read the screened tasks themselves, which are large)
    data = study_out / "data"
    for screened in sorted([*data.glob("screened*.summary.json"), *data.glob("screened*.rates.jsonl")]):
        (target / "data").mkdir(exist_ok=True)
        shutil.copy2(screened, target / "data" / screened.name)
    return copy_run_files(study_out, target)

