"""Run one dataset tool the way a benchmark environment runs it, and print the observation.

    run_tools_call("ftrl", None, "ftrl_test_007", "historical_event_finder",
                   '{"keywords": "wikileaks leak the standard us army protocol at guantanamo bay"}')

For debugging dataset rows: the call goes through a fresh environment of the benchmark (the one
`pact eval` uses): rendered as a ``<tool_call>`` block, parsed and validated against the row's
tool schemas, executed in the sandbox, scored. Exit status: 0 the tool ran and returned, 1 the
call was refused (schema) or the tool failed (exception, timeout, ...), 2 a usage error
(unknown benchmark or row, arguments that are not a JSON object).
"""

from __future__ import annotations

import json

from pact_cotrain.envs.parsing import format_tool_call


def run_tools_call(bench: str, data: str | None, row_id: str, tool: str, args_json: str) -> int:
    from pact_cotrain.eval.benchmarks import BENCHMARKS

    benchmark = BENCHMARKS.get(bench)
    if benchmark is None:
        print(f"unknown benchmark {bench!r}; known: {', '.join(sorted(BENCHMARKS))}")
        return 2
    try:
        arguments = json.loads(args_json) if args_json.strip() else {}
    except json.JSONDecodeError as exc:
        print(f"arguments are not valid JSON: {exc}")
        return 2
    if not isinstance(arguments, dict):
        print(f"arguments must be a JSON object, got {type(arguments).__name__}")
        return 2
    tasks = benchmark.load(data)
    task = next((t for t in tasks if t.id == row_id), None)
    if task is None:
        print(f"no row {row_id!r} in {bench} ({len(tasks)} rows)")
        return 2
    env = benchmark.make_env(task)
    env.reset(task)
    result = env.step(format_tool_call(tool, arguments))
    print(f"{bench} {row_id}: {tool}({json.dumps(arguments, ensure_ascii=False)})")
    for msg in result.tool_messages:
        print(msg["content"])
    info = {k: v for k, v in result.info.items()}
    metrics = env.metrics()
    print(f"info: {json.dumps(info)}")
    print("metrics: " + ", ".join(f"{k}={v:g}" for k, v in metrics.items()))
    return 0 if info.get("n_format_errors", 0) == 0 and info.get("n_tool_errors", 0) == 0 else 1
