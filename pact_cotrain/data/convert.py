"""`pact data convert`: tool-use conversations in the formats people have -> task/trace JSONL.

    result = convert_file("hermes.parquet", "tasks.jsonl", "hermes", {"messages": "conversations"})

Input: a .jsonl file, a .json file (an array of rows, or JSON lines), a .parquet file, or a folder
written by `datasets`' `save_to_disk` (the last two are read through `datasets`).

Formats (the column of each FIELD can be renamed with `maps`, e.g. {"tools": "functions"}):
    openai    `messages`: OpenAI chat messages; assistant `tool_calls` [{id, type, function: {name,
              arguments (a JSON string or an object)}}] (or the legacy `function_call`), `tool`
              turns with `tool_call_id` (or legacy `function` turns with `name`), `content` a string,
              null or a list of text parts, reasoning in `reasoning_content` / `reasoning`.
              `tools`: [{type: "function", function: {...}}] or bare function objects, or a JSON
              string of either.
    hermes    `conversations` (else `messages`): turns as {from, value} or {role, content}; assistant
              text holds <tool_call>{"name": ..., "arguments": {...}}</tool_call> blocks (JSON or a
              Python literal), tool turns hold <tool_response>{"name": ..., "content": ...}
              </tool_response> blocks (or plain text). `tools`: the `tools` column when there is
              one, else the <tools>...</tools> block of the system turn (which is kept verbatim).
    sharegpt  `conversations` (else `messages`) with from = system / human / gpt / function_call /
              observation (also user, assistant, tool, function): a function_call turn's value is a
              JSON call (or a list of calls), and gpt text may hold <tool_call> blocks too; `tools`
              a JSON string of function objects; an optional `system` column becomes the system turn.

In every format, <think>...</think> in assistant text becomes the turn's `reasoning`. The turns up to
the first assistant turn are the task's `messages`; the rest is its expert `trace`. A row with no
assistant turn is an untraced task. `id` is the row's `id` column, else "<file stem>-<row number>".
Every other column is kept as task metadata. A tool result with no tool name is named after the
call it answers (the calls of the preceding assistant turn, in order).

Parquet and `datasets` store nested objects as Arrow structs, which give every object the keys of
all rows (missing ones as null); keep `tools` and call `arguments` as JSON strings in such files.

Any row that cannot be converted, or whose result breaks the task format (`trace_format`, which
also checks the trace's calls against the row's tools), is reported as `path:N: field: reason`
(N: the line of a JSONL file, else the row's 1-based position) and nothing is written.
"""

from __future__ import annotations

import ast
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .trace_format import DEFAULT_MAX_ROW_BYTES, RESERVED_FIELDS, _decode_line, _Invalid, _lines, _require, task_from_record

FORMATS = ("openai", "hermes", "sharegpt")
MAPPABLE_FIELDS = ("id", "messages", "tools", "system")
MAX_SHOWN_ERRORS = 50

_ROLES = {
    "system": "system",
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "model": "assistant", "chatgpt": "assistant",
    "function_call": "function_call",
    "tool": "tool", "observation": "tool", "function": "tool", "ipython": "tool", "tool_response": "tool",
}
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_TOOL_RESPONSE = re.compile(r"<tool_response>(.*?)</tool_response>", re.DOTALL)
_TOOLS_BLOCK = re.compile(r"<tools>(.*?)</tools>", re.DOTALL)


class ConvertError(ValueError):
    """Rows that could not be converted; the message lists them, one `path:N: field: reason` a line."""


@dataclass
class ConvertResult:
    out: str
    rows: int
    traced: int

    def summary(self) -> str:
        return (f"wrote {self.rows} tasks to {self.out} ({self.traced} with an expert trace, "
                f"{self.rows - self.traced} without)")


def parse_maps(items: list[str]) -> dict[str, str]:
    """["messages=conversations", ...] -> {"messages": "conversations"}; ConvertError on a bad item."""
    maps = {}
    for item in items:
        field_name, sep, column = item.partition("=")
        if not sep or not field_name or not column:
            raise ConvertError(f"error: --map expects FIELD=COLUMN, got {item!r}")
        if field_name not in MAPPABLE_FIELDS:
            raise ConvertError(f"error: --map: unknown field {field_name!r} (fields: {', '.join(MAPPABLE_FIELDS)})")
        maps[field_name] = column
    return maps


