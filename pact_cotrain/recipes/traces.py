"""Build verified expert traces for FTRL or ToolHop rows and write them as task/trace JSONL.

    run_traces("ftrl", "ftrl_traces.jsonl")            # the shared FTRL file
    run_traces("toolhop", "toolhop_traces.jsonl", path="my_toolhop.jsonl")

See ``pact_cotrain.data.trace_mining`` for how traces are mined and verified.
"""

from __future__ import annotations

import time
from typing import Iterable

from pact_cotrain.data.trace_mining import build_traces
from pact_cotrain.data.trace_format import write_tasks


def format_report(report: dict) -> str:
    lines = [f"{report['bench']}: {report['verified']}/{report['rows']} rows with a verified expert trace "
             f"({100 * report['coverage']:.1f}%) from {report['path']}",
             f"  goals mined {report['goals_mined']}/{report['goals']} (clean calls {report['clean_calls']})"]
    for key, value in report.items():
        if key.startswith("by_"):
            lines.append(f"  {key[3:]}: " + ", ".join(f"{k} {v}" for k, v in value.items()))
    failed = report.get("failed") or {}
    if failed:
        lines.append(f"  without a trace ({len(failed)}):")
        lines += [f"    {row_id}: {reason}" for row_id, reason in failed.items()]
    return "\n".join(lines)


def run_traces(bench: str, out: str, path: str | None = None, ids: Iterable[str] | None = None) -> dict:
    """Mine, replay and verify traces for `bench` ("ftrl" or "toolhop") rows of `path` (None: the
    shared data file), write the verified tasks to `out` (JSONL, ``write_tasks``), print the
    coverage, and return the coverage report."""
    started = time.time()
    tasks, report = build_traces(bench, path, ids=ids)
    write_tasks(out, tasks)
    report["seconds"] = round(time.time() - started, 1)
    print(format_report(report))
    print(f"wrote {len(tasks)} tasks with traces to {out} in {report['seconds']} s")
    return report
