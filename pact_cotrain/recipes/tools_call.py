"""Run one dataset tool the way a benchmark environment runs it, and print the observation.

    run_tools_call("ftrl", None, "ftrl_test_007", "historical_event_finder",
                   '{"keywords": "wikileaks leak the standard us army protocol at guantanamo bay"}')

For debugging dataset rows: the call goes through a fresh environment of the benchmark (the one
`pact eval` uses): rendered as a ``<tool_call>`` block, parsed and validated against the row's
tool schemas, executed in the sandbox, scored. Exit status: 0 the tool ran and returned, 1 the
call was refused (schema) or the tool failed (exception, timeout, ...), 2 a usage error
(unknown benchmark or row, arguments that are not a JSON object).

    run_tools_list("ftrl", None, "ftrl_test_007")

prints the row's tools, one block each: the name, the description, and every parameter with its
type, whether it is required, its enum and its description (what `--tool`/`--args` can call).
"""

from __future__ import annotations

import json

from pact_cotrain.envs.parsing import format_tool_call


def _find_row(bench: str, data: str | None, row_id: str):
    """(benchmark, task) for `row_id`, or raise UserError naming what is wrong."""
    from pact_cotrain.errors import UserError, did_you_mean
    from pact_cotrain.eval.benchmarks import BENCHMARKS

    benchmark = BENCHMARKS.get(bench)
    if benchmark is None:
        raise UserError(f"unknown benchmark {bench!r}; known: {', '.join(sorted(BENCHMARKS))}")
    tasks = benchmark.load(data)
    task = next((t for t in tasks if t.id == row_id), None)
    if task is None:
        raise UserError(f"no row {row_id!r} in {bench} ({len(tasks)} rows, e.g. {tasks[0].id if tasks else '-'})"
                        f"{did_you_mean(row_id, [t.id for t in tasks])}")
    return benchmark, task


def tool_lines(tools: list[dict]) -> list[str]:
    """Each OpenAI-style tool as `name(p1, p2?)`, its description, then one line per parameter."""
    lines = []
    for tool in tools:
        fn = tool.get("function", tool)
        params = fn.get("parameters") or {}
        props, required = params.get("properties") or {}, set(params.get("required") or [])
        signature = ", ".join(p if p in required else p + "?" for p in props)
        lines += [f"{fn.get('name')}({signature})"]
        if fn.get("description"):
            lines.append(f"    {fn['description'].strip()}")
        for name, spec in props.items():
            kind = spec.get("type", "any")
            kind = "/".join(kind) if isinstance(kind, list) else kind
            extra = f" one of {spec['enum']}" if spec.get("enum") else ""
            desc = f": {spec['description'].strip()}" if spec.get("description") else ""
            lines.append(f"    - {name} ({kind}, {'required' if name in required else 'optional'}){extra}{desc}")
        lines.append("")
    return lines


def run_tools_list(bench: str, data: str | None, row_id: str) -> int:
    _, task = _find_row(bench, data, row_id)
    print(f"{bench} {row_id}: {len(task.tools)} tools (? = optional parameter)\n")
    print("\n".join(tool_lines(task.tools)).rstrip())
    return 0


def _arguments(args_json: str) -> dict | None:
    """`--args` as a JSON object, or None after saying why it is not one."""
    try:
        arguments = json.loads(args_json) if args_json.strip() else {}
    except json.JSONDecodeError as exc:
        print(f"arguments are not valid JSON: {exc}")
        return None
    if not isinstance(arguments, dict):
        print(f"arguments must be a JSON object, got {type(arguments).__name__}")
        return None
    return arguments


def run_tools_call(bench: str, data: str | None, row_id: str, tool: str, args_json: str) -> int:
    arguments = _arguments(args_json)
    if arguments is None:
        return 2
    benchmark, task = _find_row(bench, data, row_id)
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


def _own(flags: dict):
    from pact_cotrain.recipes.own_agent import own_agent

    flags = dict(flags)
    return own_agent(flags.pop("config"), **flags)


def run_own_tools_list(flags: dict, row_id: str | None) -> int:
    """The tools a config (or --env / --tools) gives: functions, environment methods, MCP servers' tools;
    for the row `row_id` of its data.path when given (a dict of environments picks one per row)."""
    agent = _own(flags)
    task = agent.find_task(row_id)
    tools = agent.factory.tool_schemas(task)
    where = flags.get("config") or "flags"
    print(f"{where}{' ' + row_id if row_id else ''}: {len(tools)} tools (? = optional parameter)\n")
    print("\n".join(tool_lines(tools)).rstrip())
    return 0


def run_own_tools_call(flags: dict, row_id: str | None, tool: str, args_json: str) -> int:
    """One call of a user's tool after the row's reset, as an episode makes it; exit 1 when the tool failed."""
    arguments = _arguments(args_json)
    if arguments is None:
        return 2
    agent = _own(flags)
    task = agent.find_task(row_id)
    from pact_cotrain.data.trace_format import Task
    from pact_cotrain.errors import UserError

    task = task or Task(id="tools-call", messages=[{"role": "user", "content": ""}], tools=[])
    env = agent.factory(task)
    try:
        _, schemas = env.reset(task)
        names = [s.get("function", s).get("name") for s in schemas]
        if tool not in names:
            raise UserError(f"no tool named {tool!r} (offered: {', '.join(names) or 'none'})")
        outcome = env.run_call(tool, arguments)
    finally:
        env.close()
    print(f"{tool}({json.dumps(arguments, ensure_ascii=False)})")
    print(outcome.output)
    return 0 if outcome.ok else 1
