"""Check a tool call's arguments against the tool's JSON schema (the subset tool schemas use).

    argument_problems({"city": 3}, {"type": "object", "properties": {"city": {"type": "string"}},
                                    "required": ["city", "day"]})
    -> ["arguments: missing required key 'day'", "arguments.city: must be of type string, got integer"]

Keywords checked: type (a name or a list of names), enum, const, required, properties,
additionalProperties (false or a schema), items (a schema, or a list for tuple-like arrays),
anyOf / oneOf (at least one branch fits; oneOf is not checked for exclusivity), allOf, and
OpenAPI's `nullable: true`. Every other keyword (format, pattern, minimum, $ref, ...) is not held
against a call: tool schemas in the wild use them loosely, and refusing on a keyword we do not
evaluate would be a guess. As in JSON schema, an integer-valued float (2.0) is an integer and a
boolean is never a number.
"""

from __future__ import annotations

from typing import Any

_TYPE_NAMES = ("string", "integer", "number", "boolean", "array", "object", "null")


def json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _has_type(value: Any, name: str) -> bool:
    if name == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if name not in _TYPE_NAMES:
        return True  # a type name JSON schema does not define: not held against the call
    return json_type_name(value) == name


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but True != 1 and "1" != 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def schema_problems(value: Any, schema: Any, where: str = "arguments") -> list[str]:
    """Every way `value` breaks `schema`, each as "where.path: reason"; [] when it fits."""
    if not isinstance(schema, dict):
        return []  # `true`, or a malformed sub-schema: nothing we can check
    if value is None and schema.get("nullable") is True:
        return []
    expected = schema.get("type")
    if isinstance(expected, str) or isinstance(expected, list):
        names = [expected] if isinstance(expected, str) else [t for t in expected if isinstance(t, str)]
        if names and not any(_has_type(value, t) for t in names):
            shown = names[0] if len(names) == 1 else " or ".join(names)
            return [f"{where}: must be of type {shown}, got {json_type_name(value)}"]
    problems: list[str] = []
    if isinstance(schema.get("enum"), list) and not any(_json_equal(value, e) for e in schema["enum"]):
        problems.append(f"{where}: {value!r} is not one of {schema['enum']!r}")
    if "const" in schema and not _json_equal(value, schema["const"]):
        problems.append(f"{where}: must be {schema['const']!r}, got {value!r}")
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches and all(schema_problems(value, b, where) for b in branches):
            problems.append(f"{where}: fits none of the {key} schemas")
    if isinstance(schema.get("allOf"), list):
        for branch in schema["allOf"]:
            problems += schema_problems(value, branch, where)
    if isinstance(value, dict):
        problems += _object_problems(value, schema, where)
    elif isinstance(value, list):
        problems += _array_problems(value, schema, where)
    return problems


def _object_problems(value: dict, schema: dict, where: str) -> list[str]:
    problems = []
    required = schema.get("required")
    if isinstance(required, list):
        problems += [f"{where}: missing required key {key!r}" for key in required
                     if isinstance(key, str) and key not in value]
    props = schema.get("properties")
    props = props if isinstance(props, dict) else {}
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in props:
            problems += schema_problems(item, props[key], f"{where}.{key}")
        elif extra is False:
            allowed = ", ".join(sorted(props)) or "none"
            problems.append(f"{where}: unexpected key {key!r} (allowed: {allowed})")
        elif isinstance(extra, dict):
            problems += schema_problems(item, extra, f"{where}.{key}")
    return problems


def _array_problems(value: list, schema: dict, where: str) -> list[str]:
    items = schema.get("items")
    problems = []
    if isinstance(items, dict):
        for i, item in enumerate(value):
            problems += schema_problems(item, items, f"{where}[{i}]")
    elif isinstance(items, list):
        for i, (item, sub) in enumerate(zip(value, items)):
            problems += schema_problems(item, sub, f"{where}[{i}]")
    return problems
