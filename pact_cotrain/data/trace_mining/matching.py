"""When a tool output counts as producing an expected string: FTRL's rule made strict for short
strings (``strong_match``), error-looking outputs, and arguments that merely echo the string."""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from pact_cotrain.rewards.ftrl import matches, normalise

from .values import _MISSING, _flat_text

_ERRORISH = re.compile(
    r"(^\W*error\b)|(['\"]error['\"]\s*:)|\bnot found\b|\bno [\w ]{0,40}?(found|available)\b|\binvalid\b|"
    r"\bno matching\b|\bunable to\b|\bnot available\b|\bunsupported\b|\bno data\b|\bno information\b|"
    r"\bcould not\b", re.IGNORECASE)


def _looks_like_error(output: str) -> bool:
    return bool(_ERRORISH.search(output))


def _output_leaves(output: str) -> list[str]:
    """The values (not the keys) of a JSON or Python-literal output, else the output itself."""
    data: Any = _MISSING
    try:
        data = json.loads(output)
    except (ValueError, RecursionError):
        try:
            data = ast.literal_eval(output.strip()) if len(output) < 20000 else _MISSING
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            data = _MISSING
    if data is _MISSING or isinstance(data, str):
        return [output]
    out: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, (list, tuple, set)):
            for x in v:
                walk(x)
        elif v is not None:
            out.append(str(v))

    walk(data)
    return out


def strong_match(expected: str, output: str) -> bool:
    """FTRL's `matches`, and for a short expected string (3 characters or fewer, where a plain
    substring test is nearly always true: 's' is in "results") a whole-token match in one of the
    output's values. Used to choose mined calls; scoring itself stays FTRL's rule."""
    if not matches(expected, output):
        return False
    exp = normalise(expected).strip()
    if len(exp) > 3:
        return True
    return any(_token_in(exp, normalise(v)) for v in _output_leaves(output))


def _echoes(expected: str, arguments: dict) -> bool:
    """The expected string is already in the arguments (a short one as a whole token): the tool
    may just repeat it."""
    texts = [_flat_text(v) for v in arguments.values()]
    if not matches(expected, " | ".join(texts)):
        return False
    exp = normalise(expected).strip()
    if len(exp) > 3:
        return True
    return any(_token_in(exp, normalise(t)) for t in texts)


def _token_in(token: str, text: str) -> bool:
    return re.search(r"(?<![0-9a-z])" + re.escape(token) + r"(?![0-9a-z])", text) is not None
