"""Expert traces for FTRL and ToolHop rows, mined from the rows' own tool code and verified by replay.

    tasks, report = build_traces("ftrl", path=None)      # path None: the shared data file
    tasks, report = build_traces("toolhop", path=None)

Each returned Task carries a ``trace`` (assistant/tool turns in the trace format of
``trace_format``) that was replayed through the benchmark's environment, with the tool code run
in a ``ToolSandbox``, and reached the benchmark's success criterion. Rows without a verified trace
are left out and listed in the report with the reason.

Goals. A row's goals are the expected outputs the trace must produce:
    FTRL     every string of ``unsolved_set[tool]`` (a tool listed twice must be solved twice)
    ToolHop  every sub-question's intermediate answer, for the tool ``subtask_tools`` assigns it

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
Candidate calls (joint values, then required parameters, then one or all hinted optional
parameters added) are checked against the tool schema the way the environment checks them and
run in the sandbox (never here) until an output matches a (``strong_match``: FTRL's rule, plus a
whole-token test for strings of 3 characters or fewer, where a substring test is meaningless).
A match whose output looks like an error message is refused; one that only echoes a from the
arguments is kept only when nothing cleaner is found (``clean_calls`` in the report). ToolHop
tools defined twice under one name are mined per definition.

Ordering. A call whose argument equals (or is a ", "-piece of) another goal's expected output
depends on that goal (a strong edge); one that holds it as whole words gets a weak edge, kept
only when it closes no cycle. Calls are grouped into steps by dependency depth, so independent
calls share a step (parallel calls); a call whose output would also match an earlier expected
string of its tool never runs before that string's call (FTRL credits the first unsolved string
an output matches). If that layout does not verify, one call per step is tried, then the row's
order.

Verification. FTRL: the trace is replayed through a fresh ``FtrlEnv`` and kept only at Solve-R = 1.
ToolHop: replayed through ``ToolHopEnv(scenario="mandatory")``; kept when answer correctness is 1
and every sub-question's intermediate answer was produced by its tool (FTRL's rule on the outputs).

Trace shape: per step an assistant turn with a short templated ``reasoning`` ("To find ..., I will
call NAME with ...") and its ``tool_calls``, then one tool turn per call with the sandbox output,
and a final assistant turn whose ``content`` is the row's answer.
"""

from __future__ import annotations

import ast
import copy
import itertools
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from pact_cotrain.data.readers import tool_source
from pact_cotrain.data.trace_format import Task, task_from_record
from pact_cotrain.envs.parsing import format_tool_call, parse_tool_calls, render_assistant_text
from pact_cotrain.rewards.ftrl import FtrlTracker, matches, normalise
from pact_cotrain.sandbox import ToolSandbox

BENCHES = ("ftrl", "toolhop")

MAX_CALLS_PER_GOAL = 4000  # sandbox calls one goal may spend
_MISSING = object()

_CASE_METHODS = {"lower", "casefold", "upper", "title", "capitalize"}
_NOOP_METHODS = {"strip", "lstrip", "rstrip"}
_WRAPPERS = {"str", "int", "float"}

