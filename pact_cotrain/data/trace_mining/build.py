"""Verified expert traces: mine, order, replay and verify each row of a benchmark file.

    tasks, report = build_traces("ftrl", path=None)      # path None: the shared data file
    tasks, report = build_traces("toolhop", path=None)

Each returned Task carries a ``trace`` (assistant/tool turns in the trace format of
``trace_format``) that was replayed through the benchmark's environment, with the tool code run
in a ``ToolSandbox``, and reached the benchmark's success criterion. Rows without a verified trace
are left out and listed in the report with the reason.

Verification. FTRL: the trace is replayed through a fresh ``FtrlEnv`` and kept only at Solve-R = 1.
ToolHop: replayed through ``ToolHopEnv(scenario="mandatory")``; kept when answer correctness is 1
and every sub-question's intermediate answer was produced by its tool (FTRL's rule on the outputs).
"""

from __future__ import annotations

import copy
import json
from typing import Any, Callable, Iterable

from pact_cotrain.data.trace_format import Task, _Invalid, task_from_record
from pact_cotrain.rewards.ftrl import FtrlTracker
from pact_cotrain.sandbox import ToolSandbox

from .goals import Goal
from .miner import MAX_CALLS_PER_GOAL, mine_task
from .ordering import order_calls
from .trace import build_trace, replay

BENCHES = ("ftrl", "toolhop")


def _hops_solved(goals: list[Goal], executed: list[tuple[str, str]]) -> int:
    unsolved: dict[str, list[str]] = {}
    for g in goals:
        unsolved.setdefault(g.tool, []).append(g.expected)
    tracker = FtrlTracker(unsolved)
    for tool, output in executed:
        tracker.record_call(tool, output)
    return tracker.S


def trace_for_task(task: Task, bench: str, sandbox: ToolSandbox, budget: int = MAX_CALLS_PER_GOAL) -> tuple[Task | None, dict]:
    """Mine, order, replay and verify one row; (task with trace or None, a per-row record)."""
    goals, calls, missing = mine_task(task, bench, sandbox, budget)
    record: dict[str, Any] = {"id": task.id, "goals": len(goals), "mined": len(calls),
                              "clean": sum(c.clean for c in calls)}
    if not goals:
        record["reason"] = "no goals"
        return None, record
    if missing:
        record["reason"] = "unmined: " + "; ".join(f"{g.tool} -> {g.expected!r}" for g in missing)
        return None, record
    answer = str(task.metadata.get("answer", ""))
    layouts = [order_calls(calls, goals)]
    layouts.append([[c] for step in layouts[0] for c in step])  # one call per step
    layouts.append([[c] for c in sorted(calls, key=lambda c: c.goal.order)])  # the rows' own order
    for steps in layouts:
        trace = build_trace(steps, goals, answer, bench)
        if bench == "ftrl":
            from pact_cotrain.envs.ftrl import FtrlEnv

            env = FtrlEnv(sandbox=sandbox)
            full, metrics, executed = replay(env, task, trace)
            ok = metrics["solve_r"] == 1.0
        else:
            from pact_cotrain.envs.toolhop import ToolHopEnv

            env = ToolHopEnv(sandbox=sandbox, scenario="mandatory")
            full, metrics, executed = replay(env, task, trace)
            hops = _hops_solved(goals, executed)
            metrics = {**metrics, "hops_solved": float(hops), "hops": float(len(goals))}
            ok = metrics["answer_correct"] == 1.0 and hops == len(goals)
        if ok and len(full) == sum(len(s) for s in steps) + len(steps) + 1:
            out = Task(id=task.id, messages=copy.deepcopy(task.messages), tools=copy.deepcopy(task.tools),
                       trace=full, metadata=copy.deepcopy(task.metadata))
            out.metadata["expert_trace"] = {"source": "mined+replayed", "steps": len(steps), "calls": len(calls),
                                            "clean_calls": record["clean"],
                                            "metrics": {k: float(v) for k, v in metrics.items()}}
            try:
                task_from_record(out.to_record())
            except _Invalid as exc:  # e.g. a value outside the schema's enum, which the tool code accepts
                record["reason"] = f"trace breaks the task format: {exc.field_name}: {exc.reason}"
                return None, record
            record["steps"] = len(steps)
            return out, record
    record["reason"] = f"replay failed: {json.dumps({k: round(float(v), 3) for k, v in metrics.items()})}"
    return None, record


def _default_path(bench: str) -> str:
    if bench == "ftrl":
        from pact_cotrain.envs.ftrl import default_ftrl_path

        return str(default_ftrl_path())
    from pact_cotrain.envs.toolhop import default_toolhop_path

    return str(default_toolhop_path())


def load_bench(bench: str, path: str | None = None) -> list[Task]:
    if bench not in BENCHES:
        raise ValueError(f"bench must be one of {BENCHES}, got {bench!r}")
    from pact_cotrain.data.readers import read_ftrl, read_toolhop

    path = path or _default_path(bench)
    return read_ftrl(path) if bench == "ftrl" else read_toolhop(path)


def build_traces(bench: str, path: str | None = None, sandbox: ToolSandbox | None = None,
                 ids: Iterable[str] | None = None, budget: int = MAX_CALLS_PER_GOAL,
                 progress: Callable[[dict], None] | None = None) -> tuple[list[Task], dict]:
    """Tasks with a verified expert trace, and a coverage report.

    bench: "ftrl" or "toolhop"; path: a file in that benchmark's format (None: the shared file);
    sandbox: a ToolSandbox to run tool code in (None: a private one, closed afterwards);
    ids: only these rows. The report: rows, verified, coverage, goals/mined counts, per-reason
    failures, verified rows per data_source/category.
    """
    tasks = load_bench(bench, path)
    if ids is not None:
        wanted = set(ids)
        tasks = [t for t in tasks if t.id in wanted]
    own = sandbox is None
    box = sandbox or ToolSandbox(n_workers=1, timeout_s=3.0)
    kept: list[Task] = []
    records = []
    try:
        for task in tasks:
            out, record = trace_for_task(task, bench, box, budget)
            records.append(record)
            if progress:
                progress(record)
            if out is not None:
                kept.append(out)
    finally:
        if own:
            box.close()
    group_key = "data_source" if bench == "ftrl" else "category"
    by_group: dict[str, list[int]] = {}
    kept_ids = {t.id for t in kept}
    for task in tasks:
        slot = by_group.setdefault(str(task.metadata.get(group_key, "")), [0, 0])
        slot[1] += 1
        slot[0] += task.id in kept_ids
    report = {
        "bench": bench,
        "path": path or _default_path(bench),
        "rows": len(tasks),
        "verified": len(kept),
        "coverage": len(kept) / len(tasks) if tasks else 0.0,
        "goals": sum(r["goals"] for r in records),
        "goals_mined": sum(r["mined"] for r in records),
        "clean_calls": sum(r["clean"] for r in records),
        f"by_{group_key}": {k: f"{v[0]}/{v[1]}" for k, v in sorted(by_group.items())},
        "failed": {r["id"]: r["reason"] for r in records if "reason" in r},
    }
    return kept, report
