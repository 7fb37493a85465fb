"""Readers that map the shared benchmark files into the Task format of ``trace_format``.

    read_ftrl(default_ftrl_path())        -> list[Task]   (pact_cotrain.envs.ftrl; the bundled file)
    read_toolhop(default_toolhop_path())  -> list[Task]   (pact_cotrain.envs.toolhop; the bundled file)

Both refuse a file on its first bad row with ``TraceFormatError`` (``path:line: field: reason``,
plus the count of all bad rows), like ``load_tasks``; nothing is dropped or coerced. Every
produced Task is checked once more with ``task_from_record(task.to_record())``.

Tool source code is only ever *parsed* here (``ast``), never executed: running it is the job of
``pact_cotrain.sandbox.ToolSandbox``. Python-literal fields are read with ``ast.literal_eval``.

FTRL row -> Task
    messages  the row's messages
    tools     the decoded ``tools`` JSON string (OpenAI-style schemas)
    metadata  benchmark="ftrl", codes {tool: source} (decoded), unsolved_set {tool: [str]} (decoded),
              answer, data_source, split, solve_rate, and any other field as is

ToolHop row -> Task
    messages  one user turn: FTRL's instruction + "Question: " + the question
    tools     each schema of ``tools`` ({sub-question: schema}, in the file's order) as
              {"type": "function", "function": {name, description, parameters}}
    metadata  benchmark="toolhop", question, functions (list of sources), answer, answer_type,
              sub_task {sub-question: intermediate answer}, subtask_tools {sub-question: tool name},
              gold_calls (the list of call strings, decoded), gold_tool_calls (the same calls parsed
              into {"name", "arguments"} with positional arguments named from the function's
              signature), hop_count, category, and any other field (provenance) as is
"""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path
from typing import Any, Callable

from .trace_format import RESERVED_FIELDS, Task, _Invalid, _require, read_jsonl, task_from_record

# The instruction every FTRL row opens its user turn with (identical across the FTRL test set).
FTRL_INSTRUCTION = (
    "Please call given tools to answer the question. Please note that all your information must be "
    "obtained by calling tools and not by answering the question directly.\n"
    "If the call fails, you need to try to correct it and continue until you arrive at an answer.\n"
)
QUESTION_PREFIX = "Question: "

_FTRL_FIELDS = ("answer", "data_source", "split", "solve_rate")


# ---------------------------------------------------------------------------------------------
# Shared helpers


def _read_jsonl(path: str | Path, build: Callable[[dict], Task]) -> list[Task]:
    """The shared JSONL loop; every produced Task is also checked against the trace format."""

    def build_and_check(row: dict) -> Task:
        task = build(row)
        task_from_record(task.to_record())
        return task

    return read_jsonl(path, build_and_check)


def _type_name(value: Any) -> str:
    return type(value).__name__


def _str_field(row: dict, name: str, non_empty: bool = False) -> str:
    _require(name in row, name, "missing")
    value = row[name]
    _require(isinstance(value, str), name, f"must be a string, got {_type_name(value)}")
    if non_empty:
        _require(bool(value.strip()), name, "must not be empty")
    return value


def _decode_json_field(row: dict, name: str, expected: type) -> Any:
    """A field stored as a JSON string (FTRL) or already decoded; must decode to `expected`."""
    _require(name in row, name, "missing")
    value = row[name]
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise _Invalid(name, f"not a valid JSON string ({exc.msg} at column {exc.colno})") from None
    _require(isinstance(value, expected), name, f"must decode to a JSON {expected.__name__}, got {_type_name(value)}")
    return value


