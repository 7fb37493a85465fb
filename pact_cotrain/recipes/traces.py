"""Build verified expert traces for FTRL, ToolHop or BFCL rows and write them as task/trace JSONL.

    run_traces("ftrl", "ftrl_traces.jsonl")            # the shared FTRL file
    run_traces("toolhop", "toolhop_traces.jsonl", path="my_toolhop.jsonl")
    run_traces("bfcl", "bfcl_traces.jsonl")            # all 800 BFCL multi-turn entries

See ``pact_cotrain.data.trace_mining`` for how FTRL and ToolHop traces are mined and verified. BFCL
traces need no mining: each entry's ground truth is executed on fresh BFCL backends
(``pact_cotrain.envs.bfcl.traces``, first user turn only), so every entry gets one.
"""

from __future__ import annotations

import time
from typing import Iterable

from pact_cotrain.data.trace_mining import build_traces
from pact_cotrain.data.trace_format import write_tasks


def format_report(report: dict) -> str:
    lines = [f"{report['bench']}: {report['verified']}/{report['rows']} rows with a verified expert trace "
             f"({100 * report['coverage']:.1f}%) from {report['path']}"]
    if "goals" in report:
        lines.append(f"  goals mined {report['goals_mined']}/{report['goals']} (clean calls {report['clean_calls']})")
    if "gold_calls" in report:
        lines.append(f"  gold calls executed {report['gold_calls']}")
    for key, value in report.items():
        if key.startswith("by_"):
            lines.append(f"  {key[3:]}: " + ", ".join(f"{k} {v}" for k, v in value.items()))
    failed = report.get("failed") or {}
    if failed:
        lines.append(f"  without a trace ({len(failed)}):")
        lines += [f"    {row_id}: {reason}" for row_id, reason in failed.items()]
    return "\n".join(lines)


def bfcl_traces(path: str | None = None, ids: Iterable[str] | None = None):
    """BFCL entries (`path`: a task file in the BFCL format; None: the bfcl-eval wheel's 800) with
    their ground-truth expert traces, and the same coverage report as the mined benchmarks."""
    from collections import Counter

    from pact_cotrain.envs.bfcl import bfcl_expert_traces
    from pact_cotrain.envs.bfcl.benchmark import _load

    tasks = _load(path)
    if ids is not None:
        wanted = set(ids)
        tasks = [t for t in tasks if t.id in wanted]
    traced = bfcl_expert_traces(tasks)
    calls = sum(len(m.get("tool_calls") or []) for t in traced for m in t.trace)
    report = {"bench": "bfcl", "rows": len(tasks), "verified": len(traced),
              "coverage": len(traced) / len(tasks) if tasks else 0.0,
              "path": path or "the bfcl-eval wheel", "gold_calls": calls,
              "by_category": dict(Counter(t.metadata.get("category", "") for t in traced))}
    return traced, report


def run_traces(bench: str, out: str, path: str | None = None, ids: Iterable[str] | None = None) -> dict:
    """Build traces for `bench` ("ftrl", "toolhop": mined, replayed and verified; "bfcl": the ground
    truth executed) rows of `path` (None: the shared data file), write the tasks with a trace to
    `out` (JSONL, ``write_tasks``), print the coverage, and return the coverage report."""
    started = time.time()
    tasks, report = bfcl_traces(path, ids) if bench == "bfcl" else build_traces(bench, path, ids=ids)
    write_tasks(out, tasks)
    report["seconds"] = round(time.time() - started, 1)
    print(format_report(report))
    print(f"wrote {len(tasks)} tasks with traces to {out} in {report['seconds']} s")
    return report
