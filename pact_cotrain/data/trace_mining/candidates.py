"""Candidate values per parameter, best first, from a tool's hints, its schema and the row.

Mining a goal (tool t, expected string a). The tool's source is only *parsed* (``ast``); nothing
runs in this process. From the syntax tree we collect candidate values per parameter, best first:
    0    seed calls: ToolHop ``gold_tool_calls``; example calls in the source or in its comments
    0.5  joint values: the literals one branch condition pins down together (``if event_type ==
         'X' and severity == 'Y':``, tuple keys of a lookup table), branches whose returned text
         holds a tried first
    0.8  ToolHop: strings/numbers that other goals produce and this hop's sub-question names
    1    literals the parameter is compared with (``p == 'X'``, ``p.lower() == 'x'``,
         ``p.startswith('2023-02')``, ``'kw' in p``), spelled as the row spells them when the
         code lower-cases (``'lake crescent'`` -> ``'Lake Crescent'``)
    2    members of containers it is tested against (``p in [...]``), keys of dict literals it
         looks up (``DB.get(p)``, ``DB[p]``), values of ``row['k']`` it is compared with; objects
         built from the fields the code reads (date ranges get the source's dates and a wide range)
    3+   the schema's enums, other goals' expected strings and numbers (multi-hop arguments,
         calculator operands), the description's examples, every string literal, values read
         from earlier outputs (a second round)
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any

from pact_cotrain.rewards.ftrl import normalise

from .hints import ToolHints
from .ranking import _Candidates
from .values import _MISSING, _jsonable, _key, _numbers_in

_CAPITALISED = re.compile(r"\b[A-Z][\w'’.\-]*(?:\s+(?:of|the|de|von|van|and|du|la|le|[A-Z][\w'’.\-]*))*")

_WIDE_START, _WIDE_END = "1900-01-01", "2100-12-31"


def _coerce(value: Any, spec: dict) -> Any:
    """The value in the JSON type the schema asks for, or _MISSING."""
    kind = spec.get("type") if isinstance(spec, dict) else None
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind is None:
        return value
    if kind == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        return _MISSING
    if kind in ("integer", "number"):
        if isinstance(value, bool):
            return _MISSING
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            return int(value) if kind == "integer" and value.is_integer() else (value if kind == "number" else _MISSING)
        if isinstance(value, str):
            nums = _numbers_in(value)
            if len(nums) == 1 and re.fullmatch(r"\s*-?[\d,]+(\.\d+)?\s*", value):
                return _coerce(nums[0], spec)
        return _MISSING
    if kind == "boolean":
        return value if isinstance(value, bool) else _MISSING
    if kind == "array":
        if isinstance(value, list):
            return value
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            items = spec.get("items") if isinstance(spec.get("items"), dict) else {}
            item = _coerce(value, items) if items else value
            return [item] if item is not _MISSING else _MISSING
        return _MISSING
    if kind == "object":
        return value if isinstance(value, dict) else _MISSING
    return value


@dataclass
class _Context:
    """Row-level strings and numbers other goals and earlier outputs offer as arguments."""

    pool_strings: list[str]
    pool_numbers: list[int | float]
    question: str = ""
    label: str = ""


def _param_candidates(hints: ToolHints, name: str, spec: dict, ctx: _Context, optional: bool) -> list[Any]:
    cands = _Candidates()
    for prio, value in hints.cands.ranked(name):
        cands.add(name, value, prio)
    kind = spec.get("type") if isinstance(spec, dict) else None
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind in (None, "object"):
        for prio, obj in _object_candidates(hints, name, spec, ctx):
            cands.add(name, obj, prio)
    dates = _dates(hints, ctx)
    if kind in (None, "string") and _date_like(name, spec):
        for i, d in enumerate(dates):
            cands.add(name, d, 2.9 + i * 0.01)
        cands.add(name, _WIDE_END if "end" in name.lower() else _WIDE_START, 3.4)
        cands.add(name, _WIDE_START if "end" in name.lower() else _WIDE_END, 3.45)
    for value in hints._key_values.get(name, []):
        cands.add(name, value, 2.2)
    enum = spec.get("enum") if isinstance(spec, dict) else None
    if isinstance(enum, list):
        for value in enum:
            cands.add(name, value, 2.5)
    items = spec.get("items") if isinstance(spec, dict) else None
    if kind == "array" and isinstance(items, dict) and isinstance(items.get("enum"), list):
        for value in items["enum"][:6]:
            cands.add(name, [value], 2.6)
        cands.add(name, list(items["enum"]), 2.7)
    # case recovery: 'lake crescent' compared after .lower() -> 'Lake Crescent' from the row
    if name in hints.lowered:
        for prio, value in hints.cands.ranked(name):
            cased = _recase(hints, ctx, name, value)
            if cased != value:
                cands.add(name, cased, prio - 0.1)
    if kind in (None, "string", "array"):
        label = normalise(ctx.label)
        for s in ctx.pool_strings:
            in_label = bool(label) and _has_words(label, normalise(s).strip())
            # ToolHop: a hop's argument is named in its sub-question; other strings come after the
            # code's own literals and the description's examples
            prio = 0.8 if in_label else 5.2 if (label or optional) else 4.7
            cands.add(name, s, prio)
    for example in _description_examples(spec):
        # an array's own examples ('historical archives') read better than a hop's entity
        cands.add(name, example, 0.7 if kind == "array" else 4.6)
    if kind in ("integer", "number", "array"):
        label_numbers = _numbers_in(ctx.label) if ctx.label else []
        for x in label_numbers:  # "By how much is 5 less than 10?"
            cands.add(name, x, 0.9)
        for x in ctx.pool_numbers:
            cands.add(name, x, 0.8 if x in label_numbers else 3)
        if kind == "array" and len(ctx.pool_numbers) >= 2:
            cands.add(name, list(ctx.pool_numbers), 3.2)
            for a, b in itertools.permutations(ctx.pool_numbers[:6], 2):
                cands.add(name, [a, b], 3.3)
    if kind == "boolean":
        first = spec.get("default") if isinstance(spec, dict) and isinstance(spec.get("default"), bool) else False
        cands.add(name, first, 3)
        cands.add(name, not first, 3)
    if not optional:
        for s in hints.strings[:60]:
            cands.add(name, s, 5)
        if ctx.question and kind in (None, "string"):
            for span in dict.fromkeys(_CAPITALISED.findall(ctx.question)):
                if len(span) > 2:
                    cands.add(name, span.strip(), 5.5)
        if kind in ("integer", "number"):
            cands.add(name, 1, 6)
        if kind in (None, "string"):
            cands.add(name, "general", 6)
    default = hints.defaults.get(name, _MISSING)
    out = []
    for _, value in cands.ranked(name):
        value = _coerce(value, spec) if isinstance(spec, dict) and spec else value
        if value is _MISSING or (optional and default is not _MISSING and _key(value) == _key(_jsonable(default))):
            continue
        if isinstance(value, str) and not value.strip() and not optional:
            continue
        out.append(value)
    return list({_key(v): v for v in out}.values())


def _has_words(text: str, words: str) -> bool:
    """`words` occurs in `text` as whole words."""
    return bool(words) and re.search(r"(?<!\w)" + re.escape(words) + r"(?!\w)", text) is not None


def _recase(hints: ToolHints, ctx: _Context, name: str, value: Any) -> Any:
    """A literal the code compares after .lower() ('lake crescent'), written the way the row
    writes it ('Lake Crescent': another goal's expected string, or the question's wording)."""
    if name not in hints.lowered or not isinstance(value, str) or value != value.lower() or not value.strip():
        return value
    for s in ctx.pool_strings:
        if s.lower() == value:
            return s
    for text in (ctx.label, ctx.question):
        i = text.lower().find(value)
        if i >= 0 and len(text) == len(text.lower()):
            return text[i:i + len(value)]
    return value


def _description_examples(spec: Any) -> list[str]:
    """Example values a parameter's description gives: quoted ones, or the first after
    "such as" / "e.g."."""
    desc = spec.get("description") if isinstance(spec, dict) else None
    if not isinstance(desc, str):
        return []
    out = re.findall(r"'([^'\n]{1,40})'", desc)
    for m in re.finditer(r"(?:such as|e\.g\.,?|for example,?)\s+([^,;:()]{1,40})", desc):
        phrase = re.sub(r"^(?:a|an|the)\s+", "", m.group(1).strip().strip("'\".")).strip()
        if phrase:
            out.append(phrase)
    return list(dict.fromkeys(out))[:4]


def _date_like(name: str, spec: Any) -> bool:
    spec = spec if isinstance(spec, dict) else {}
    text = f"{name} {spec.get('format', '')} {spec.get('description', '')}".lower()
    return "date" in text or "yyyy" in text


def _dates(hints: ToolHints, ctx: _Context) -> list[str]:
    out = list(hints.dates)
    for s in ctx.pool_strings:
        for y, m, d in re.findall(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b", s):
            out.append(f"{y}-{int(m):02d}-{int(d):02d}")
    return list(dict.fromkeys(out))


def _object_candidates(hints: ToolHints, name: str, spec: Any, ctx: _Context) -> list[tuple[float, dict]]:
    """Objects for a parameter: fields the code compares (``p['k'] == 'X'``, ``p.get('k')``) and
    the schema's sub-properties; date fields get the source's dates and a wide range."""
    spec = spec if isinstance(spec, dict) else {}
    sub = spec.get("properties") if isinstance(spec.get("properties"), dict) else {}
    sub_req = [k for k in (spec.get("required") or []) if isinstance(k, str)]
    fields = {key.split("\x00", 1)[1]: [v for _, v in hints.cands.ranked(key)]
              for key in hints.cands.by_param if key.startswith(name + "\x00")}
    tested = [v for _, v in hints.cands.ranked(name) if isinstance(v, str) and (v in sub or not sub)]  # 'k' in p
    keys = list(dict.fromkeys([*fields, *sub_req, *tested]))
    date_keys = [k for k in dict.fromkeys([*keys, *sub]) if _date_like(k, sub.get(k))]
    if not keys and not date_keys:
        keys = list(sub)  # nothing known: fill every sub-property
    sub_req = list(dict.fromkeys([*sub_req, *keys]))
    keys = list(dict.fromkeys([*keys, *date_keys]))
    dates = _dates(hints, ctx)
    values: dict[str, list[Any]] = {}
    for k in keys:
        vals = [_coerce(v, sub.get(k) or {}) for v in fields.get(k, [])]
        vals = [v for v in vals if v is not _MISSING]
        sub_spec = sub.get(k) if isinstance(sub.get(k), dict) else {}
        end = "end" in k.lower() or k.lower() in ("to", "max")
        if k in date_keys:
            vals += [d for d in dates if d not in vals]
            vals.append(_WIDE_END if end else _WIDE_START)
        elif "year" in k.lower():
            years = [int(d[:4]) for d in dates] + [int(x) for x in ctx.pool_numbers if 1000 <= x <= 2100 and x == int(x)]
            vals += [y for y in dict.fromkeys(years) if y not in vals]
            vals.append(2100 if end else 1000)
            vals = [c for c in (_coerce(v, sub_spec) for v in vals) if c is not _MISSING]
        enum = sub_spec.get("enum")
        if not vals and isinstance(enum, list):
            vals = list(enum)
        if not vals and k in sub_req:
            kind = sub_spec.get("type")
            if kind in ("integer", "number"):
                vals = [c for c in (_coerce(x, sub_spec) for x in ctx.pool_numbers[:3]) if c is not _MISSING] or [1]
            elif kind == "boolean":
                vals = [True, False]
            elif kind == "array":
                vals = [[s] for s in ctx.pool_strings[:2]] or [["general"]]
            else:
                vals = list(ctx.pool_strings[:3]) or ["general"]
        if vals:
            values[k] = vals
    if not values:
        return []
    firsts = {k: v[0] for k, v in values.items()}
    out: list[tuple[float, dict]] = [(1, firsts)]
    for k, vals in values.items():
        for v in vals[1:4]:
            out.append((2, {**firsts, k: v}))
    ranged = [k for k in values if k in date_keys or "year" in k.lower()]
    if ranged:
        wide = dict(firsts)
        for k in ranged:
            wide[k] = values[k][-1]  # the wide bound, appended last
        out.append((1.5, wide))
        same_day = [k for k in ranged if k in date_keys]
        for d in dates[:6] if same_day else []:
            out.append((2, {**firsts, **{k: d for k in same_day}}))
    return out