def _decode_literal(value: Any, where: str, expected: type) -> Any:
    """A value stored as a dict/list, a JSON string or a Python-literal string (ast.literal_eval)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
                raise _Invalid(where, f"not a JSON or Python literal ({type(exc).__name__}: {exc})") from None
    _require(isinstance(value, expected), where, f"must be a {expected.__name__}, got {_type_name(value)}")
    return value


def _check_json_value(value: Any, where: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise _Invalid(where, f"not JSON-serializable ({exc})") from None


def _extras(row: dict, known: tuple[str, ...]) -> dict:
    """Fields the reader does not interpret: kept as metadata, unchanged."""
    return {k: v for k, v in row.items() if k not in known and k not in RESERVED_FIELDS}


# ---------------------------------------------------------------------------------------------
# FTRL


def _ftrl_task(row: dict) -> Task:
    task_id = _str_field(row, "id", non_empty=True)
    messages = row.get("messages")
    _require(isinstance(messages, list) and messages, "messages", "must be a non-empty list")
    tools = _decode_json_field(row, "tools", list)
    codes = _decode_json_field(row, "codes", dict)
    for name, source in codes.items():
        _require(isinstance(source, str), f"codes.{name}", f"must be a source string, got {_type_name(source)}")
    names = []
    for i, schema in enumerate(tools):
        fn = schema.get("function") if isinstance(schema, dict) else None
        name = fn.get("name") if isinstance(fn, dict) else None
        _require(isinstance(name, str) and bool(name), f"tools[{i}].function.name", "must be a non-empty string")
        _require(name in codes, f"tools[{i}].function.name", f"tool {name!r} has no source in `codes`")
        _require(name not in names, f"tools[{i}].function.name", f"duplicate tool name {name!r}")
        names.append(name)
    unsolved = _decode_json_field(row, "unsolved_set", dict)
    for name, expected in unsolved.items():
        where = f"unsolved_set.{name}"
        _require(isinstance(expected, list) and all(isinstance(s, str) for s in expected), where,
                 "must be a list of strings")
    answer = _str_field(row, "answer")
    data_source = _str_field(row, "data_source", non_empty=True)
    split = _str_field(row, "split", non_empty=True)
    _require("solve_rate" in row, "solve_rate", "missing")
    solve_rate = row["solve_rate"]
    _require(isinstance(solve_rate, (int, float)) and not isinstance(solve_rate, bool) and math.isfinite(solve_rate),
             "solve_rate", f"must be a finite number, got {solve_rate!r}")
    metadata = {
        "benchmark": "ftrl",
        "codes": codes,
        "unsolved_set": unsolved,
        "answer": answer,
        "data_source": data_source,
        "split": split,
        "solve_rate": solve_rate,
    }
    metadata.update(_extras(row, ("benchmark", "codes", "unsolved_set", *_FTRL_FIELDS)))
    return Task(id=task_id, messages=messages, tools=tools, metadata=metadata)


def read_ftrl(path: str | Path) -> list[Task]:
    """Read an FTRL JSONL file (``tools``/``codes``/``unsolved_set`` are JSON strings) into Tasks."""
    return _read_jsonl(path, _ftrl_task)


# ---------------------------------------------------------------------------------------------
# ToolHop


def _function_def(source: str, where: str) -> ast.FunctionDef:
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise _Invalid(where, f"does not parse (SyntaxError line {exc.lineno}: {exc.msg})") from None
    except ValueError as exc:  # null bytes
        raise _Invalid(where, f"does not parse ({exc})") from None
    defs = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    _require(bool(defs), where, "defines no top-level function")
    return defs[0]


def _accepts(fdef: ast.FunctionDef, n_positional: int, keywords: list[str]) -> list[str] | None:
    """The parameter names the positional arguments bind to, or None when the call does not fit."""
    spec = fdef.args
    params = [a.arg for a in (*spec.posonlyargs, *spec.args)]
    if n_positional > len(params) and spec.vararg is None:
        return None
    bound = params[:n_positional]
    names = set(params[len(spec.posonlyargs):]) | {a.arg for a in spec.kwonlyargs}
    for key in keywords:
        if key in bound or (key not in names and spec.kwarg is None):
            return None
    return bound


def _parse_gold_call(text: str, where: str, defs: dict[str, list[ast.FunctionDef]]) -> dict:
    """`tool(arg, key=value)` -> {"name": "tool", "arguments": {param: value}} (literals only).

    Positional arguments are named from the signature of the function the call fits (ToolHop
    sometimes defines two different tools with the same name)."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise _Invalid(where, f"not a Python call expression ({exc.msg})") from None
    _require(isinstance(node, ast.Call) and isinstance(node.func, ast.Name), where,
             "must be a call of a tool by name, like tool(x, key=value)")
    name = node.func.id
    _require(name in defs, where, f"calls {name!r}, which no function in `functions` defines")
    _require(not any(isinstance(a, ast.Starred) for a in node.args), where, "*args are not supported")
    _require(all(k.arg is not None for k in node.keywords), where, "**kwargs are not supported")
    try:
        values = [ast.literal_eval(a) for a in node.args]
        keywords = [(k.arg, ast.literal_eval(k.value)) for k in node.keywords]
    except (ValueError, SyntaxError, TypeError) as exc:
        raise _Invalid(where, f"arguments must be Python literals ({exc})") from None
    keys = [k for k, _ in keywords]
    _require(len(set(keys)) == len(keys), where, "an argument is given twice")
    bound = None
    for fdef in defs[name]:
        bound = _accepts(fdef, len(values), keys)
        if bound is not None:
            break
    _require(bound is not None, where, f"does not fit the signature of {name}()")
    arguments: dict[str, Any] = dict(zip(bound, values))
    arguments.update(keywords)
    try:  # tuples -> lists, sets -> sorted lists; anything else non-JSON is refused
        arguments = json.loads(json.dumps(arguments, default=_not_json, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise _Invalid(where, f"arguments are not JSON-serializable ({exc})") from None
    return {"name": name, "arguments": arguments}


def _not_json(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    raise TypeError(f"{_type_name(value)} is not JSON-serializable")


def _toolhop_task(row: dict, instruction: str) -> Task:
    task_id = _str_field(row, "id", non_empty=True)
    question = _str_field(row, "question", non_empty=True)
    answer = _str_field(row, "answer")
    answer_type = _str_field(row, "answer_type")
    category = _str_field(row, "category")
    _require("hop_count" in row, "hop_count", "missing")
    hop_count = row["hop_count"]
    _require(isinstance(hop_count, int) and not isinstance(hop_count, bool) and hop_count >= 1, "hop_count",
             f"must be a positive integer, got {hop_count!r}")
    _require("sub_task" in row, "sub_task", "missing")
    sub_task = _decode_literal(row["sub_task"], "sub_task", dict)
    _check_json_value(sub_task, "sub_task")

    _require("functions" in row, "functions", "missing")
    functions = _decode_literal(row["functions"], "functions", list)
    # ToolHop has tasks with two different tools of the same name (5 of the 70 public rows):
    # kept as they are, and listed in metadata["duplicate_tool_names"].
    defs: dict[str, list[ast.FunctionDef]] = {}
    for i, source in enumerate(functions):
        _require(isinstance(source, str), f"functions[{i}]", f"must be a source string, got {_type_name(source)}")
        fdef = _function_def(source, f"functions[{i}]")
        defs.setdefault(fdef.name, []).append(fdef)

    _require("tools" in row, "tools", "missing")
    raw_tools = _decode_literal(row["tools"], "tools", dict)
    tools: list[dict] = []
    subtask_tools: dict[str, str] = {}
    for key, raw in raw_tools.items():
        where = f"tools[{json.dumps(key, ensure_ascii=False)}]"
        schema = _decode_literal(raw, where, dict)
        name = schema.get("name")
        _require(isinstance(name, str) and bool(name), f"{where}.name", "must be a non-empty string")
        _require(name in defs, f"{where}.name", f"no source in `functions` defines {name!r}")
        description = schema.get("description", "")
        _require(isinstance(description, str), f"{where}.description", "must be a string")
        parameters = schema.get("parameters", {"type": "object", "properties": {}})
        _require(isinstance(parameters, dict), f"{where}.parameters", "must be a JSON schema object")
        _check_json_value(parameters, f"{where}.parameters")
        tools.append({"type": "function",
                      "function": {"name": name, "description": description, "parameters": parameters}})
        subtask_tools[str(key)] = name

    gold_calls = _decode_literal(row.get("gold_calls", []), "gold_calls", list)
    gold_tool_calls = []
    for i, call in enumerate(gold_calls):
        _require(isinstance(call, str), f"gold_calls[{i}]", f"must be a call string, got {_type_name(call)}")
        gold_tool_calls.append(_parse_gold_call(call, f"gold_calls[{i}]", defs))

    messages = [{"role": "user", "content": f"{instruction}{QUESTION_PREFIX}{question}"}]
    metadata = {
        "benchmark": "toolhop",
        "question": question,
        "functions": functions,
        "answer": answer,
        "answer_type": answer_type,
        "sub_task": sub_task,
        "subtask_tools": subtask_tools,
        "gold_calls": gold_calls,
        "gold_tool_calls": gold_tool_calls,
        "hop_count": hop_count,
        "category": category,
        "duplicate_tool_names": sorted(n for n, fdefs in defs.items() if len(fdefs) > 1),
    }
    metadata.update(_extras(row, tuple(metadata)))
    return Task(id=task_id, messages=messages, tools=tools, metadata=metadata)


def read_toolhop(path: str | Path, instruction: str = FTRL_INSTRUCTION) -> list[Task]:
    """Read a ToolHop JSONL file into Tasks; the prompt is `instruction` + "Question: " + question."""
    return _read_jsonl(path, lambda row: _toolhop_task(row, instruction))


def _function_sources(functions: list) -> list[tuple[ast.FunctionDef, str]]:
    out = []
    for i, source in enumerate(functions):
        if isinstance(source, str):
            try:
                out.append((_function_def(source, f"functions[{i}]"), source))
            except _Invalid:
                continue
    return out


def task_codes(task: Task) -> dict[str, str]:
    """{tool name: source} of a task from either reader, for ToolSandbox.call.

    For a ToolHop name defined twice this gives the first definition; use `tool_source` with the
    call's arguments to pick the one the call fits."""
    codes = task.metadata.get("codes")
    if isinstance(codes, dict):
        return codes
    out: dict[str, str] = {}
    for fdef, source in _function_sources(task.metadata.get("functions") or []):
        out.setdefault(fdef.name, source)
    return out


def tool_source(task: Task, tool: str, arguments: dict | None = None) -> str | None:
    """The source to run for a call of `tool`: among same-named ToolHop definitions, the first
    whose signature accepts `arguments` (by keyword), else the first; None when undefined."""
    codes = task.metadata.get("codes")
    if isinstance(codes, dict):
        source = codes.get(tool)
        return source if isinstance(source, str) else None
    candidates = [(fdef, src) for fdef, src in _function_sources(task.metadata.get("functions") or [])
                  if fdef.name == tool]
    if not candidates:
        return None
    if arguments is not None and len(candidates) > 1:
        for fdef, source in candidates:
            spec = fdef.args
            n_defaults = len(spec.defaults)
            params = [a.arg for a in spec.args]
            required = params[: len(params) - n_defaults] if n_defaults else params
            required += [a.arg for a, d in zip(spec.kwonlyargs, spec.kw_defaults) if d is None]
            if _accepts(fdef, 0, list(arguments)) is not None and all(r in arguments for r in required):
                return source
    return candidates[0][1]
