"""The task/trace record format: one JSONL record per task.

    {"id": str,
     "messages": [...],          # the prompt: system/user turns (OpenAI style)
     "tools": [...],             # OpenAI-style schemas {"type": "function", "function": {name, description, parameters}}
     "trace": [...] | absent,    # optional expert trace: assistant/tool turns in the same message format
     ...}                        # any other field is benchmark metadata, kept as is

Messages:
    {"role": "system" | "user", "content": str}
    {"role": "assistant", "content": str, "reasoning"?: str,
     "tool_calls"?: [{"name": str, "arguments": {...}, "id"?: str}]}
    {"role": "tool", "content": str, "tool_call_id"?: str, "name"?: str}   # one of the two is required

A trace is also checked against its own task: every called tool is in `tools`, its arguments fit
that tool's JSON schema (`arg_schema`), and every `tool_call_id` (or a bare `name`) of a tool turn
answers an earlier call, each `tool_call_id` once. A row is at most `max_row_bytes` bytes of UTF-8.

The loader validates every record and refuses the file on the first bad row with
`path:line: field: reason` plus the count of all bad rows; an empty file is refused too. Nothing is
silently dropped or coerced. `pact_cotrain.data.validate` reports every bad row instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .arg_schema import schema_problems

RESERVED_FIELDS = ("id", "messages", "tools", "trace")
# A row above this is refused before it is decoded: one runaway row must not exhaust memory.
DEFAULT_MAX_ROW_BYTES = 1 << 20


@dataclass
class Task:
    id: str
    messages: list[dict]
    tools: list[dict]
    trace: list[dict] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict:
        record = {"id": self.id, "messages": self.messages, "tools": self.tools}
        if self.trace is not None:
            record["trace"] = self.trace
        record.update(self.metadata)
        return record

    @property
    def tool_names(self) -> list[str]:
        return [schema["function"]["name"] for schema in self.tools]


class TraceFormatError(ValueError):
    """A record that breaks the format: `path:line: field: reason`."""

    def __init__(self, path: str, line: int | None, field_name: str, reason: str, bad_rows: int = 1):
        self.path, self.line, self.field_name, self.reason, self.bad_rows = path, line, field_name, reason, bad_rows
        suffix = f" ({bad_rows} bad rows in the file)" if bad_rows > 1 else ""
        where = path if line is None else f"{path}:{line}"  # None: the file as a whole (e.g. empty)
        super().__init__(f"{where}: {field_name}: {reason}{suffix}")


class _Invalid(Exception):
    def __init__(self, field_name: str, reason: str):
        super().__init__(f"{field_name}: {reason}")
        self.field_name, self.reason = field_name, reason


def _require(cond: bool, field_name: str, reason: str) -> None:
    if not cond:
        raise _Invalid(field_name, reason)


def _check_message(msg: Any, where: str, allowed_roles: tuple[str, ...]) -> None:
    _require(isinstance(msg, dict), where, "must be an object")
    role = msg.get("role")
    _require(role in allowed_roles, f"{where}.role", f"must be one of {list(allowed_roles)}, got {role!r}")
    content = msg.get("content")
    _require(isinstance(content, str), f"{where}.content", f"must be a string, got {type(content).__name__}")
    if role == "assistant":
        if "reasoning" in msg:
            _require(isinstance(msg["reasoning"], str), f"{where}.reasoning", "must be a string")
        calls = msg.get("tool_calls", [])
        _require(isinstance(calls, list), f"{where}.tool_calls", "must be a list")
        for j, call in enumerate(calls):
            cw = f"{where}.tool_calls[{j}]"
            _require(isinstance(call, dict), cw, "must be an object")
            _require(isinstance(call.get("name"), str) and call["name"], f"{cw}.name", "must be a non-empty string")
            _require(isinstance(call.get("arguments"), dict), f"{cw}.arguments", "must be a JSON object")
    elif role == "tool":
        _require(
            isinstance(msg.get("tool_call_id"), str) or isinstance(msg.get("name"), str),
            where,
            "a tool message needs `tool_call_id` or `name`",
        )
    else:
        _require("tool_calls" not in msg, f"{where}.tool_calls", "only assistant messages carry tool calls")


def _check_tool_schema(schema: Any, where: str) -> None:
    _require(isinstance(schema, dict), where, "must be an object")
    _require(schema.get("type") == "function", f"{where}.type", "must be 'function'")
    fn = schema.get("function")
    _require(isinstance(fn, dict), f"{where}.function", "must be an object")
    _require(isinstance(fn.get("name"), str) and fn["name"], f"{where}.function.name", "must be a non-empty string")
    params = fn.get("parameters", {"type": "object", "properties": {}})
    _require(isinstance(params, dict), f"{where}.function.parameters", "must be a JSON schema object")


def task_from_record(record: Any) -> Task:
    """Validate one decoded record; raise _Invalid naming the field."""
    _require(isinstance(record, dict), "<record>", "must be a JSON object")
    _require(isinstance(record.get("id"), str) and record["id"], "id", "must be a non-empty string")
    messages = record.get("messages")
    _require(isinstance(messages, list) and messages, "messages", "must be a non-empty list")
    for i, msg in enumerate(messages):
        _check_message(msg, f"messages[{i}]", ("system", "user", "assistant", "tool"))
    _require(any(m["role"] == "user" for m in messages), "messages", "needs at least one user message")
    tools = record.get("tools")
    _require(isinstance(tools, list), "tools", "must be a list of JSON schemas")
    for i, schema in enumerate(tools):
        _check_tool_schema(schema, f"tools[{i}]")
    trace = record.get("trace")
    if trace is not None:
        _require(isinstance(trace, list) and trace, "trace", "must be a non-empty list of messages")
        for i, msg in enumerate(trace):
            _check_message(msg, f"trace[{i}]", ("assistant", "tool"))
        _require(trace[0]["role"] == "assistant", "trace[0].role", "a trace starts with an assistant turn")
        _require(trace[-1]["role"] == "assistant", f"trace[{len(trace) - 1}].role", "a trace ends with an assistant turn")
    _check_conversation(messages, trace or [], tools)
    metadata = {k: v for k, v in record.items() if k not in RESERVED_FIELDS}
    return Task(id=record["id"], messages=messages, tools=tools, trace=trace, metadata=metadata)


def _check_conversation(messages: list[dict], trace: list[dict], tools: list[dict]) -> None:
    """The trace against its own task: called tools are offered, arguments fit their schema, and
    every tool turn answers an earlier call (by `tool_call_id`, else by `name`)."""
    schemas: dict[str, list[Any]] = {}
    for schema in tools:
        fn = schema["function"]
        schemas.setdefault(fn["name"], []).append(fn.get("parameters", {"type": "object", "properties": {}}))
    call_ids: set[str] = set()
    answered: dict[str, str] = {}  # tool_call_id -> the tool turn that answered it
    called: set[str] = set()
    turns = [(f"messages[{i}]", m) for i, m in enumerate(messages)] + [(f"trace[{i}]", m) for i, m in enumerate(trace)]
    for where, msg in turns:
        if msg["role"] == "assistant":
            for j, call in enumerate(msg.get("tool_calls", [])):
                cw = f"{where}.tool_calls[{j}]"
                if where.startswith("trace"):
                    _check_call(call, cw, schemas)
                if "id" in call:
                    _require(isinstance(call["id"], str) and call["id"], f"{cw}.id", "must be a non-empty string")
                    _require(call["id"] not in call_ids, f"{cw}.id", f"duplicate tool call id {call['id']!r}")
                    call_ids.add(call["id"])
                called.add(call["name"])
        elif msg["role"] == "tool":
            if isinstance(msg.get("tool_call_id"), str):
                _require(msg["tool_call_id"] in call_ids, f"{where}.tool_call_id",
                         f"{msg['tool_call_id']!r} answers no earlier tool call")
                # A call gets one response: a second one would put two observations of one call in context.
                _require(msg["tool_call_id"] not in answered, f"{where}.tool_call_id",
                         f"{msg['tool_call_id']!r} was already answered by {answered.get(msg['tool_call_id'])}")
                answered[msg["tool_call_id"]] = where
            else:
                _require(msg["name"] in called, f"{where}.name", f"{msg['name']!r} answers no earlier call of that tool")


def _check_call(call: dict, where: str, schemas: dict[str, list[Any]]) -> None:
    name = call["name"]
    offered = ", ".join(sorted(schemas)) or "none"
    _require(name in schemas, f"{where}.name", f"calls {name!r}, which is not in `tools` (offered: {offered})")
    # ToolHop offers some names twice with different schemas: a call fits when it fits one of them.
    problems = [schema_problems(call["arguments"], params, "arguments") for params in schemas[name]]
    if all(problems):
        path, _, reason = problems[0][0].partition(": ")
        more = len(problems[0]) - 1
        _require(False, f"{where}.{path}", reason + (f" (and {more} more schema problems)" if more else ""))


def _decode_line(raw: bytes, line_no: int) -> Any:
    """One JSONL line -> the decoded value; raise _Invalid for encoding or JSON errors."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Invalid("<encoding>",
                       f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte column {exc.start + 1})") from None
    if line_no == 1 and text.startswith("\ufeff"):
        raise _Invalid("<encoding>", "the file starts with a UTF-8 byte-order mark; save it without one")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Invalid("<json>", f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise _Invalid("<json>", "nested too deeply to decode") from None


def iter_rows(path: str | Path, build: Callable[[dict], Task],
              max_row_bytes: int = DEFAULT_MAX_ROW_BYTES) -> Iterator[tuple[int, Task | _Invalid]]:
    """(line number, the row's Task or the _Invalid naming its first bad field) for every non-blank
    line of a JSONL file; ids must be unique across the file. Read as bytes, so a bad byte or an
    oversized row is reported at its line instead of breaking the read."""
    seen_ids: dict[str, int] = {}
    with open(path, "rb") as handle:
        for line_no, (raw, size) in enumerate(_lines(handle, max_row_bytes), start=1):
            if raw is not None and not raw.strip():
                continue
            try:
                _require(raw is not None, "<row>",
                         f"{size:,} bytes, above the limit of {max_row_bytes:,} bytes (max_row_bytes)")
                record = _decode_line(raw, line_no)
                _require(isinstance(record, dict), "<record>", "must be a JSON object")
                task = build(record)
                _require(task.id not in seen_ids, "id", f"duplicate id {task.id!r} (first on line {seen_ids.get(task.id)})")
                seen_ids[task.id] = line_no
                yield line_no, task
            except _Invalid as exc:
                yield line_no, exc


def _lines(handle, max_row_bytes: int) -> Iterator[tuple[bytes | None, int]]:
    """(line without its newline, its size in bytes) per line of the file; the line is None when
    its size is above max_row_bytes: such a line is skipped in chunks, never held in memory."""
    limit = max_row_bytes + 2  # a row at the limit plus "\r\n"
    while True:
        raw = handle.readline(limit)
        if not raw:
            return
        if raw.endswith(b"\n") or len(raw) < limit:  # a whole line (the last one may lack "\n")
            body = raw.rstrip(b"\r\n")
            yield (body if len(body) <= max_row_bytes else None), len(body)
            continue
        size = len(raw)  # longer than the limit: count the rest of the line without keeping it
        while raw and not raw.endswith(b"\n"):
            raw = handle.readline(limit)
            size += len(raw)
        yield None, size - (len(raw) - len(raw.rstrip(b"\r\n")))


def read_jsonl(path: str | Path, build: Callable[[dict], Task],
               max_row_bytes: int = DEFAULT_MAX_ROW_BYTES) -> list[Task]:
    """Read a JSONL file, building one validated Task per row with `build` (which raises _Invalid on a
    bad field); raise TraceFormatError on the first bad row, counting all bad rows, or on a file
    with no rows."""
    path = str(path)
    tasks: list[Task] = []
    first_error: tuple[int, str, str] | None = None
    bad_rows = 0
    for line_no, item in iter_rows(path, build, max_row_bytes):
        if isinstance(item, _Invalid):
            bad_rows += 1
            if first_error is None:
                first_error = (line_no, item.field_name, item.reason)
        else:
            tasks.append(item)
    if first_error is not None:
        raise TraceFormatError(path, *first_error, bad_rows=bad_rows)
    if not tasks:
        raise TraceFormatError(path, None, "<file>", "no task rows (the file is empty)")
    return tasks


def load_tasks(path: str | Path, max_row_bytes: int = DEFAULT_MAX_ROW_BYTES) -> list[Task]:
    """Load and validate a task/trace JSONL file; TraceFormatError (path:line: field: reason) on
    the first bad row."""
    return read_jsonl(path, task_from_record, max_row_bytes)


def write_tasks(path: str | Path, tasks: Iterable[Task]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for task in tasks:
            handle.write(json.dumps(task.to_record(), ensure_ascii=False) + "\n")