_ERRORISH = re.compile(
    r"(^\W*error\b)|(['\"]error['\"]\s*:)|\bnot found\b|\bno [\w ]{0,40}?(found|available)\b|\binvalid\b|"
    r"\bno matching\b|\bunable to\b|\bnot available\b|\bunsupported\b|\bno data\b|\bno information\b|"
    r"\bcould not\b", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_CAPITALISED = re.compile(r"\b[A-Z][\w'’.\-]*(?:\s+(?:of|the|de|von|van|and|du|la|le|[A-Z][\w'’.\-]*))*")


# ---------------------------------------------------------------------------------------------
# Goals and mined calls


@dataclass
class Goal:
    tool: str
    expected: str
    index: int  # position among the expected strings of the same tool
    order: int  # position among all goals of the row
    label: str = ""  # ToolHop: the sub-question


@dataclass
class MinedCall:
    goal: Goal
    arguments: dict
    output: str
    clean: bool  # neither an echo of the expected string nor an error-looking output
    deps: set[int] = field(default_factory=set)  # orders of goals this call depends on


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


def _flat_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


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


# ---------------------------------------------------------------------------------------------
# Static hints from the tool source (ast only)


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


class ToolHints:
    """What the syntax tree of one tool says about its parameters (nothing is executed)."""

    def __init__(self, tool: str, sources: list[str]):
        self.tool = tool
        self.params: list[str] = []
        self.required: list[str] = []
        self.defaults: dict[str, Any] = {}
        self.seeds: list[dict] = []  # whole argument dicts from example calls
        self.joint: list[tuple[dict, str]] = []  # (values that pass one branch together, text of what it returns)
        self.cands = _Candidates()
        self.lowered: set[str] = set()  # parameters compared after .lower()/.casefold()
        self.strings: list[str] = []  # every string literal in comparisons, dict keys, lists
        self.ok = False
        self._bindings: dict[str, ast.AST] = {}
        self._aliases: dict[str, tuple[str, str | None]] = {}
        self._tuple_aliases: dict[str, list] = {}
        self.dates: list[str] = []  # date-like literals of the source (comments included)
        self._loopvals: dict[str, list[Any]] = {}
        self._key_values: dict[str, list[Any]] = {}
        self._fdefs: list[ast.FunctionDef] = []
        self.source = "\n".join(sources)
        for source in sources:
            self._read(source)

    # -- reading -------------------------------------------------------------------------------

    def _read(self, source: str) -> None:
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            return
        fdefs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == self.tool]
        if not fdefs:
            return
        self.ok = True
        fdef = fdefs[0]
        self._fdefs.append(fdef)
        self._signature(fdef)
        self._collect_bindings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                for k, v in zip(node.keys, node.values):
                    if isinstance(k, ast.Constant) and isinstance(k.value, str):
                        self.strings.append(k.value)
                        val = self._literal(v)
                        if val is not _MISSING:
                            self._key_values.setdefault(k.value, []).append(val)
        self._collect_aliases(fdef)
        self._collect_loops(tree)
        for node in ast.walk(fdef):
            if isinstance(node, ast.Compare):
                self._compare(node)
            elif isinstance(node, ast.BoolOp):
                self._keyword_groups(node)
            elif isinstance(node, ast.Subscript):
                p = self._param(node.slice)
                if p and p[1] is None:
                    for key in self._keys_of(node.value):
                        self.cands.add(p[0], key, 2)
                refs = self._tuple_param(node.slice)
                if refs:
                    self._distribute(refs, self._keys_of(node.value), 2, self._literal(node.value))
            elif isinstance(node, ast.Call):
                self._lookup_call(node)
            if isinstance(node, ast.If):
                joint = self._constraints(node.test)
                if joint:
                    self.joint.append((joint, _strings_text(node.body)))
        self._example_calls(tree, source)
        for y, m, d in re.findall(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b", source):
            self.dates.append(f"{y}-{int(m):02d}-{int(d):02d}")
        self.dates = list(dict.fromkeys(self.dates))

    def _signature(self, fdef: ast.FunctionDef) -> None:
        spec = fdef.args
        positional = [*spec.posonlyargs, *spec.args]
        n_def = len(spec.defaults)
        for i, arg in enumerate(positional):
            if arg.arg not in self.params:
                self.params.append(arg.arg)
            j = i - (len(positional) - n_def)
            if j >= 0:
                self.defaults.setdefault(arg.arg, self._literal(spec.defaults[j]))
            elif arg.arg not in self.required:
                self.required.append(arg.arg)
        for arg, default in zip(spec.kwonlyargs, spec.kw_defaults):
            if arg.arg not in self.params:
                self.params.append(arg.arg)
            if default is None:
                if arg.arg not in self.required:
                    self.required.append(arg.arg)
            else:
                self.defaults.setdefault(arg.arg, self._literal(default))

    def _collect_bindings(self, tree: ast.AST) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                if isinstance(node.value, (ast.List, ast.Tuple, ast.Set, ast.Dict)):
                    self._bindings.setdefault(node.targets[0].id, node.value)

    def _collect_aliases(self, fdef: ast.FunctionDef) -> None:
        for _ in range(3):  # chains such as q = query.lower(); q2 = q.strip()
            for node in ast.walk(fdef):
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    name = node.targets[0].id
                    if name in self.params:
                        continue
                    p = self._param(node.value)
                    if p:
                        self._aliases[name] = p
                    elif isinstance(node.value, ast.Tuple):
                        refs = [self._param(e) for e in node.value.elts]
                        if any(refs):
                            self._tuple_aliases[name] = refs

    def _collect_loops(self, tree: ast.AST) -> None:
        for node in ast.walk(tree):
            if not isinstance(node, (ast.For, ast.comprehension)):
                continue
            target, it = node.target, node.iter
            items = False
            if isinstance(it, ast.Call) and isinstance(it.func, ast.Attribute) and it.func.attr in ("items", "keys") and not it.args:
                items = it.func.attr == "items"
                it = it.func.value
            if items and isinstance(target, ast.Tuple) and target.elts and isinstance(target.elts[0], ast.Name):
                self._loopvals[target.elts[0].id] = list(self._keys_of(it))
                if len(target.elts) == 2 and isinstance(target.elts[1], ast.Name):
                    self._loopvals[target.elts[1].id] = self._leaf_values(it)
            elif isinstance(target, ast.Name):
                container = self._literal(it)
                if isinstance(container, dict):
                    self._loopvals[target.id] = list(container)
                elif isinstance(container, (list, tuple, set)):
                    self._loopvals[target.id] = [v for v in container if isinstance(v, (str, int, float))]

    # -- expressions ---------------------------------------------------------------------------

    def _literal(self, node: ast.AST, depth: int = 0) -> Any:
        try:
            return ast.literal_eval(node)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
        if depth < 3 and isinstance(node, ast.Name) and node.id in self._bindings:
            return self._literal(self._bindings[node.id], depth + 1)
        return _MISSING

    def _param(self, node: ast.AST) -> tuple[str, str | None] | None:
        """(parameter, field) when the expression is a parameter, maybe transformed
        (``p.lower().strip()``, ``str(p)``), or one field of it (``p['k']``, ``p.get('k')``)."""
        lowered = False
        for _ in range(8):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and not node.keywords:
                attr = node.func.attr
                if attr in _CASE_METHODS and not node.args:
                    lowered = lowered or attr in ("lower", "casefold")
                    node = node.func.value
                    continue
                if attr in _NOOP_METHODS:
                    node = node.func.value
                    continue
                if attr == "get" and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.func.value, ast.Name):
                    base = self._name_param(node.func.value.id)
                    if base and base[1] is None:
                        return (base[0], str(node.args[0].value))
                break
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _WRAPPERS and len(node.args) == 1:
                node = node.args[0]
                continue
            break
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and isinstance(node.slice, ast.Constant):
            base = self._name_param(node.value.id)
            if base and base[1] is None:
                return (base[0], str(node.slice.value))
            return None
        if isinstance(node, ast.Name):
            base = self._name_param(node.id)
            if base:
                if lowered:
                    self.lowered.add(base[0])
                return base
        return None

    def _name_param(self, name: str) -> tuple[str, str | None] | None:
        if name in self.params:
            return (name, None)
        return self._aliases.get(name)

    def _tuple_param(self, node: ast.AST) -> list | None:
        if isinstance(node, ast.Tuple):
            refs = [self._param(e) for e in node.elts]
            return refs if any(refs) else None
        if isinstance(node, ast.Name):
            return self._tuple_aliases.get(node.id)
        return None

    def _distribute(self, refs: list, keys: Iterable[Any], prio: float, container: Any = None) -> None:
        for key in keys:
            if isinstance(key, (tuple, list)) and len(key) == len(refs):
                joint: dict = {}
                for ref, value in zip(refs, key):
                    if ref:
                        self._add(ref[0], ref[1], value, prio)
                        if ref[1] is None:
                            joint[ref[0]] = value
                        else:
                            joint.setdefault(ref[0], {})[ref[1]] = value
                body = container.get(key) if isinstance(container, dict) and isinstance(key, tuple) else None
                if joint:
                    self.joint.append((joint, _flat_text(body) if body is not None else ""))

    def _constraints(self, test: ast.AST) -> dict:
        """{param: value} a branch condition pins down (``a == 'X' and b.lower() == 'y' and 'k' in c``)."""
        parts = test.values if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And) else [test]
        joint: dict = {}
        for part in parts:
            if isinstance(part, ast.BoolOp) and isinstance(part.op, ast.And):
                joint.update(self._constraints(part))
                continue
            if isinstance(part, ast.Call) and isinstance(part.func, ast.Attribute) and part.func.attr == "startswith":
                p = self._param(part.func.value)
                if p and p[1] is None and part.args and isinstance(part.args[0], ast.Constant):
                    text = str(part.args[0].value)
                    joint[p[0]] = text + "-01" if re.fullmatch(r"\d{4}-\d{1,2}", text) else text
                continue
            if not (isinstance(part, ast.Compare) and len(part.ops) == 1):
                continue
            a, op, b = part.left, part.ops[0], part.comparators[0]
            if isinstance(op, (ast.Eq, ast.Is)):
                pa, pb = self._param(a), self._param(b)
                ref, other = (pa, b) if pa and not pb else (pb, a) if pb and not pa else (None, None)
                if ref:
                    value = self._literal(other)
                    if value is not _MISSING and value is not None:
                        if ref[1] is None:
                            joint[ref[0]] = value
                        elif isinstance(joint.get(ref[0], {}), dict):
                            joint.setdefault(ref[0], {})[ref[1]] = value
            elif isinstance(op, ast.In):
                ref = self._param(b)
                value = self._literal(a)
                if ref and ref[1] is None and isinstance(value, str):
                    prev = joint.get(ref[0])
                    joint[ref[0]] = f"{prev} {value}" if isinstance(prev, str) else value
                ref = self._param(a)
                container = self._literal(b)
                if ref and ref[1] is None and isinstance(container, (list, tuple, set)) and container:
                    joint.setdefault(ref[0], sorted(container, key=repr)[0])
        return joint

    def _values(self, node: ast.AST) -> list[Any]:
        """Values the other side of a comparison can take."""
        while (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and not node.args
               and node.func.attr in _CASE_METHODS | _NOOP_METHODS):
            node = node.func.value
        value = self._literal(node)
        if value is not _MISSING:
            return [value]
        if isinstance(node, ast.Name) and node.id in self._loopvals:
            return list(self._loopvals[node.id])
        key = None
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            key = node.slice.value
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and node.args and isinstance(node.args[0], ast.Constant)):
            key = node.args[0].value
        if isinstance(key, str):
            return list(self._key_values.get(key, []))
        return []

    def _keys_of(self, node: ast.AST) -> list[Any]:
        """Keys of the dict literal an expression names (nested dicts: keys at every level)."""
        root = node
        nested = False
        while isinstance(root, ast.Subscript):
            root, nested = root.value, True
        if isinstance(root, ast.Call) and isinstance(root.func, ast.Attribute) and root.func.attr == "get":
            root, nested = root.func.value, True
        value = self._literal(root)
        if not isinstance(value, dict):
            return []
        if not nested:
            return [k for k in value if isinstance(k, (str, int, float, tuple))]
        keys: list[Any] = []

        def walk(d: Any) -> None:
            if isinstance(d, dict):
                for k, v in d.items():
                    if isinstance(k, (str, int, float, tuple)):
                        keys.append(k)
                    walk(v)

        for v in value.values():
            walk(v)
        return keys + [k for k in value if isinstance(k, (str, int, float, tuple))]

    def _leaf_values(self, node: ast.AST) -> list[Any]:
        """Non-dict values inside the dict literal an expression names (any depth)."""
        root = node
        while isinstance(root, ast.Subscript):
            root = root.value
        value = self._literal(root)
        out: list[Any] = []

        def walk(d: Any) -> None:
            if isinstance(d, dict):
                for v in d.values():
                    walk(v)
            else:
                out.append(d)

        if isinstance(value, dict):
            walk(value)
        return out

    def _compare(self, node: ast.Compare) -> None:
        left = node.left
        for op, right in zip(node.ops, node.comparators):
            self._pair(left, op, right)
            left = right

    def _pair(self, a: ast.AST, op: ast.cmpop, b: ast.AST) -> None:
        for side in (a, b):
            if isinstance(side, ast.Constant) and isinstance(side.value, str):
                self.strings.append(side.value)
        pa, pb = self._param(a), self._param(b)
        refs = self._tuple_param(a)
        if refs and isinstance(op, ast.In):
            for container in self._values(b):
                if isinstance(container, (dict, list, tuple, set)):
                    self._distribute(refs, list(container), 2, container)
            self._distribute(refs, self._keys_of(b), 2, self._literal(b))
            return
        if pa and not pb:
            param, other, param_left = pa, b, True
        elif pb and not pa:
            param, other, param_left = pb, a, False
        else:
            return
        name, fld = param
        if isinstance(op, (ast.Eq, ast.Is, ast.NotEq, ast.IsNot)):
            prio = 1 if isinstance(op, (ast.Eq, ast.Is)) else 3
            for value in self._values(other):
                self._add(name, fld, value, prio)
        elif isinstance(op, (ast.In, ast.NotIn)):
            prio = 2 if isinstance(op, ast.In) else 4
            if param_left:
                for container in self._values(other):
                    if isinstance(container, dict):
                        members = list(container)
                    elif isinstance(container, (list, tuple, set, frozenset)):
                        members = list(container)
                    else:
                        continue
                    for value in members:
                        if isinstance(value, (str, int, float, bool)):
                            self._add(name, fld, value, prio)
                for key in self._keys_of(other):
                    self._add(name, fld, key, prio)
            elif isinstance(op, ast.In):
                # 'keyword' in p: a string containing the keyword passes
                for value in self._values(other):
                    if isinstance(value, str):
                        self._add(name, fld, value, 1.5)
        elif isinstance(op, (ast.Gt, ast.GtE, ast.Lt, ast.LtE)):
            for value in self._values(other):
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._add(name, fld, value, 3)
                    self._add(name, fld, value + 1, 3.5)
                    self._add(name, fld, value - 1, 3.5)
                elif isinstance(value, str):
                    self._add(name, fld, value, 2)

    def _add(self, name: str, fld: str | None, value: Any, prio: float) -> None:
        if fld is None:
            self.cands.add(name, value, prio)
        else:
            self.cands.add(f"{name}\x00{fld}", value, prio)

    def _keyword_groups(self, node: ast.BoolOp) -> None:
        """`'a' in p and 'b' in p`: one string holding all the keywords passes them all."""
        if not isinstance(node.op, ast.And):
            return
        groups: dict[str, list[str]] = {}
        for value in node.values:
            if isinstance(value, ast.Compare) and len(value.ops) == 1 and isinstance(value.ops[0], ast.In):
                p = self._param(value.comparators[0])
                if p and p[1] is None and isinstance(value.left, ast.Constant) and isinstance(value.left.value, str):
                    groups.setdefault(p[0], []).append(value.left.value)
        for name, words in groups.items():
            if len(words) > 1:
                self.cands.add(name, " ".join(dict.fromkeys(words)), 1)

    def _lookup_call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "get" and node.args:
            p = self._param(node.args[0])
            if p and p[1] is None:
                for key in self._keys_of(func.value):
                    self.cands.add(p[0], key, 2)
            refs = self._tuple_param(node.args[0])
            if refs:
                self._distribute(refs, self._keys_of(func.value), 2, self._literal(func.value))
        if (isinstance(func, ast.Attribute) and func.attr in ("startswith", "endswith") and node.args
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            p = self._param(func.value)
            if p:
                text = node.args[0].value
                self._add(p[0], p[1], text, 1.5)
                if func.attr == "startswith":
                    if re.fullmatch(r"\d{4}-\d{1,2}", text):
                        self._add(p[0], p[1], text + "-01", 1)
                    elif re.fullmatch(r"\d{4}", text):
                        self._add(p[0], p[1], text + "-01-01", 1)
                    elif re.fullmatch(r"\d{4}-", text):
                        self._add(p[0], p[1], text + "01-01", 1)
        if (isinstance(func, ast.Attribute) and func.attr in ("datetime", "date") or isinstance(func, ast.Name)
                and func.id in ("datetime", "date")) and len(node.args) >= 3:
            try:
                y, m, d = (ast.literal_eval(a) for a in node.args[:3])
                self.dates.append(f"{int(y):04d}-{int(m):02d}-{int(d):02d}")
            except (ValueError, TypeError, SyntaxError):
                pass

    def _example_calls(self, tree: ast.AST, source: str) -> None:
        """Calls of the tool written in the module (ToolHop) or in its comments (FTRL)."""
        texts: list[str] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == self.tool:
                try:
                    texts.append(ast.unparse(node))
                except Exception:  # noqa: BLE001 - unparse of odd trees
                    continue
        comment = "\n".join(line.strip()[1:] for line in source.splitlines() if line.strip().startswith("#"))
        for match in re.finditer(re.escape(self.tool) + r"\s*\(", comment):
            text = _balanced(comment, match.start(), match.end() - 1)
            if text:
                texts.append(text)
        for text in texts:
            args = self._bind(text)
            if args is not None and args not in self.seeds:
                self.seeds.append(args)

    def _bind(self, text: str) -> dict | None:
        try:
            node = ast.parse(text.strip(), mode="eval").body
        except SyntaxError:
            return None
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == self.tool):
            return None
        try:
            values = [ast.literal_eval(a) for a in node.args]
            keywords = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
        if not self._fdefs:
            return None
        spec = self._fdefs[0].args
        positional = [a.arg for a in (*spec.posonlyargs, *spec.args)]
        if len(values) > len(positional):
            return None
        args = dict(zip(positional, values))
        args.update(keywords)
        args = _jsonable(args)
        return args if isinstance(args, dict) else None