# ---------------------------------------------------------------------------------------------
# Reading rows


def iter_source_rows(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line or row number, the row or an _Invalid) for every row of the input."""
    path = Path(path)
    if path.is_dir() or path.suffix == ".parquet":
        yield from _dataset_rows(path)
    elif path.suffix == ".json":
        yield from _json_rows(path)
    elif path.suffix in (".jsonl", ".ndjson"):
        yield from _jsonl_rows(path)
    else:
        raise ConvertError(f"error: {path}: unsupported input; give a .jsonl, .json or .parquet file, or a folder "
                           "written by `datasets` save_to_disk")


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    with open(path, "rb") as handle:
        for line_no, (raw, size) in enumerate(_lines(handle, DEFAULT_MAX_ROW_BYTES), start=1):
            if raw is not None and not raw.strip():
                continue
            try:
                _require(raw is not None, "<row>", f"{size:,} bytes, above the limit of {DEFAULT_MAX_ROW_BYTES:,}")
                yield line_no, _decode_line(raw, line_no)
            except _Invalid as exc:
                yield line_no, exc


def _json_rows(path: Path) -> Iterator[tuple[int, Any]]:
    text = path.read_bytes()
    try:
        data = json.loads(text)
    except UnicodeDecodeError:
        data = None
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # JSON lines in a .json file, as many datasets ship them
            yield from _jsonl_rows(path)
            return
        yield exc.lineno, _Invalid("<json>", f"not valid JSON ({exc.msg} at column {exc.colno})")
        return
    if data is None:
        yield from _jsonl_rows(path)  # reports the bad byte at its line
        return
    if not isinstance(data, list):
        yield 1, _Invalid("<json>", f"a .json input must be an array of rows, got {type(data).__name__}")
        return
    yield from enumerate(data, start=1)


def _dataset_rows(path: Path) -> Iterator[tuple[int, Any]]:
    import datasets

    if path.is_dir():
        try:
            data = datasets.load_from_disk(str(path))
        except FileNotFoundError as exc:
            raise ConvertError(f"error: {path}: not a folder written by `datasets` save_to_disk ({exc})") from None
        if isinstance(data, datasets.DatasetDict):
            if len(data) != 1:
                raise ConvertError(f"error: {path}: holds the splits {', '.join(data)}; convert one at a time "
                                   f"(pass {path / next(iter(data))})")
            data = next(iter(data.values()))
        yield from enumerate(data, start=1)
        return
    # A private cache: a one-off conversion should not leave an Arrow copy of the file behind.
    with tempfile.TemporaryDirectory() as cache:
        try:
            data = datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=cache)
        except Exception as exc:  # pyarrow's and datasets' many error types for an unreadable file
            raise ConvertError(f"error: {path}: cannot be read as Parquet ({type(exc).__name__}: {exc})") from None
        yield from enumerate(data, start=1)


# ---------------------------------------------------------------------------------------------
# Turn parsing shared by the formats


def _literal(text: str, where: str) -> Any:
    """JSON, else a Python literal (Hermes data often writes calls with single quotes)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise _Invalid(where, f"not valid JSON ({exc.msg} at column {exc.colno})") from None


def _text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        texts = []
        for i, part in enumerate(content):
            _require(isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str),
                     f"{where}[{i}]", "only text content parts are supported")
            texts.append(part["text"])
        return "".join(texts)
    raise _Invalid(where, f"must be a string, got {type(content).__name__}")


def _split_think(text: str) -> tuple[str, str]:
    """(reasoning, the rest) of assistant text; Qwen3 outputs may lack the opening <think>."""
    parts = [m.strip() for m in _THINK.findall(text)]
    rest = _THINK.sub("", text)
    if "</think>" in rest:
        head, _, rest = rest.partition("</think>")
        parts.insert(0, head.strip())
    return "\n\n".join(p for p in parts if p), rest.strip()


