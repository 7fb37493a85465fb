"""JSON-value helpers of trace mining: a missing-value marker, numbers in text, values as text,
JSON-safe copies and their canonical keys."""

from __future__ import annotations

import json
import math
import re
from typing import Any

_MISSING = object()

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _flat_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _numbers_in(text: str) -> list[int | float]:
    out: list[int | float] = []
    for match in _NUMBER.findall(text):
        raw = match.replace(",", "")
        try:
            value = float(raw) if "." in raw else int(raw)
        except ValueError:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            continue
        out.append(value)
    return out


def _jsonable(value: Any) -> Any:
    """Tuples -> lists, sets -> sorted lists; _MISSING when not JSON-serialisable."""
    try:
        return json.loads(json.dumps(value, default=_json_default, allow_nan=False))
    except (TypeError, ValueError):
        return _MISSING


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    raise TypeError(type(value).__name__)


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)