def _strings_text(nodes: list[ast.AST]) -> str:
    """Every string constant under some statements, joined: what a branch may return."""
    out = []
    for stmt in nodes:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float)) and not isinstance(node.value, bool):
                out.append(str(node.value))
    return " | ".join(out)


def _balanced(text: str, start: int, open_at: int) -> str | None:
    depth, quote, i = 0, None, open_at
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return text[start:i + 1]
        i += 1
    return None


# ---------------------------------------------------------------------------------------------
# Candidate calls


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



_WIDE_START, _WIDE_END = "1900-01-01", "2100-12-31"


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


# ---------------------------------------------------------------------------------------------
# Ordering


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


# ---------------------------------------------------------------------------------------------
# Traces


def _args_text(arguments: dict) -> str:
    if not arguments:
        return "no arguments"
    return ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in arguments.items())


def _purpose(call: MinedCall, goals_by_order: dict[int, Goal], bench: str) -> str:
    if bench == "toolhop" and call.goal.label:
        return f'the answer to "{call.goal.label.strip()}"'
    if call.deps:
        used = ", ".join(json.dumps(goals_by_order[d].expected, ensure_ascii=False) for d in sorted(call.deps))
        return f"the next fact the question needs, which builds on {used} from the earlier result"
    return "a fact the question needs"