def _call(value: Any, where: str) -> dict:
    """{"name", "arguments"} from a call object whose arguments may be a JSON string."""
    _require(isinstance(value, dict), where, f"a tool call must be an object, got {type(value).__name__}")
    name = value.get("name")
    _require(isinstance(name, str) and bool(name), f"{where}.name", "must be a non-empty string")
    key = "arguments" if "arguments" in value else "parameters"
    _require(key in value, f"{where}.arguments", "missing")
    arguments = value[key]
    if isinstance(arguments, str):
        arguments = _literal(arguments, f"{where}.{key}") if arguments.strip() else {}
    _require(isinstance(arguments, dict), f"{where}.{key}", f"must be a JSON object, got {type(arguments).__name__}")
    return {"name": name, "arguments": arguments}


def _text_calls(text: str, where: str) -> tuple[list[dict], str]:
    """The <tool_call> blocks of assistant text, and the text without them."""
    calls = []
    for body in _TOOL_CALL.findall(text):
        value = _literal(body.strip(), f"{where}.<tool_call>")
        for item in value if isinstance(value, list) else [value]:
            calls.append(_call(item, f"{where}.<tool_call>"))
    rest = _TOOL_CALL.sub("", text)
    _require("<tool_call>" not in rest, where, "a <tool_call> block is not closed")
    return calls, rest.strip()


def _assistant(text: str, where: str, reasoning: str = "", calls: list[dict] | None = None) -> dict:
    think, text = _split_think(text)
    text_calls, text = _text_calls(text, where)
    reasoning = "\n\n".join(p for p in (reasoning.strip(), think) if p)
    msg: dict[str, Any] = {"role": "assistant", "content": text}
    if reasoning:
        msg["reasoning"] = reasoning
    if (calls or []) + text_calls:
        msg["tool_calls"] = (calls or []) + text_calls
    return msg


def _tool_results(text: str) -> list[dict]:
    """Tool turns from a tool turn's text: one per <tool_response> block, else the whole text."""
    blocks = _TOOL_RESPONSE.findall(text)
    out = []
    for body in [b.strip() for b in blocks] or [text]:
        msg: dict[str, Any] = {"role": "tool", "content": body}
        try:
            value = json.loads(body)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict) and isinstance(value.get("name"), str) and "content" in value:
            content = value["content"]
            msg = {"role": "tool", "name": value["name"],
                   "content": content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)}
        out.append(msg)
    return out


def _tools(value: Any, where: str) -> list[dict]:
    """OpenAI-style tool schemas from a list (or a JSON string) of schemas or bare functions."""
    if isinstance(value, str):
        value = _literal(value, where) if value.strip() else []
    _require(isinstance(value, list), where, f"must be a list of tool schemas, got {type(value).__name__}")
    tools = []
    for i, item in enumerate(value):
        _require(isinstance(item, dict), f"{where}[{i}]", "must be an object")
        fn = item.get("function") if item.get("type") == "function" else item
        _require(isinstance(fn, dict), f"{where}[{i}].function", "must be an object")
        fn = dict(fn)
        if isinstance(fn.get("parameters"), str):
            fn["parameters"] = _literal(fn["parameters"], f"{where}[{i}].parameters")
        tools.append({"type": "function", "function": fn})
    return tools


def _tools_from_system(text: str, where: str) -> list[dict]:
    blocks = _TOOLS_BLOCK.findall(text)
    if not blocks:
        return []
    body = blocks[0].strip()
    try:
        value = _literal(body, where)
    except _Invalid:  # one schema per line, as Qwen/Hermes templates print them
        value = [_literal(line, where) for line in body.splitlines() if line.strip()]
    return _tools(value if isinstance(value, list) else [value], where)


# ---------------------------------------------------------------------------------------------
# The formats: a row -> (turns, tools)


