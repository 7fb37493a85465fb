"""BFCL multi-turn entries as Tasks, with BFCL's function docs converted to OpenAI-style schemas.

Tasks (`load_bfcl`)
    messages  the entry's first user turn (plus any system message in it: none in these files)
    tools     OpenAI-style schemas converted from BFCL's function docs of the involved classes,
              minus the functions miss_func holds out (BFCL types: dict -> object, float -> number,
              tuple/list -> array, bool -> boolean, any -> no type constraint, unknown -> string)
    metadata  benchmark="bfcl", category, bfcl_id, involved_classes, initial_config, long_context,
              user_turns (every turn's messages, [] for a held-out-function turn), missed_function
              ({turn: [names]}), missed_function_tools ({turn: [schemas]}), ground_truth
              ([[call strings] per turn])
"""

from __future__ import annotations

import copy
import json
from typing import Any, Iterable

from pact_cotrain.data.trace_format import Task

from .wheel import CATEGORIES, VERSION_PREFIX, _bfcl, _func_docs, _read_jsonl

# BFCL's DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC, the user text of a held-out-function turn.
ADDITIONAL_FUNCTION_PROMPT = "I have updated some more functions you can choose from. What about now?"

# BFCL doc types -> JSON schema types (BFCL's GORILLA_TO_OPENAPI, except that "any" is left
# unconstrained instead of becoming "string"). A type not listed becomes "string", as in BFCL.
_ANY = object()
TYPE_MAP: dict[str, Any] = {
    "dict": "object", "object": "object", "HashMap": "object", "Hashtable": "object",
    "float": "number", "number": "number", "double": "number",
    "integer": "integer", "int": "integer", "long": "integer", "short": "integer", "byte": "integer",
    "Bigint": "integer",
    "string": "string", "str": "string", "char": "string", "String": "string",
    "boolean": "boolean", "bool": "boolean",
    "array": "array", "list": "array", "tuple": "array", "ArrayList": "array", "Array": "array",
    "Queue": "array", "Stack": "array",
    "any": _ANY, "Any": _ANY,
}


def _convert_schema(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return copy.deepcopy(schema)
    out: dict = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, str):
            mapped = TYPE_MAP.get(value, "string")
            if mapped is not _ANY:
                out["type"] = mapped
        elif key == "properties" and isinstance(value, dict):
            out["properties"] = {name: _convert_schema(prop) for name, prop in value.items()}
        elif key == "items" and isinstance(value, dict):
            out["items"] = _convert_schema(value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def bfcl_doc_to_tool(doc: dict) -> dict:
    """One BFCL function doc -> {"type": "function", "function": {name, description, parameters}}.
    The doc's "response" description is dropped (OpenAI schemas have no such field)."""
    params = _convert_schema(doc.get("parameters") or {})
    params["type"] = "object"
    params.setdefault("properties", {})
    return {"type": "function",
            "function": {"name": doc["name"], "description": doc.get("description", ""), "parameters": params}}


def render_new_tools_message(tools: list[dict]) -> str:
    """The user text of a miss_func turn that reveals held-out functions."""
    lines = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return f"New tools available:\n<tools>\n{lines}\n</tools>\n{ADDITIONAL_FUNCTION_PROMPT}"


def category_of(entry_id: str) -> str:
    return entry_id.rsplit("_", 1)[0]


def _entry_to_task(entry: dict, answer: dict) -> Task:
    entry_id = entry["id"]
    category = category_of(entry_id)
    involved = list(entry["involved_classes"])
    docs = [copy.deepcopy(doc) for class_name in involved for doc in _func_docs(class_name)]
    missed_names = {str(turn): list(names) for turn, names in (entry.get("missed_function") or {}).items()}
    missed_tools: dict[str, list[dict]] = {}
    for turn, names in missed_names.items():  # as BFCL's populate_test_cases_with_predefined_functions
        missed_tools[turn] = []
        for name in names:
            for i, doc in enumerate(docs):
                if doc["name"] == name:
                    missed_tools[turn].append(bfcl_doc_to_tool(docs.pop(i)))
                    break
    turns = entry["question"]
    first = [dict(m) for m in turns[0]] if turns else []
    if not any(m.get("role") == "user" for m in first):
        raise ValueError(f"BFCL entry {entry_id}: the first turn has no user message")
    metadata = {
        "benchmark": "bfcl",
        "category": category,
        "bfcl_id": entry_id,
        "involved_classes": involved,
        "initial_config": entry.get("initial_config") or {},
        "long_context": "long_context" in category or "composite" in category,
        "user_turns": turns,
        "missed_function": missed_names,
        "missed_function_tools": missed_tools,
        "ground_truth": answer["ground_truth"],
    }
    return Task(id=entry_id, messages=first, tools=[bfcl_doc_to_tool(d) for d in docs], metadata=metadata)


def load_bfcl(categories: Iterable[str] = CATEGORIES, limit_per_category: int | None = None) -> list[Task]:
    """BFCL multi-turn entries as Tasks, category by category in file order."""
    b = _bfcl()
    tasks: list[Task] = []
    for category in categories:
        if category not in CATEGORIES:
            raise ValueError(f"unknown BFCL multi-turn category {category!r}; known: {list(CATEGORIES)}")
        entries = _read_jsonl(b["data"] / f"{VERSION_PREFIX}_{category}.json")
        answers = {a["id"]: a for a in _read_jsonl(b["data"] / "possible_answer" / f"{VERSION_PREFIX}_{category}.json")}
        if limit_per_category is not None:
            entries = entries[:limit_per_category]
        for entry in entries:
            if entry["id"] not in answers:
                raise ValueError(f"BFCL entry {entry['id']} has no ground truth")
            tasks.append(_entry_to_task(entry, answers[entry["id"]]))
    return tasks