def build_trace(steps: list[list[MinedCall]], goals: list[Goal], answer: str, bench: str) -> list[dict]:
    """Assistant turns (reasoning + tool_calls) per step; tool turns are filled in by the replay."""
    goals_by_order = {g.order: g for g in goals}
    trace = []
    for step in steps:
        sentences = [f"To find {_purpose(c, goals_by_order, bench)}, I will call {c.goal.tool} with "
                     f"{_args_text(c.arguments)}." for c in step]
        trace.append({"role": "assistant", "content": "", "reasoning": " ".join(sentences),
                      "tool_calls": [{"name": c.goal.tool, "arguments": copy.deepcopy(c.arguments)} for c in step]})
    trace.append({"role": "assistant", "content": answer,
                  "reasoning": "I now have all the information the question needs, so I can answer."})
    return trace


def replay(env, task: Task, trace: list[dict]) -> tuple[list[dict], dict[str, float], list[tuple[str, str]]]:
    """Run the assistant turns of `trace` through `env`; return (trace with the actual tool
    turns, the env's metrics, [(tool, output) of every executed call])."""
    env.reset(task)
    out: list[dict] = []
    executed: list[tuple[str, str]] = []
    for msg in trace:
        if msg["role"] != "assistant":
            continue
        out.append(copy.deepcopy(msg))
        result = env.step(render_assistant_text(msg))
        for tool_msg in result.tool_messages:
            out.append({"role": "tool", "name": tool_msg["name"], "content": tool_msg["content"]})
            executed.append((tool_msg["name"], tool_msg["content"]))
        if result.done:
            break
    return out, env.metrics(), executed