def _openai_turns(row: dict, col: str) -> list[dict]:
    messages = row.get(col)
    _require(isinstance(messages, list), col, f"must be a list of messages, got {type(messages).__name__}")
    turns = []
    for i, msg in enumerate(messages):
        where = f"{col}[{i}]"
        _require(isinstance(msg, dict), where, "must be an object")
        role = {"developer": "system"}.get(msg.get("role"), msg.get("role"))
        _require(role in ("system", "user", "assistant", "tool", "function"), f"{where}.role",
                 f"must be system, developer, user, assistant, tool or function, got {msg.get('role')!r}")
        content = _text(msg.get("content"), f"{where}.content")
        if role == "assistant":
            calls = []
            for j, call in enumerate(msg.get("tool_calls") or []):
                cw = f"{where}.tool_calls[{j}]"
                _require(isinstance(call, dict), cw, "must be an object")
                fn = call.get("function", call)
                out = _call(fn, f"{cw}.function" if "function" in call else cw)
                if call.get("id") is not None:
                    out["id"] = str(call["id"])
                calls.append(out)
            if msg.get("function_call"):
                calls.append(_call(msg["function_call"], f"{where}.function_call"))
            reasoning = msg.get("reasoning_content") or msg.get("reasoning") or ""
            _require(isinstance(reasoning, str), f"{where}.reasoning_content", "must be a string")
            turns.append(_assistant(content, where, reasoning, calls))
        elif role in ("tool", "function"):
            out = {"role": "tool", "content": content}
            for key in ("tool_call_id", "name"):
                if msg.get(key) is not None:
                    out[key] = str(msg[key])
            turns.append(out)
        else:
            turns.append({"role": role, "content": content})
    return turns


def _conversation_turns(row: dict, col: str) -> list[dict]:
    """Hermes and ShareGPT turns ({from, value} or {role, content})."""
    conversation = row.get(col)
    _require(isinstance(conversation, list), col, f"must be a list of turns, got {type(conversation).__name__}")
    turns: list[dict] = []
    for i, turn in enumerate(conversation):
        where = f"{col}[{i}]"
        _require(isinstance(turn, dict), where, "must be an object")
        speaker = turn.get("from", turn.get("role"))
        role = _ROLES.get(speaker.lower() if isinstance(speaker, str) else speaker)
        _require(role is not None, f"{where}.from", f"unknown speaker {speaker!r} (known: {', '.join(_ROLES)})")
        text = _text(turn.get("value", turn.get("content")), f"{where}.value")
        if role == "function_call":  # ShareGPT (LLaMA-Factory): the call as JSON, thoughts in the gpt turn before
            value = _literal(text, f"{where}.value")
            calls = [_call(c, f"{where}.value") for c in (value if isinstance(value, list) else [value])]
            last = turns[-1] if turns else None
            if last is not None and last["role"] == "assistant" and "tool_calls" not in last:
                last["tool_calls"] = calls
            else:
                turns.append({"role": "assistant", "content": "", "tool_calls": calls})
        elif role == "assistant":
            turns.append(_assistant(text, where))
        elif role == "tool":
            turns += _tool_results(text)
        else:
            turns.append({"role": role, "content": text})
    return turns


def _name_tool_results(turns: list[dict]) -> None:
    """A tool result without `name` or `tool_call_id` answers the next unanswered call of the
    assistant turn before it."""
    pending: list[str] = []
    for msg in turns:
        if msg["role"] == "assistant":
            pending = [c["name"] for c in msg.get("tool_calls", [])]
        elif msg["role"] == "tool" and "tool_call_id" not in msg:
            if "name" in msg:
                if msg["name"] in pending:
                    pending.remove(msg["name"])
            elif pending:
                msg["name"] = pending.pop(0)


def _split(turns: list[dict], where: str) -> tuple[list[dict], list[dict] | None]:
    first = next((i for i, m in enumerate(turns) if m["role"] == "assistant"), None)
    if first is None:
        return turns, None
    trace = turns[first:]
    for i, msg in enumerate(trace):
        _require(msg["role"] in ("assistant", "tool"), where,
                 f"a {msg['role']} turn after the first assistant turn (turn {first + i}): the trace holds "
                 "assistant and tool turns only, so one row is one user request")
    return turns[:first], trace


