"""Tool-call helpers shared by the baseline rewards (`toolrl`, `matchtir`).

A call is `{"name": str, "arguments": dict}` (the trace format of `pact_cotrain.data.trace_format`,
without the optional `id`). A *turn* is the list of calls one assistant message makes; a trajectory
is a list of turns, one per assistant message, the final answer (no calls) included as `[]`.

Contents:

* `gold_turns_from_trace(trace)` - an expert trace -> one list of calls per assistant message.
* `value_match(a, b)` - normalised argument-value equality:
    - strings: case-insensitive, leading/trailing whitespace stripped and inner runs of
      whitespace collapsed ("  New  York" == "new york");
    - numbers: compared numerically (1 == 1.0), with `math.isclose(rel_tol=1e-9, abs_tol=1e-9)`;
      a number also matches a string that parses as that number (3 == "3.0"), and two strings
      that both parse as finite numbers are compared numerically ("3" == "3.00");
    - booleans: only equal to booleans or to the strings "true"/"false" (any case), never to
      0/1 (a bool is not treated as a number);
    - None: only equal to None;
    - dicts: same keys (exact) and every value `value_match`-es, recursively;
    - lists/tuples: same length and element-wise `value_match` in order (argument lists are
      ordered data, e.g. coordinates, so no set semantics);
    - anything else: `==`.
* `multiset_jaccard(a, b)` - |A ∩ B| / |A ∪ B| over multisets, 1.0 when both are empty.
* `optimal_assignment(scores)` - exact maximum-weight assignment on a rectangular matrix
  (scipy.optimize.linear_sum_assignment).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any, Iterable, Sequence

_WS = re.compile(r"\s+")


def gold_turns_from_trace(trace: list[dict]) -> list[list[dict]]:
    """One list of `{"name", "arguments"}` calls per assistant message of `trace`, in order.

    Tool (and any other non-assistant) messages are skipped. An assistant message without calls
    (the final answer) gives `[]` and is kept, so the gold trajectory has as many turns as the
    expert has assistant messages. Calls are copied (`id` dropped, `arguments` shallow-copied).
    """
    turns: list[list[dict]] = []
    for msg in trace:
        if msg.get("role") != "assistant":
            continue
        calls = msg.get("tool_calls") or []
        turns.append([{"name": c["name"], "arguments": dict(c.get("arguments") or {})} for c in calls])
    return turns


def _norm_str(s: str) -> str:
    return _WS.sub(" ", s.strip()).casefold()


def _as_number(x: Any) -> float | None:
    """A finite float for ints/floats and numeric strings; None otherwise (bools excluded)."""
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, str):
        try:
            f = float(x.strip())
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


def value_match(a: Any, b: Any) -> bool:
    """Normalised equality of two argument values (rules in the module docstring)."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        if isinstance(a, bool) and isinstance(b, bool):
            return a == b
        other, flag = (b, a) if isinstance(a, bool) else (a, b)
        return isinstance(other, str) and _norm_str(other) == ("true" if flag else "false")
    if isinstance(a, dict) or isinstance(b, dict):
        if not (isinstance(a, dict) and isinstance(b, dict)) or set(a) != set(b):
            return False
        return all(value_match(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        if not (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple))) or len(a) != len(b):
            return False
        return all(value_match(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) or isinstance(b, (int, float)):
        fa, fb = _as_number(a), _as_number(b)
        if fa is None or fb is None:
            return a == b  # e.g. NaN/inf, or a number against a non-numeric string
        return math.isclose(fa, fb, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, str) and isinstance(b, str):
        if _norm_str(a) == _norm_str(b):
            return True
        fa, fb = _as_number(a), _as_number(b)
        return fa is not None and fb is not None and math.isclose(fa, fb, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def multiset_jaccard(a: Iterable[Any], b: Iterable[Any]) -> float:
    """|A ∩ B| / |A ∪ B| with multiplicities (Counter min / max); 1.0 when both are empty."""
    ca, cb = Counter(a), Counter(b)
    union = sum((ca | cb).values())
    if union == 0:
        return 1.0
    return sum((ca & cb).values()) / union


def optimal_assignment(scores: Sequence[Sequence[float]]) -> list[tuple[int, int]]:
    """Rows/columns pairs of a maximum-total-score assignment of an n x m matrix.

    Every row is assigned when n <= m, every column when n > m (min(n, m) pairs, sorted by row).
    Callers drop the pairs they do not count as matches (e.g. score 0). Exact: scipy's
    `linear_sum_assignment` (maximize=True).
    """
    from scipy.optimize import linear_sum_assignment

    if not scores or not len(scores[0]):
        return []
    rows, cols = linear_sum_assignment([[float(x) for x in row] for row in scores], maximize=True)
    return sorted(zip(rows.tolist(), cols.tolist()))
