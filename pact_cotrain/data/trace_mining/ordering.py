"""Call ordering: steps of mined calls by dependency depth.

Ordering. A call whose argument equals (or is a ", "-piece of) another goal's expected output
depends on that goal (a strong edge); one that holds it as whole words gets a weak edge, kept
only when it closes no cycle. Calls are grouped into steps by dependency depth, so independent
calls share a step (parallel calls); a call whose output would also match an earlier expected
string of its tool never runs before that string's call (FTRL credits the first unsolved string
an output matches). If that layout does not verify, one call per step is tried, then the row's
order.
"""

from __future__ import annotations

import re
from typing import Any

from pact_cotrain.rewards.ftrl import matches, normalise

from .goals import Goal, MinedCall
from .values import _numbers_in


def _pieces(text: str) -> list[str]:
    return [normalise(p).strip() for p in str(text).split(", ") if p.strip()]


def _depends(call: MinedCall, other: Goal, weak: bool = True) -> bool:
    """The call's arguments carry `other`'s expected output: equal to it or to one of its ", "
    pieces (strong), or holding it as whole words (weak: only when `weak`)."""
    if other.order == call.goal.order:
        return False
    exp = normalise(other.expected).strip()
    if not exp:
        return False
    pieces = set(_pieces(other.expected)) | {exp}
    exp_numbers = _numbers_in(other.expected)
    words = re.compile(r"(?<!\w)" + re.escape(exp) + r"(?!\w)")

    def visit(value: Any) -> bool:
        if isinstance(value, str):
            v = normalise(value).strip()
            if v in pieces:
                return True
            return (weak and len(exp) >= 3 and bool(words.search(v))
                    and not matches(call.goal.expected, value))
        if isinstance(value, bool):
            return False
        if isinstance(value, (int, float)):
            # a one-digit number (a precision, a count) is a dependency only as a weak edge
            return len(exp_numbers) == 1 and value == exp_numbers[0] and (len(exp) >= 2 or weak)
        if isinstance(value, list):
            return any(visit(v) for v in value)
        if isinstance(value, dict):
            return any(visit(v) for v in value.values())
        return False

    return visit(call.arguments)


def _levels(by_order: dict[int, MinedCall]) -> tuple[dict[int, int], bool]:
    """Dependency depth per goal; a cycle is broken at its earliest goal (and reported)."""
    level: dict[int, int] = {}
    remaining = sorted(by_order)
    cyclic = False
    while remaining:
        ready = [o for o in remaining if all(d in level for d in by_order[o].deps)]
        if not ready:  # a cycle: release the goal with the fewest unresolved dependencies
            ready = [min(remaining, key=lambda o: (sum(d not in level for d in by_order[o].deps), o))]
            cyclic = True
        for o in ready:
            level[o] = 1 + max((level[d] for d in by_order[o].deps if d in level), default=-1)
            remaining.remove(o)
    return level, cyclic


def _cyclic_dep(call: MinedCall, by_order: dict[int, MinedCall]) -> bool:
    """The call reaches itself through its dependencies."""
    seen: set[int] = set()
    stack = list(call.deps)
    while stack:
        o = stack.pop()
        if o == call.goal.order:
            return True
        if o in seen or o not in by_order:
            continue
        seen.add(o)
        stack.extend(by_order[o].deps)
    return False


def order_calls(calls: list[MinedCall], goals: list[Goal]) -> list[list[MinedCall]]:
    """Steps of calls by dependency depth (independent calls share a step); within a step, row order."""
    by_order = {c.goal.order: c for c in calls}
    level: dict[int, int] = {}
    for c in calls:  # strong edges (equal to an expected string or one of its pieces) first
        c.deps = {g.order for g in goals if g.order in by_order and _depends(c, g, weak=False)}
    for c in calls:  # then whole-word edges, each only when it closes no cycle
        for g in goals:
            if g.order in by_order and g.order not in c.deps and _depends(c, g):
                c.deps.add(g.order)
                if _cyclic_dep(c, by_order):
                    c.deps.discard(g.order)
    level, _ = _levels(by_order)
    for _ in range(4 * len(calls) + 1):
        # FTRL credits an output to the first unsolved string of its tool that it matches: a call
        # whose output also matches an earlier string of the same tool must not run before it;
        # a call raised that way raises the calls that depend on it.
        changed = False
        for c in calls:
            for d in calls:
                if (c.goal.tool == d.goal.tool and d.goal.index < c.goal.index
                        and level[c.goal.order] < level[d.goal.order] and matches(d.goal.expected, c.output)):
                    level[c.goal.order] = level[d.goal.order]
                    changed = True
            floor = 1 + max((level[d] for d in c.deps if d in level), default=-1)
            if level[c.goal.order] < floor and not _cyclic_dep(c, by_order):
                level[c.goal.order] = floor
                changed = True
        if not changed:
            break
    steps: dict[int, list[MinedCall]] = {}
    for c in calls:
        steps.setdefault(level[c.goal.order], []).append(c)
    return [sorted(steps[k], key=lambda c: c.goal.order) for k in sorted(steps)]
