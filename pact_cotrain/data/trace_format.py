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

The loader validates every record and refuses the file on the first bad row with
`path:line: field: reason` plus the count of all bad rows. Nothing is silently dropped or coerced.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

RESERVED_FIELDS = ("id", "messages", "tools", "trace")


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

    def __init__(self, path: str, line: int, field_name: str, reason: str, bad_rows: int = 1):
        self.path, self.line, self.field_name, self.reason, self.bad_rows = path, line, field_name, reason, bad_rows
        suffix = f" ({bad_rows} bad rows in the file)" if bad_rows > 1 else ""
        super().__init__(f"{path}:{line}: {field_name}: {reason}{suffix}")


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
    metadata = {k: v for k, v in record.items() if k not in RESERVED_FIELDS}
    return Task(id=record["id"], messages=messages, tools=tools, trace=trace, metadata=metadata)


def read_jsonl(path: str | Path, build: Callable[[dict], Task]) -> list[Task]:
    """Read a JSONL file, building one validated Task per row with `build` (which raises _Invalid on a
    bad field); raise TraceFormatError on the first bad row, counting all bad rows."""
    path = str(path)
    tasks: list[Task] = []
    first_error: tuple[int, str, str] | None = None
    bad_rows = 0
    seen_ids: dict[str, int] = {}
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise _Invalid("<json>", f"not valid JSON ({exc.msg} at column {exc.colno})") from None
                _require(isinstance(record, dict), "<record>", "must be a JSON object")
                task = build(record)
                _require(task.id not in seen_ids, "id", f"duplicate id {task.id!r} (first on line {seen_ids.get(task.id)})")
                seen_ids[task.id] = line_no
                tasks.append(task)
            except _Invalid as exc:
                bad_rows += 1
                if first_error is None:
                    first_error = (line_no, exc.field_name, exc.reason)
    if first_error is not None:
        raise TraceFormatError(path, *first_error, bad_rows=bad_rows)
    return tasks


def load_tasks(path: str | Path) -> list[Task]:
    """Load and validate a task/trace JSONL file."""
    return read_jsonl(path, task_from_record)


def write_tasks(path: str | Path, tasks: Iterable[Task]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for task in tasks:
            handle.write(json.dumps(task.to_record(), ensure_ascii=False) + "\n")