# ---------------------------------------------------------------------------------------------
# Per benchmark


def ftrl_goals(task: Task) -> list[Goal]:
    goals: list[Goal] = []
    for tool, expected in (task.metadata.get("unsolved_set") or {}).items():
        for i, exp in enumerate(expected):
            goals.append(Goal(tool, str(exp), i, len(goals)))
    return goals


def toolhop_goals(task: Task) -> list[Goal]:
    goals: list[Goal] = []
    counts: Counter = Counter()
    sub_task = task.metadata.get("sub_task") or {}
    tools = task.metadata.get("subtask_tools") or {}
    for question, answer in sub_task.items():
        tool = tools.get(question)
        if not tool:
            continue
        goals.append(Goal(tool, str(answer), counts[tool], len(goals), label=str(question)))
        counts[tool] += 1
    return goals


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


def _hops_solved(goals: list[Goal], executed: list[tuple[str, str]]) -> int:
    unsolved: dict[str, list[str]] = {}
    for g in goals:
        unsolved.setdefault(g.tool, []).append(g.expected)
    tracker = FtrlTracker(unsolved)
    for tool, output in executed:
        tracker.record_call(tool, output)
    return tracker.S


def trace_for_task(task: Task, bench: str, sandbox: ToolSandbox, budget: int = MAX_CALLS_PER_GOAL) -> tuple[Task | None, dict]:
    """Mine, order, replay and verify one row; (task with trace or None, a per-row record)."""
    goals, calls, missing = mine_task(task, bench, sandbox, budget)
    record: dict[str, Any] = {"id": task.id, "goals": len(goals), "mined": len(calls),
                              "clean": sum(c.clean for c in calls)}
    if not goals:
        record["reason"] = "no goals"
        return None, record
    if missing:
        record["reason"] = "unmined: " + "; ".join(f"{g.tool} -> {g.expected!r}" for g in missing)
        return None, record
    answer = str(task.metadata.get("answer", ""))
    layouts = [order_calls(calls, goals)]
    layouts.append([[c] for step in layouts[0] for c in step])  # one call per step
    layouts.append([[c] for c in sorted(calls, key=lambda c: c.goal.order)])  # the rows' own order
    for steps in layouts:
        trace = build_trace(steps, goals, answer, bench)
        if bench == "ftrl":
            from pact_cotrain.envs.ftrl import FtrlEnv

            env = FtrlEnv(sandbox=sandbox)
            full, metrics, executed = replay(env, task, trace)
            ok = metrics["solve_r"] == 1.0
        else:
            from pact_cotrain.envs.toolhop import ToolHopEnv

            env = ToolHopEnv(sandbox=sandbox, scenario="mandatory")
            full, metrics, executed = replay(env, task, trace)
            hops = _hops_solved(goals, executed)
            metrics = {**metrics, "hops_solved": float(hops), "hops": float(len(goals))}
            ok = metrics["answer_correct"] == 1.0 and hops == len(goals)
        if ok and len(full) == sum(len(s) for s in steps) + len(steps) + 1:
            out = Task(id=task.id, messages=copy.deepcopy(task.messages), tools=copy.deepcopy(task.tools),
                       trace=full, metadata=copy.deepcopy(task.metadata))
            out.metadata["expert_trace"] = {"source": "mined+replayed", "steps": len(steps), "calls": len(calls),
                                            "clean_calls": record["clean"],
                                            "metrics": {k: float(v) for k, v in metrics.items()}}
            task_from_record(out.to_record())
            record["steps"] = len(steps)
            return out, record
    record["reason"] = f"replay failed: {json.dumps({k: round(float(v), 3) for k, v in metrics.items()})}"
    return None, record


