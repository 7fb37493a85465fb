"""Static hints from one tool's source: what its syntax tree says about its parameters.

The tool's source is only *parsed* (``ast``); nothing runs in this process. The hints feed the
candidate values of ``candidates``.
"""

from __future__ import annotations

import ast
import re
from typing import Any, Iterable

from .ranking import _Candidates
from .values import _MISSING, _flat_text, _jsonable

_CASE_METHODS = {"lower", "casefold", "upper", "title", "capitalize"}
_NOOP_METHODS = {"strip", "lstrip", "rstrip"}
_WRAPPERS = {"str", "int", "float"}


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
