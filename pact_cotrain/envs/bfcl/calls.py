"""Calls: ours <-> BFCL call strings. Parsed calls become BFCL's `name(k=repr(v),...)` strings,
ground-truth strings become {name, arguments} (gold calls), and calls whose arguments would hang
the process are refused before execution."""

from __future__ import annotations

import ast
import inspect
import keyword
from typing import Any, Iterable, Sequence

from pact_cotrain.data.trace_format import Task
from pact_cotrain.envs.parsing import format_tool_call

from .wheel import _backend_class, _method_owner

# Arguments that would make a backend call run (practically) forever; refused before execution.
MAX_PRECISION = 1000
MAX_INT_EXPONENT = 10_000
MAX_DECIMAL_PLACES = 1000


def _check_value(value: Any, depth: int = 0) -> None:
    if depth > 50:
        raise ValueError("argument nested too deeply")
    if isinstance(value, list):
        for v in value:
            _check_value(v, depth + 1)
    elif isinstance(value, dict):
        for v in value.values():
            _check_value(v, depth + 1)


def to_bfcl_call(name: str, arguments: dict) -> str:
    """BFCL's call string for one parsed call (`name(k=repr(v),...)`, BFCL's convert_to_function_call
    form). Raises ValueError for names or argument names that are not Python identifiers."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(f"'{name}' is not a valid function name")
    parts = []
    for key, value in arguments.items():
        if not isinstance(key, str) or not key.isidentifier() or keyword.iskeyword(key):
            raise ValueError(f"'{key}' is not a valid argument name")
        _check_value(value)
        parts.append(f"{key}={value!r}")
    return f"{name}({','.join(parts)})"


def parse_bfcl_call(call: str, involved_classes: Sequence[str]) -> dict:
    """A ground-truth call string (`sort('a.txt')`, `cd(folder='x')`) -> {"name", "arguments"}, with
    positional arguments named from the backend method's signature."""
    node = ast.parse(call.strip(), mode="eval").body
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise ValueError(f"not a plain function call: {call!r}")
    name = node.func.id
    arguments: dict = {}
    if node.args:
        owner = _method_owner(name, involved_classes)
        if owner is None:
            raise ValueError(f"{call!r}: positional arguments to a function no involved class has")
        params = [p for p in inspect.signature(getattr(_backend_class(owner), name)).parameters.values()
                  if p.name != "self"]
        for param, arg in zip(params, node.args):
            arguments[param.name] = ast.literal_eval(arg)
    for kw in node.keywords:
        if kw.arg is None:
            raise ValueError(f"{call!r}: ** arguments are not supported")
        arguments[kw.arg] = ast.literal_eval(kw.value)
    return {"name": name, "arguments": arguments}


def gold_calls(task: Task) -> list[list[dict]]:
    """The ground truth as [[{"name", "arguments"}] per user turn]."""
    involved = task.metadata["involved_classes"]
    return [[parse_bfcl_call(c, involved) for c in turn] for turn in task.metadata["ground_truth"]]


def gold_turn_text(calls: Iterable[dict]) -> str:
    """An assistant turn (our tool-call text format) making the given calls."""
    return "\n".join(format_tool_call(c["name"], c["arguments"]) for c in calls)


def _refusal(name: str, arguments: dict) -> str | None:
    """A reason to refuse a call whose arguments would hang the process, else None."""

    def big(key: str, limit: int) -> bool:
        value = arguments.get(key)
        return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > limit

    if big("precision", MAX_PRECISION):
        return f"precision must be at most {MAX_PRECISION}"
    if big("decimal_places", MAX_DECIMAL_PLACES):
        return f"decimal_places must be at most {MAX_DECIMAL_PLACES} in absolute value"
    if name == "power":
        base, exponent = arguments.get("base"), arguments.get("exponent")
        if isinstance(base, int) and isinstance(exponent, int) and abs(exponent) > MAX_INT_EXPONENT \
                and abs(base) > 1:
            return f"an integer exponent must be at most {MAX_INT_EXPONENT} in absolute value"
    return None
