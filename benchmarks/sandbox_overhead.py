"""Per-call latency of the tool sandbox against an in-process call of the same function.

    python benchmarks/sandbox_overhead.py [--calls 300] [--workers 2] [--no-bwrap] [--task ftrl_test_000]

Without --task a small FTRL-style function is used; with --task the first tool of that FTRL row
(the package's bundled copy) is called with arguments built from its schema's required fields. The
in-process baseline execs the same source in this process — acceptable here only because the
benchmark code is ours, never in training.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pact_cotrain.sandbox import ToolSandbox, format_tool_output  # noqa: E402

DEMO_CODE = '''
from datetime import datetime

def historical_event_finder(event: str, year: int = None, include_context: bool = False):
    """Find when a historical event happened."""
    if not event:
        return {"error": "event is required"}
    events = {"wikileaks guantanamo": "2007-11-7", "moon landing": "1969-07-20"}
    key = event.lower().strip()
    for name, date in events.items():
        if name in key:
            parsed = datetime.strptime(date.replace("-7", "-07"), "%Y-%m-%d")
            out = {"event": event, "date": date, "weekday": parsed.strftime("%A")}
            if include_context:
                out["context"] = "found in the archive"
            return out
    return {"error": f"no record of {event}"}
'''


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def task_tool(task_id: str) -> tuple[dict, str, dict]:
    from pact_cotrain.envs.ftrl import default_ftrl_path

    data = default_ftrl_path()  # the copy shipped in the package
    for line in data.open(encoding="utf-8"):
        row = json.loads(line)
        if row["id"] == task_id:
            codes, tools = json.loads(row["codes"]), json.loads(row["tools"])
            fn = tools[0]["function"]
            props = fn.get("parameters", {}).get("properties", {})
            args = {}
            for name in fn.get("parameters", {}).get("required", []):
                spec = props.get(name, {})
                args[name] = (spec.get("enum") or [{"integer": 1, "number": 1.0, "boolean": True,
                                                     "array": [], "object": {}}.get(spec.get("type"), "x")])[0]
            return codes, fn["name"], args
    raise SystemExit(f"task {task_id} not found in {data}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-bwrap", action="store_true")
    parser.add_argument("--task", default=None)
    args = parser.parse_args()

    if args.task:
        codes, tool, arguments = task_tool(args.task)
    else:
        codes, tool, arguments = {"historical_event_finder": DEMO_CODE}, "historical_event_finder", {
            "event": "WikiLeaks Guantanamo protocol", "include_context": True}

    # In-process baseline: exec + call + format, as FTRL's call_function does per call.
    inproc = []
    for _ in range(args.calls):
        t0 = time.perf_counter()
        namespace: dict = {}
        exec(codes[tool], namespace, namespace)
        expected = format_tool_output(namespace[tool](**arguments))
        inproc.append(time.perf_counter() - t0)

    # In-process, code compiled once: the bare cost of the function call and formatting.
    namespace = {}
    exec(codes[tool], namespace, namespace)
    fn = namespace[tool]
    direct = []
    for _ in range(args.calls):
        t0 = time.perf_counter()
        format_tool_output(fn(**arguments))
        direct.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    sandbox = ToolSandbox(n_workers=args.workers, use_bwrap=False if args.no_bwrap else "auto")
    sandbox.wait_ready()
    startup = time.perf_counter() - t0
    with sandbox:
        first = sandbox.call(codes, tool, arguments)
        assert first.ok and first.output == expected[: len(first.output)], first
        sandboxed = []
        for _ in range(args.calls):
            t0 = time.perf_counter()
            result = sandbox.call(codes, tool, arguments)
            sandboxed.append(time.perf_counter() - t0)
            assert result.ok, result

    def row(name: str, values: list[float]) -> str:
        ms = [v * 1000 for v in values]
        return (f"{name:<32} median {statistics.median(ms):8.3f} ms   p95 {percentile(ms, 0.95):8.3f} ms   "
                f"max {max(ms):8.3f} ms")

    print(f"sandbox: {sandbox!r}")
    print(f"tool: {tool} args={json.dumps(arguments)[:80]}  calls={args.calls}  pool start {startup * 1000:.0f} ms")
    print(row("in-process (exec+call, as FTRL)", inproc))
    print(row("in-process (call only)", direct))
    print(row("sandbox (exec+call in worker)", sandboxed))
    overhead = statistics.median(sandboxed) - statistics.median(direct)
    print(f"sandbox overhead over a bare call: {overhead * 1000:.3f} ms (median)")
    median_ms = statistics.median(sandboxed) * 1000
    print(f"target median <= 20 ms: {'met' if median_ms <= 20 else 'MISSED'} ({median_ms:.3f} ms)")


if __name__ == "__main__":
    main()
