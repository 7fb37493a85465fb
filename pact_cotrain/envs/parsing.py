"""Hermes / Qwen2.5-style tool-call parsing.

Models write calls as

    <tool_call>
    {"name": "get_population", "arguments": {"city": "Varnhold"}}
    </tool_call>

zero or more times per assistant turn, around free text. `parse_tool_calls` splits a turn into
valid calls, per-block errors and the remaining text; it never raises on any str.

Block rule: every `<tool_call>` opens a block that ends at the next `</tool_call>`, or, when
that tag is missing, just before the next `<tool_call>` (or at the end of the text). A stray
`</tool_call>` with no opening tag is reported as an error block of its own, so

    has_call_markup  <=>  len(calls) + len(errors) > 0,   one entry per block, in text order.

A block is a call when its body is one JSON object with a non-empty string "name" and
"arguments" that is an object, a JSON-encoded object string, null or absent (both read as
{}). With tool schemas, a call is also checked against its schema: the name must be offered,
required parameters present, and each given parameter's value of the schema's JSON type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pact_cotrain.envs.base import ToolCall

OPEN_TAG = "<tool_call>"
CLOSE_TAG = "</tool_call>"

_FENCE = "```"


@dataclass
class CallError:
    raw: str  # the block as written, tags included
    name: str | None  # the tool name when the block got that far, else None (unparseable)
    reason: str


@dataclass
class ParseResult:
    calls: list[ToolCall] = field(default_factory=list)
    errors: list[CallError] = field(default_factory=list)
    has_call_markup: bool = False
    content: str = ""  # the text with every block (and stray close tag) removed, stripped
    ordered: list[ToolCall | CallError] = field(default_factory=list)  # calls and errors in text order

    @property
    def n_blocks(self) -> int:
        return len(self.ordered)


def format_tool_call(name: str, arguments: dict) -> str:
    """The canonical block the expert traces and the chat template use."""
    payload = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"{OPEN_TAG}\n{payload}\n{CLOSE_TAG}"


def render_assistant_text(message: dict) -> str:
    """The text an assistant message stands for: reasoning, content, then one block per call.

    Used to replay expert traces through an environment as if a model had written them.
    """
    parts = [message.get("reasoning") or "", message.get("content") or ""]
    parts += [format_tool_call(c["name"], c["arguments"]) for c in message.get("tool_calls") or []]
    return "\n\n".join(p.strip() for p in parts if p and p.strip())


def split_reasoning(text: str) -> tuple[str, str]:
    """Split a Qwen3-style turn into (thinking, visible text).

    Everything up to the last `</think>` is thinking (the opening `<think>` may sit in the
    prompt, so it is optional). An unclosed `<think>` means the turn never left thinking, so
    nothing is visible. Calls are only read from the visible part, as vLLM's reasoning
    parser does before its tool parser.
    """
    if "</think>" in text:
        head, _, tail = text.rpartition("</think>")
        return head.split("<think>", 1)[-1].strip(), tail.strip()
    if "<think>" in text:
        head, _, tail = text.partition("<think>")
        return tail.strip(), head.strip()
    return "", text.strip()


def error_observation(err: CallError) -> str:
    """The tool message the model sees for a bad block (FTRL's wording)."""
    if err.name:
        return f"an error occurred when calling {err.name}: {err.reason}"
    return f"an error occurred when parsing the tool call: {err.reason}"


def _split_blocks(text: str) -> tuple[list[tuple[str, str, bool]], list[str]]:
    """Return ([(raw, body, is_stray_close)], outside pieces) for a text."""
    blocks: list[tuple[str, str, bool]] = []
    outside: list[str] = []
    cache: dict[str, tuple[int, int]] = {}

    def find(tag: str, start: int) -> int:
        # Memoised str.find: the next tag found from an earlier start is still next unless we
        # moved past it, which keeps many unclosed blocks linear instead of quadratic.
        hit = cache.get(tag)
        if hit is not None and hit[0] <= start and (hit[1] >= start or hit[1] < 0):
            return hit[1]
        found = text.find(tag, start)
        cache[tag] = (start, found)
        return found

    pos = 0
    while True:
        i_open = find(OPEN_TAG, pos)
        i_close = find(CLOSE_TAG, pos)
        if i_close >= 0 and (i_open < 0 or i_close < i_open):  # a close tag before any open one
            outside.append(text[pos:i_close])
            end = i_close + len(CLOSE_TAG)
            blocks.append((text[i_close:end], "", True))
            pos = end
            continue
        if i_open < 0:
            outside.append(text[pos:])
            break
        outside.append(text[pos:i_open])
        start = i_open + len(OPEN_TAG)
        nxt_close = find(CLOSE_TAG, start)
        nxt_open = find(OPEN_TAG, start)
        if nxt_close >= 0 and (nxt_open < 0 or nxt_close < nxt_open):
            body, end = text[start:nxt_close], nxt_close + len(CLOSE_TAG)
        else:  # no closing tag before the next block: the block runs up to it (or the end)
            end = nxt_open if nxt_open >= 0 else len(text)
            body = text[start:end]
        blocks.append((text[i_open:end], body, False))
        pos = end
    return blocks, outside


def _json_type_ok(value, expected) -> bool:
    """JSON-schema type check; bool is not a number, integer means a Python int."""
    if isinstance(expected, list):  # e.g. ["string", "null"]
        return any(_json_type_ok(value, t) for t in expected)
    if expected == "string":
        return isinstance(value, str)
    if expected == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected == "boolean":
        return isinstance(value, bool)
    if expected == "array":
        return isinstance(value, list)
    if expected == "object":
        return isinstance(value, dict)
    if expected == "null":
        return value is None
    return True  # a type this checker does not know is not held against the call


def _schema_problems(name: str, arguments: dict, schemas: dict[str, dict]) -> list[str]:
    if name not in schemas:
        offered = ", ".join(sorted(schemas)) or "none"
        return [f"unknown tool '{name}' (available tools: {offered})"]
    params = schemas[name]
    params = params if isinstance(params, dict) else {}
    props = params.get("properties")
    props = props if isinstance(props, dict) else {}
    required = params.get("required")
    required = required if isinstance(required, list) else []
    problems = [f"missing required parameter '{p}'" for p in required if isinstance(p, str) and p not in arguments]
    for key, value in arguments.items():
        spec = props.get(key)
        if isinstance(spec, dict) and "type" in spec and not _json_type_ok(value, spec["type"]):
            problems.append(f"parameter '{key}' must be of type {spec['type']}, got {_json_name(value)}")
    return problems


def _json_name(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _schema_map(tools: list[dict] | None) -> dict[str, dict] | None:
    if tools is None:
        return None
    schemas: dict[str, dict] = {}
    for tool in tools:
        fn = tool.get("function", tool) if isinstance(tool, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            schemas[fn["name"]] = fn.get("parameters") or {}
    return schemas


def _unfence(body: str) -> str:
    """A body wrapped in a markdown fence (```json ... ```) is read as its inside: a harmless slip.

    Done by hand, not by regex, so a long run of whitespace cannot cause quadratic backtracking.
    """
    if len(body) >= 6 and body.startswith(_FENCE) and body.endswith(_FENCE):
        inner = body[3:-3]
        first, nl, rest = inner.partition("\n")
        if nl and first.strip().isalnum():  # drop a language tag such as `json`
            inner = rest
        return inner.strip()
    return body


def _parse_block(raw: str, body: str, schemas: dict[str, dict] | None) -> ToolCall | CallError:
    body = _unfence(body.strip())
    if not body:
        return CallError(raw, None, "empty tool call")
    try:
        obj = json.loads(body)
    except RecursionError:  # deeply nested input; json signals it this way
        return CallError(raw, None, "invalid JSON: nested too deeply")
    except ValueError as exc:
        return CallError(raw, None, f"invalid JSON: {exc}")
    if not isinstance(obj, dict):
        return CallError(raw, None, 'expected a JSON object {"name": ..., "arguments": {...}}')
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        return CallError(raw, None, 'the tool call has no "name" string')
    name = name.strip()
    arguments = obj.get("arguments", obj.get("parameters"))
    if arguments is None:
        arguments = {}
    if isinstance(arguments, str):  # some models JSON-encode the arguments a second time
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except (ValueError, RecursionError) as exc:
            return CallError(raw, name, f"arguments is a string that is not valid JSON: {exc}")
    if not isinstance(arguments, dict):
        return CallError(raw, name, f"arguments must be a JSON object, got {_json_name(arguments)}")
    if schemas is not None:
        problems = _schema_problems(name, arguments, schemas)
        if problems:
            return CallError(raw, name, "; ".join(problems))
    return ToolCall(name=name, arguments=arguments, raw=raw)


def parse_tool_calls(text: str, tools: list[dict] | None = None) -> ParseResult:
    """Parse every tool-call block of one assistant turn; never raises on a str."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    schemas = _schema_map(tools)
    blocks, outside = _split_blocks(text)
    result = ParseResult(has_call_markup=bool(blocks))
    for raw, body, stray in blocks:
        if stray:
            item: ToolCall | CallError = CallError(raw, None, f"{CLOSE_TAG} without an opening {OPEN_TAG}")
        else:
            try:
                item = _parse_block(raw, body, schemas)
            except Exception as exc:  # last line of defence: model output must never crash the env
                item = CallError(raw, None, f"could not read the tool call ({type(exc).__name__})")
        result.ordered.append(item)
        (result.calls if isinstance(item, ToolCall) else result.errors).append(item)
    # Pieces are joined with a newline so that removing a block never glues two words (or tag halves).
    result.content = "\n".join(p.strip() for p in outside if p.strip())
    return result