def _default_path(bench: str) -> str:
    if bench == "ftrl":
        from pact_cotrain.envs.ftrl import default_ftrl_path

        return str(default_ftrl_path())
    from pact_cotrain.envs.toolhop import default_toolhop_path

    return str(default_toolhop_path())


def load_bench(bench: str, path: str | None = None) -> list[Task]:
    if bench not in BENCHES:
        raise ValueError(f"bench must be one of {BENCHES}, got {bench!r}")
    from pact_cotrain.data.readers import read_ftrl, read_toolhop

    path = path or _default_path(bench)
    return read_ftrl(path) if bench == "ftrl" else read_toolhop(path)


def build_traces(bench: str, path: str | None = None, sandbox: ToolSandbox | None = None,
                 ids: Iterable[str] | None = None, budget: int = MAX_CALLS_PER_GOAL,
                 progress: Callable[[dict], None] | None = None) -> tuple[list[Task], dict]:
    """Tasks with a verified expert trace, and a coverage report.

    bench: "ftrl" or "toolhop"; path: a file in that benchmark's format (None: the shared file);
    sandbox: a ToolSandbox to run tool code in (None: a private one, closed afterwards);
    ids: only these rows. The report: rows, verified, coverage, goals/mined counts, per-reason
    failures, verified rows per data_source/category.
    """
    tasks = load_bench(bench, path)
    if ids is not None:
        wanted = set(ids)
        tasks = [t for t in tasks if t.id in wanted]
    own = sandbox is None
    box = sandbox or ToolSandbox(n_workers=1, timeout_s=3.0)
    kept: list[Task] = []
    records = []
    try:
        for task in tasks:
            out, record = trace_for_task(task, bench, box, budget)
            records.append(record)
            if progress:
                progress(record)
            if out is not None:
                kept.append(out)
    finally:
        if own:
            box.close()
    group_key = "data_source" if bench == "ftrl" else "category"
    by_group: dict[str, list[int]] = {}
    kept_ids = {t.id for t in kept}
    for task in tasks:
        slot = by_group.setdefault(str(task.metadata.get(group_key, "")), [0, 0])
        slot[1] += 1
        slot[0] += task.id in kept_ids
    report = {
        "bench": bench,
        "path": path or _default_path(bench),
        "rows": len(tasks),
        "verified": len(kept),
        "coverage": len(kept) / len(tasks) if tasks else 0.0,
        "goals": sum(r["goals"] for r in records),
        "goals_mined": sum(r["mined"] for r in records),
        "clean_calls": sum(r["clean"] for r in records),
        f"by_{group_key}": {k: f"{v[0]}/{v[1]}" for k, v in sorted(by_group.items())},
        "failed": {r["id"]: r["reason"] for r in records if "reason" in r},
    }
    return kept, report