def convert_row(row: Any, fmt: str, maps: dict[str, str], default_id: str) -> dict:
    """One source row -> a task/trace record (validated); raise _Invalid naming the field."""
    _require(isinstance(row, dict), "<row>", f"must be an object, got {type(row).__name__}")
    col = {"id": "id", "tools": "tools", "system": "system", **maps}
    if "messages" not in maps:
        col["messages"] = "messages" if fmt == "openai" or "conversations" not in row else "conversations"
    for field_name, column in maps.items():
        _require(column in row, column, f"missing (--map {field_name}={column}); the row has {', '.join(row)}")
    _require(col["messages"] in row, col["messages"],
             f"missing; the row has {', '.join(map(str, row)) or 'no columns'} (rename one with --map messages=COLUMN)")
    turns = _openai_turns(row, col["messages"]) if fmt == "openai" else _conversation_turns(row, col["messages"])
    if fmt != "openai" and isinstance(row.get(col["system"]), str) and row[col["system"]].strip():
        turns.insert(0, {"role": "system", "content": row[col["system"]]})
    if row.get(col["tools"]) is not None:
        tools = _tools(row[col["tools"]], col["tools"])
    elif fmt == "hermes" and turns and turns[0]["role"] == "system":
        tools = _tools_from_system(turns[0]["content"], f"{col['messages']}[0].<tools>")
    else:
        tools = []
    _name_tool_results(turns)
    messages, trace = _split(turns, col["messages"])
    task_id = row.get(col["id"])
    task_id = default_id if task_id is None else str(task_id)
    consumed = {col["id"], col["messages"], col["tools"]} | ({col["system"]} if fmt != "openai" else set())
    metadata = {k: v for k, v in row.items() if k not in consumed}
    clash = sorted(set(metadata) & set(RESERVED_FIELDS))
    _require(not clash, clash[0] if clash else "", "the input has a column of this name; rename it with --map "
             "or drop it first")
    try:
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise _Invalid("<metadata>", f"a column is not JSON-serializable ({exc})") from None
    record = {"id": task_id, "messages": messages, "tools": tools, **metadata}
    if trace is not None:
        record["trace"] = trace
    task_from_record(record)
    return record


def convert_file(path: str | Path, out: str | Path, fmt: str, maps: dict[str, str] | None = None) -> ConvertResult:
    """Convert every row or none: ConvertError lists the bad rows; OUT is written atomically."""
    if fmt not in FORMATS:
        raise ConvertError(f"error: unknown format {fmt!r} (formats: {', '.join(FORMATS)})")
    path = Path(path)
    if not path.exists():
        raise ConvertError(f"error: {path}: no such file or directory")
    lines, errors, seen = [], [], {}
    bad = traced = 0
    for n, row in iter_source_rows(path):
        try:
            if isinstance(row, _Invalid):
                raise row
            record = convert_row(row, fmt, maps or {}, f"{path.stem}-{n}")
            _require(record["id"] not in seen, "id", f"duplicate id {record['id']!r} (first at {path.name}:{seen.get(record['id'])})")
            try:
                line = json.dumps(record, ensure_ascii=False, allow_nan=False)
            except (TypeError, ValueError) as exc:  # NaN, Infinity or a non-JSON value
                raise _Invalid("<row>", f"not JSON-serializable ({exc})") from None
            size = len(line.encode("utf-8"))
            _require(size <= DEFAULT_MAX_ROW_BYTES, "<row>", f"converts to {size:,} bytes, above the loader's limit "
                     f"of {DEFAULT_MAX_ROW_BYTES:,}")
            seen[record["id"]] = n
            traced += "trace" in record
            lines.append(line)
        except _Invalid as exc:
            bad += 1
            if len(errors) < MAX_SHOWN_ERRORS:
                errors.append(f"{path}:{n}: {exc.field_name}: {exc.reason}")
    if bad:
        more = [f"... and {bad - len(errors)} more"] if bad > len(errors) else []
        raise ConvertError("\n".join(errors + more + [f"{path}: {bad} of {bad + len(lines)} rows cannot be "
                                                      f"converted; nothing was written"]))
    if not lines:
        raise ConvertError(f"error: {path}: no rows to convert (the input is empty)")
    _write_atomic(Path(out), lines)
    return ConvertResult(out=str(out), rows=len(lines), traced=traced)


def _write_atomic(out: Path, lines: list[str]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for line in lines:
                handle.write(line + "\n")
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise

