"""Best-first values: a per-parameter set of candidate values with priorities, and ranked
combinations of candidate lists."""

from __future__ import annotations

import itertools
import math
from typing import Any

from .values import _MISSING, _jsonable, _key


class _Candidates:
    """Per-parameter candidate values with priorities; the best priority of a value wins."""

    def __init__(self) -> None:
        self.by_param: dict[str, dict[str, tuple[float, int, Any]]] = {}
        self._n = itertools.count()

    def add(self, param: str, value: Any, prio: float) -> None:
        value = _jsonable(value)
        if value is _MISSING:
            return
        slot = self.by_param.setdefault(param, {})
        k = _key(value)
        old = slot.get(k)
        if old is None or prio < old[0]:
            slot[k] = (prio, old[1] if old else next(self._n), value)

    def ranked(self, param: str) -> list[tuple[float, Any]]:
        items = sorted(self.by_param.get(param, {}).values(), key=lambda x: (x[0], x[1]))
        return [(p, v) for p, _, v in items]


def _ranked_products(lists: list[list[Any]], limit: int) -> list[tuple]:
    """Up to `limit` combinations, best (lowest summed rank) first."""
    if not lists:
        return [()]
    if any(not lst for lst in lists):
        return []
    sizes = [len(lst) for lst in lists]
    # trim the longest lists until the full product is affordable to sort
    while math.prod(sizes) > 200_000:
        i = sizes.index(max(sizes))
        sizes[i] = max(1, sizes[i] * 2 // 3)
    combos = sorted(itertools.product(*[range(n) for n in sizes]), key=lambda idx: (sum(idx), max(idx)))
    return [tuple(lists[i][j] for i, j in enumerate(idx)) for idx in combos[:limit]]
