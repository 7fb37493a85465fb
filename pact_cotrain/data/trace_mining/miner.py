"""Mining: find, per goal, a call whose sandboxed output produces the expected string.

Candidate calls (joint values, then required parameters, then one or all hinted optional
parameters added) are checked against the tool schema the way the environment checks them and
run in the sandbox (never here) until an output matches a (``strong_match``: FTRL's rule, plus a
whole-token test for strings of 3 characters or fewer, where a substring test is meaningless).
A match whose output looks like an error message is refused; one that only echoes a from the
arguments is kept only when nothing cleaner is found (``clean_calls`` in the report). ToolHop
tools defined twice under one name are mined per definition.

A row is mined in two rounds: the second offers values read from the outputs of the first
round's calls.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

from pact_cotrain.data.readers import tool_source
from pact_cotrain.data.trace_format import Task
from pact_cotrain.envs.parsing import format_tool_call, parse_tool_calls
from pact_cotrain.rewards.ftrl import matches, normalise
from pact_cotrain.sandbox import ToolSandbox

from .candidates import _Context, _param_candidates, _recase
from .goals import Goal, MinedCall, ftrl_goals, toolhop_goals
from .hints import ToolHints
from .matching import _echoes, _looks_like_error, strong_match
from .ranking import _ranked_products
from .values import _jsonable, _key, _numbers_in

MAX_CALLS_PER_GOAL = 4000  # sandbox calls one goal may spend


class _Executor:
    """Runs a candidate call the way the environment would: schema check, then the sandbox."""

    def __init__(self, task: Task, sandbox: ToolSandbox, bench: str):
        self.task = task
        self.sandbox = sandbox
        self.bench = bench
        self.calls = 0

    def valid(self, tool: str, arguments: dict) -> bool:
        text = format_tool_call(tool, arguments)
        if self.bench == "ftrl":
            parsed = parse_tool_calls(text, self.task.tools)
        else:
            from pact_cotrain.envs.toolhop import parse_calls

            parsed = parse_calls(text, self.task.tools)
        return len(parsed.calls) == 1

    def run(self, tool: str, arguments: dict) -> tuple[str, bool]:
        self.calls += 1
        if self.bench == "ftrl":
            codes = self.task.metadata.get("codes") or {}
        else:
            source = tool_source(self.task, tool, arguments)
            codes = {tool: source} if source is not None else {}
        result = self.sandbox.call(codes, tool, arguments)
        return result.output, result.ok


def mine_goal(task: Task, goal: Goal, executor: _Executor, ctx: _Context, seeds: Iterable[dict] = (),
              taken: Iterable[str] = (), budget: int = MAX_CALLS_PER_GOAL) -> MinedCall | None:
    """Find arguments for `goal.tool` whose sandboxed output matches `goal.expected`.

    `taken` holds argument keys already used by other goals of the same tool (FTRL credits one
    expected string per output, so the same call cannot serve two different strings)."""
    variants = _variants(task, goal.tool)
    # a definition whose source spells the expected string out is the likelier one
    variants.sort(key=lambda v: not matches(goal.expected, v[0].source))
    fallback: MinedCall | None = None
    for hints, schema in variants:
        hit, alt = _mine_variant(goal, executor, ctx, seeds, taken, budget // len(variants), hints, schema)
        if hit is not None:
            return hit
        fallback = fallback or alt
    return fallback


def _variants(task: Task, tool: str) -> list[tuple[ToolHints, dict]]:
    """(hints, schema) per definition of the tool: ToolHop may define two different tools under
    one name; each is mined with the schema whose properties fit its parameters best."""
    schemas = []
    for schema in task.tools:
        fn = schema.get("function", {})
        if fn.get("name") == tool:
            params = fn.get("parameters") or {}
            schemas.append(params if isinstance(params, dict) else {})
    out = []
    for source in _sources_for(task, tool):
        hints = ToolHints(tool, [source])
        if not hints.ok:
            continue
        best = max(schemas, key=lambda sc: len(set(sc.get("properties") or {}) & set(hints.params)), default={})
        out.append((hints, best))
    return out


def _mine_variant(goal: Goal, executor: "_Executor", ctx: _Context, seeds: Iterable[dict], taken: Iterable[str],
                  budget: int, hints: ToolHints, schema: dict) -> tuple[MinedCall | None, MinedCall | None]:
    """(clean hit, echo fallback) for one definition of the tool."""
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    schema_required = [p for p in (schema.get("required") or []) if isinstance(p, str)]
    required = list(dict.fromkeys([*schema_required, *[p for p in hints.required if p in props or not props]]))
    optional = [p for p in hints.params if p not in required and (p in props or not props)]
    optional += [p for p in props if p not in required and p not in optional]
    taken = set(taken)
    tried: set[str] = set()
    fallback: MinedCall | None = None
    start = executor.calls

    def attempt(arguments: dict) -> MinedCall | None:
        nonlocal fallback
        arguments = _jsonable(arguments)
        if not isinstance(arguments, dict):
            return None
        k = _key(arguments)
        if k in tried or k in taken:
            return None
        tried.add(k)
        if not executor.valid(goal.tool, arguments):
            return None
        output, ok = executor.run(goal.tool, arguments)
        if not ok or not strong_match(goal.expected, output):
            return None
        if _looks_like_error(output) and not _looks_like_error(goal.expected):
            return None
        echo = _echoes(goal.expected, arguments)
        found = MinedCall(goal, arguments, output, clean=not echo)
        if not echo:
            return found
        if fallback is None:
            fallback = found
        return None

    def spent() -> bool:
        return executor.calls - start >= budget

    # 0: seed calls (gold calls, examples), as given and restricted to the schema's parameters
    for seed in [*seeds, *hints.seeds]:
        for variant in (seed, {k: v for k, v in seed.items() if k in props or not props}):
            hit = attempt(variant)
            if hit:
                return hit, None
    cand = {p: _param_candidates(hints, p, props.get(p, {}), ctx, optional=False) for p in required}
    opt_cand = {p: _param_candidates(hints, p, props.get(p, {}), ctx, optional=True) for p in optional}
    n = max(1, len(required))
    per = max(3, min(40, int(round(3000 ** (1 / n)))))
    lists = [cand[p][:per] for p in required]
    bases = _ranked_products(lists, 3000)
    # 0.5: values that pass one branch together; branches whose text holds the expected string first
    joint = sorted(hints.joint, key=lambda j: not matches(goal.expected, j[1]))
    for values, _ in joint[:40]:
        values = {k: _recase(hints, ctx, k, v) for k, v in values.items() if k in props or not props}
        fills = [b for b in bases[:5]] or [()]
        for base in fills:
            filled = {**dict(zip(required, base)), **values} if base else dict(values)
            if any(p not in filled for p in required):
                continue
            hit = attempt(filled)
            if hit:
                return hit, None
    if not bases:
        return None, fallback
    # 1: required parameters only
    for combo in bases:
        if spent():
            return None, fallback
        hit = attempt(dict(zip(required, combo)))
        if hit:
            return hit, None
    # 2: one optional parameter added to the best base calls
    hinted = [p for p in optional if hints.cands.ranked(p) or any(k.startswith(p + "\x00") for k in hints.cands.by_param)]
    order = hinted + [p for p in optional if p not in hinted]
    for n_bases, n_vals in ((10, 6), (40, 12)):
        for base in bases[:n_bases]:
            for p in order:
                for value in opt_cand[p][:n_vals]:
                    if spent():
                        return None, fallback
                    hit = attempt({**dict(zip(required, base)), p: value})
                    if hit:
                        return hit, None
    # 3: every hinted optional parameter at once
    if len(hinted) >= 2:
        combos = _ranked_products([opt_cand[p][:3] for p in hinted], 300)
        for base in bases[:10]:
            for combo in combos:
                if spent():
                    return None, fallback
                hit = attempt({**dict(zip(required, base)), **dict(zip(hinted, combo))})
                if hit:
                    return hit, None
    return None, fallback


def _sources_for(task: Task, tool: str) -> list[str]:
    codes = task.metadata.get("codes")
    if isinstance(codes, dict):
        src = codes.get(tool)
        return [src] if isinstance(src, str) else []
    out = []
    for source in task.metadata.get("functions") or []:
        if isinstance(source, str) and re.search(r"def\s+" + re.escape(tool) + r"\s*\(", source):
            out.append(source)
    return out


def _question(task: Task) -> str:
    q = task.metadata.get("question")
    if isinstance(q, str):
        return q
    text = next((m["content"] for m in task.messages if m["role"] == "user"), "")
    return text.split("Question:", 1)[-1]


def _pool(goals: list[Goal], exclude: Goal, extra: list[str]) -> tuple[list[str], list[int | float]]:
    strings: list[str] = []
    numbers: list[int | float] = []
    for g in goals:
        if g.order == exclude.order:
            continue
        strings.append(g.expected)
        pieces = [p.strip() for p in g.expected.split(", ") if p.strip()]
        if len(pieces) > 1:
            strings.extend(pieces)
        numbers.extend(_numbers_in(g.expected))
    strings.extend(extra)
    for s in extra:
        numbers.extend(_numbers_in(s))
    strings = [s for s in dict.fromkeys(strings) if s.strip()]
    numbers = list(dict.fromkeys(numbers))
    return strings, numbers


def _output_values(output: str) -> list[str]:
    """Short strings and numbers in a tool output, offered as arguments to later goals."""
    values: list[str] = []
    try:
        data = json.loads(output)
    except (ValueError, RecursionError):
        data = None

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, str) and 0 < len(v) <= 80:
            values.append(v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            values.append(str(v))

    if data is not None and not isinstance(data, str):
        walk(data)
    else:
        text = output if len(output) <= 80 else ""
        if text:
            values.append(text)
        values.extend(re.findall(r"\d{4}-\d{2}-\d{2}", output))
        values.extend(str(x) for x in _numbers_in(output))
    return values


def mine_task(task: Task, bench: str, sandbox: ToolSandbox, budget: int = MAX_CALLS_PER_GOAL) -> tuple[list[Goal], list[MinedCall], list[Goal]]:
    """(goals, mined calls, goals left unmined). Two rounds: the second offers values read from
    the outputs of the first round's calls."""
    goals = ftrl_goals(task) if bench == "ftrl" else toolhop_goals(task)
    executor = _Executor(task, sandbox, bench)
    question = _question(task)
    gold = task.metadata.get("gold_tool_calls") or [] if bench == "toolhop" else []
    mined: dict[int, MinedCall] = {}
    extra: list[str] = []
    for round_no in range(2):
        progress = False
        for goal in goals:
            if goal.order in mined:
                continue
            strings, numbers = _pool(goals, goal, extra)
            ctx = _Context(strings, numbers, question, goal.label)
            seeds = [c["arguments"] for c in gold if c.get("name") == goal.tool]
            same_tool = [m for m in mined.values() if m.goal.tool == goal.tool]
            taken = {_key(m.arguments) for m in same_tool}
            hit = mine_goal(task, goal, executor, ctx, seeds, taken, budget if round_no == 0 else budget // 2)
            if hit is None and any(normalise(m.goal.expected) == normalise(goal.expected) for m in same_tool):
                # the same string twice: a repeated call is the only way left
                taken = {_key(m.arguments) for m in same_tool if normalise(m.goal.expected) != normalise(goal.expected)}
                hit = mine_goal(task, goal, executor, ctx, seeds, taken, budget // 4)
            if hit is not None:
                mined[goal.order] = hit
                progress = True
                extra.extend(_output_values(hit.output))
        if len(mined) == len(goals) or not progress:  # nothing new to offer a second round
            break
    calls = [mined[g.order] for g in goals if g.order in mined]
    missing = [g for g in goals if g.order not in mined]
    return goals, calls, missing
