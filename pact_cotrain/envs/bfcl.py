"""BFCL multi-turn (Berkeley Function Calling Leaderboard v4) on BFCL's own executable backends.

Data, tool docs, backends and the checker all come from the pinned `bfcl-eval==2026.3.23` wheel
(installed with `pip install --no-deps bfcl-eval==2026.3.23 mpmath`; the multi-turn checker and the
eight backends of the four categories need nothing else). `bfcl_eval` is imported lazily, so this
module (and the "bfcl" benchmark) can be imported without it; loading or running an episode then
raises an ImportError that says how to install it.

Categories: multi_turn_base, multi_turn_miss_func, multi_turn_miss_param, multi_turn_long_context
(200 entries each).

Tasks (`load_bfcl`)
    messages  the entry's first user turn (plus any system message in it: none in these files)
    tools     OpenAI-style schemas converted from BFCL's function docs of the involved classes,
              minus the functions miss_func holds out (BFCL types: dict -> object, float -> number,
              tuple/list -> array, bool -> boolean, any -> no type constraint, unknown -> string)
    metadata  benchmark="bfcl", category, bfcl_id, involved_classes, initial_config, long_context,
              user_turns (every turn's messages, [] for a held-out-function turn), missed_function
              ({turn: [names]}), missed_function_tools ({turn: [schemas]}), ground_truth
              ([[call strings] per turn])

Episodes (`BfclEnv`), as BFCL's inference loop runs them:
  * A user turn lasts until an assistant step has no `<tool_call>` markup; the env then returns the
    next user turn as a `user` message in `tool_messages` (done=False), and done=True after the last.
  * miss_func: at a held-out turn (which has no user text) the env sends one user message with the
    revealed function docs, `New tools available:\\n<tools>\\n{schema per line}\\n</tools>\\n` followed by
    BFCL's own sentence ("I have updated some more functions you can choose from. What about now?").
    The docs go in the message text because the chat template's system tool list is fixed for the
    episode; BFCL's prompting-mode handlers do the same.
  * Calls are read from the visible text (after any `</think>`) with `parse_tool_calls`, without
    schema validation (BFCL executes whatever it decodes), turned into BFCL call strings
    (`cd(folder='x')`, BFCL's `name(k=repr(v),...)` form) and executed in order with BFCL's
    `execute_multi_turn_func_call` on the episode's backend instances; each result is a `tool` message.
    A block that is not a call gets an error observation and counts as a format error; the turn goes
    on (BFCL's handler would silently drop such a block and end the turn if nothing decoded).
  * Safety: only public methods of the entry's backend classes are executed (any other name gets
    BFCL's "Error during execution: name '...' is not defined" without reaching `eval`), argument names
    must be Python identifiers, and a few arguments that would hang the process (a huge mpmath/decimal
    precision, an integer power with a huge exponent, rounding to a huge number of places) are refused.
  * Limits: a user turn may hold `max_steps_per_turn` steps with calls (BFCL: 20); one more
    force-quits the episode (invalid, as in BFCL). After `max_total_steps` assistant steps the episode
    ends; unless every user turn was finished it is invalid.

Scoring: BFCL's `multi_turn_checker` (state check + response check per turn, as BFCL's eval runner
calls it; like that runner, no irrelevance check) on the executed call strings, one list per step,
per user turn, against the ground truth. An episode that did not finish every user turn (force quit,
step budget, or the engine's own limits) is invalid, as BFCL fails a force-terminated entry.
metrics() -> {"valid", "reward" (= valid), "n_calls", "format_errors", "category", "n_steps",
"completed_turns", "n_turns", "force_quit"}. Outputs that echo the internal model name (BFCL rewrites
`identifier(` inside string arguments too) show "model" instead, so samples stay reproducible.

Isolation: BFCL caches backend instances in the globals of `multi_turn_utils`, keyed by
`{model_name}_{test_entry_id}_{class}_instance`. Every env (and every expert-trace run) uses its own
model name `pact_bfcl_<uuid4 hex>`, moves its instances out of those globals right after each
execution call (putting them back just before the next), and deletes whatever the checker creates
under its name once the score is computed. So K samples of one entry never share state, and no
instance outlives its env in BFCL's module globals (metrics() may be called at any time). One more
leak is BFCL's own: long-context backends put dicts of the `long_context` module's constants into
their state and mutate them (e.g. TravelAPI books on an extension credit card), which would carry
over to every later episode. Each episode's instances are deep-copied right after creation, and
those constants are snapshotted at first use and restored after every execution and every check.

Expert traces (`bfcl_expert_traces`): the trace format allows only assistant/tool messages, so a trace
cannot hold the later user turns. The default (`scope="first_turn"`) covers the first user turn only:
one assistant message with a short templated reasoning and all of that turn's gold calls (BFCL's
ground truth is one call list per turn), the real outputs of those calls on fresh backends, and a
closing assistant message; a first turn whose ground truth is empty (the needed function or parameter
is missing) gives one assistant message saying so. This is exactly a prefix of a correct episode after
`task.messages`, so it is sound both as an SFT target and as privileged context. `scope="episode"`
chains every turn's calls and outputs without the later user turns; it is only meant for privileged
context, since as an SFT target it would teach acting on requests not yet made.
"""

from __future__ import annotations

import ast
import copy
import functools
import importlib
import inspect
import json
import keyword
import uuid
from dataclasses import replace
from pathlib import Path
from statistics import mean
from typing import Any, Iterable, Sequence

from pact_cotrain.data.trace_format import Task
from pact_cotrain.envs.base import StepResult, ToolCall
from pact_cotrain.envs.parsing import error_observation, format_tool_call, parse_tool_calls, split_reasoning

BFCL_VERSION = "2026.3.23"
INSTALL_HINT = f"pip install --no-deps bfcl-eval=={BFCL_VERSION} mpmath"
VERSION_PREFIX = "BFCL_v4"
CATEGORIES = ("multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param", "multi_turn_long_context")
AVG_KEY = "bfcl_avg"
COLUMNS = CATEGORIES + (AVG_KEY,)

MAX_STEPS_PER_TURN = 20  # BFCL's MAXIMUM_STEP_LIMIT
MAX_TOTAL_STEPS = 50

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

# Arguments that would make a backend call run (practically) forever; refused before execution.
MAX_PRECISION = 1000
MAX_INT_EXPONENT = 10_000
MAX_DECIMAL_PLACES = 1000


class BfclUnavailable(ImportError):
    pass


# ---------------------------------------------------------------------------------------------
# bfcl_eval access (lazy)


@functools.lru_cache(maxsize=1)
def _bfcl() -> dict:
    """BFCL's modules and constants, imported on first use (never bfcl_eval.constants.eval_config,
    which creates directories inside site-packages on import)."""
    try:
        import bfcl_eval
        from bfcl_eval.constants import executable_backend_config as backend_config
        from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_checker, multi_turn_utils
    except ImportError as exc:  # pragma: no cover - exercised only without bfcl_eval
        raise BfclUnavailable(f"BFCL needs the bfcl_eval package ({exc}); install it with `{INSTALL_HINT}`") from exc
    data = Path(bfcl_eval.__file__).resolve().parent / "data"
    # Long-context backends put the dicts of this module's constants into their state (TravelAPI's
    # extra credit cards and bookings) and then mutate them: snapshot them before any use.
    long_context = importlib.import_module(f"{backend_config.BACKEND_PATH_PREFIX}.long_context")
    shared = [(long_context, name, copy.deepcopy(value)) for name, value in vars(long_context).items()
              if not name.startswith("_") and isinstance(value, (dict, list))]
    return {
        "shared": shared,
        "data": data,
        "doc_files": dict(backend_config.MULTI_TURN_FUNC_DOC_FILE_MAPPING),
        "class_modules": dict(backend_config.CLASS_FILE_PATH_MAPPING),
        "execute": multi_turn_utils.execute_multi_turn_func_call,
        "globals": multi_turn_utils.execute_multi_turn_func_call.__globals__,
        "checker": multi_turn_checker.multi_turn_checker,
    }


def _restore_shared_constants() -> None:
    """Put back any long_context constant a backend call mutated (in place: modules hold them by name)."""
    for module, name, pristine in _bfcl()["shared"]:
        current = getattr(module, name)
        if current != pristine:
            if isinstance(current, dict):
                current.clear()
                current.update(copy.deepcopy(pristine))
            else:
                current[:] = copy.deepcopy(pristine)


def bfcl_available() -> bool:
    try:
        _bfcl()
        return True
    except ImportError:
        return False


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@functools.lru_cache(maxsize=None)
def _func_docs(class_name: str) -> tuple[dict, ...]:
    b = _bfcl()
    return tuple(_read_jsonl(b["data"] / "multi_turn_func_doc" / b["doc_files"][class_name]))


@functools.lru_cache(maxsize=None)
def _backend_class(class_name: str) -> type:
    module = importlib.import_module(_bfcl()["class_modules"][class_name])
    return getattr(module, class_name)


@functools.lru_cache(maxsize=None)
def _public_methods(class_name: str) -> frozenset[str]:
    cls = _backend_class(class_name)
    return frozenset(n for n, m in inspect.getmembers(cls, inspect.isfunction) if not n.startswith("_"))


def _method_owner(name: str, involved_classes: Sequence[str]) -> str | None:
    """The class whose method BFCL runs for `name`: the last involved class that has it (BFCL's
    method -> instance mapping is filled in class order, later classes overwriting earlier ones)."""
    owner = None
    for class_name in involved_classes:
        if name in _public_methods(class_name):
            owner = class_name
    return owner


# ---------------------------------------------------------------------------------------------
# Function docs -> OpenAI-style schemas


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


# ---------------------------------------------------------------------------------------------
# Loading


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


# ---------------------------------------------------------------------------------------------
# Calls: ours <-> BFCL call strings


def _check_value(value: Any, depth: int = 0) -> None:
    if depth > 50:
        raise ValueError("argument nested too deeply")
    if isinstance(value, list):
        for v in value:
            _check_value(v, depth + 1)
    elif isinstance(value, dict):
        for v in value.values():
            _check_value(v, depth + 1)


def to_bfcl_call(name: str, arguments: dict) -> str:
    """BFCL's call string for one parsed call (`name(k=repr(v),...)`, BFCL's convert_to_function_call
    form). Raises ValueError for names or argument names that are not Python identifiers."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(f"'{name}' is not a valid function name")
    parts = []
    for key, value in arguments.items():
        if not isinstance(key, str) or not key.isidentifier() or keyword.iskeyword(key):
            raise ValueError(f"'{key}' is not a valid argument name")
        _check_value(value)
        parts.append(f"{key}={value!r}")
    return f"{name}({','.join(parts)})"


def parse_bfcl_call(call: str, involved_classes: Sequence[str]) -> dict:
    """A ground-truth call string (`sort('a.txt')`, `cd(folder='x')`) -> {"name", "arguments"}, with
    positional arguments named from the backend method's signature."""
    node = ast.parse(call.strip(), mode="eval").body
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise ValueError(f"not a plain function call: {call!r}")
    name = node.func.id
    arguments: dict = {}
    if node.args:
        owner = _method_owner(name, involved_classes)
        if owner is None:
            raise ValueError(f"{call!r}: positional arguments to a function no involved class has")
        params = [p for p in inspect.signature(getattr(_backend_class(owner), name)).parameters.values()
                  if p.name != "self"]
        for param, arg in zip(params, node.args):
            arguments[param.name] = ast.literal_eval(arg)
    for kw in node.keywords:
        if kw.arg is None:
            raise ValueError(f"{call!r}: ** arguments are not supported")
        arguments[kw.arg] = ast.literal_eval(kw.value)
    return {"name": name, "arguments": arguments}


def gold_calls(task: Task) -> list[list[dict]]:
    """The ground truth as [[{"name", "arguments"}] per user turn]."""
    involved = task.metadata["involved_classes"]
    return [[parse_bfcl_call(c, involved) for c in turn] for turn in task.metadata["ground_truth"]]


def gold_turn_text(calls: Iterable[dict]) -> str:
    """An assistant turn (our tool-call text format) making the given calls."""
    return "\n".join(format_tool_call(c["name"], c["arguments"]) for c in calls)


def _refusal(name: str, arguments: dict) -> str | None:
    """A reason to refuse a call whose arguments would hang the process, else None."""

    def big(key: str, limit: int) -> bool:
        value = arguments.get(key)
        return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > limit

    if big("precision", MAX_PRECISION):
        return f"precision must be at most {MAX_PRECISION}"
    if big("decimal_places", MAX_DECIMAL_PLACES):
        return f"decimal_places must be at most {MAX_DECIMAL_PLACES} in absolute value"
    if name == "power":
        base, exponent = arguments.get("base"), arguments.get("exponent")
        if isinstance(base, int) and isinstance(exponent, int) and abs(exponent) > MAX_INT_EXPONENT \
                and abs(base) > 1:
            return f"an integer exponent must be at most {MAX_INT_EXPONENT} in absolute value"
    return None


# ---------------------------------------------------------------------------------------------
# Backends with isolated state


class _Backends:
    """One set of BFCL backend instances for one episode, executed through BFCL's own
    `execute_multi_turn_func_call` under a unique model name, and kept out of BFCL's module globals
    between calls (see the module docstring)."""

    def __init__(self, task: Task):
        b = _bfcl()
        meta = task.metadata
        self._execute, self._globals = b["execute"], b["globals"]
        self.model_name = f"pact_bfcl_{uuid.uuid4().hex}"
        self.prefix = self.model_name + "_"
        self.entry_id = str(meta.get("bfcl_id") or task.id)
        self.initial_config = meta.get("initial_config") or {}
        self.involved = list(meta["involved_classes"])
        self.long_context = bool(meta.get("long_context", "long_context" in category_of(self.entry_id)))
        self.methods = {name for c in self.involved for name in _public_methods(c)}
        self._held: dict[str, Any] = {}
        self.run([])  # create the instances from the initial config
        for instance in self._held.values():  # own copies of anything shared with module constants
            instance.__dict__ = copy.deepcopy(instance.__dict__)

    def _release(self) -> dict[str, Any]:
        g = self._globals
        return {k: g.pop(k) for k in [k for k in list(g) if isinstance(k, str) and k.startswith(self.prefix)]}

    def run(self, calls: list[str]) -> list[str]:
        self._globals.update(self._held)
        try:
            results, _ = self._execute(calls, self.initial_config, self.involved, self.model_name, self.entry_id,
                                       long_context=self.long_context, is_evaL_run=False)
        finally:
            self._held = self._release()
            _restore_shared_constants()
        # BFCL prefixes every `identifier(` in a call string with its instance name, string literals
        # included, so an output can echo that name: show a fixed one, keeping samples reproducible.
        return [(r if isinstance(r, str) else str(r)).replace(self.model_name, "model") for r in results]

    def check(self, decoded: list[list[list[str]]], ground_truth: list[list[str]]) -> dict:
        """BFCL's multi-turn checker on `decoded` ([turn][step][call string]); its instances are
        created under this model name and deleted afterwards."""
        entry = {"id": self.entry_id, "initial_config": self.initial_config, "involved_classes": self.involved}
        try:
            return _bfcl()["checker"](decoded, ground_truth, entry, category_of(self.entry_id), self.model_name)
        except Exception as exc:  # an assertion inside the checker, or a backend raising
            return {"valid": False, "error_type": "checker_exception", "error_message": f"{type(exc).__name__}: {exc}"}
        finally:
            self._release()
            _restore_shared_constants()

    def close(self) -> None:
        self._held = {}
        self._release()


# ---------------------------------------------------------------------------------------------
# The environment


class BfclEnv:
    """One BFCL multi-turn episode (the Environment protocol); see the module docstring."""

    def __init__(self, max_steps_per_turn: int = MAX_STEPS_PER_TURN, max_total_steps: int = MAX_TOTAL_STEPS):
        self.max_steps_per_turn = max_steps_per_turn
        self.max_total_steps = max_total_steps
        self.max_steps = max_total_steps  # what the rollout engine reads
        self.task: Task | None = None
        self._backends: _Backends | None = None
        self._turns: list[list[dict]] = []
        self._ground_truth: list[list[str]] = []
        self._missed_tools: dict[str, list[dict]] = {}
        self._category = ""
        self.tools: list[dict] = []
        self._start()

    def _start(self) -> None:
        self._turn = 0  # index of the current user turn
        self._turn_call_steps = 0  # steps with call markup in the current turn
        self._decoded: list[list[list[str]]] = [[]]  # [turn][step][call string], executed calls only
        self._completed_turns = 0
        self._n_steps = 0
        self._n_calls = 0
        self._format_errors = 0
        self._force_quit = False
        self._done = False
        self._score: dict | None = None

    # -- protocol ------------------------------------------------------------------------------

    def reset(self, task: Task) -> tuple[list[dict], list[dict]]:
        meta = task.metadata
        if meta.get("benchmark") != "bfcl":
            raise ValueError(f"task {task.id} is not a BFCL task (metadata benchmark={meta.get('benchmark')!r})")
        self.close()
        self.task = task
        self._turns = meta.get("user_turns") or [task.messages]
        self._ground_truth = meta["ground_truth"]
        self._missed_tools = meta.get("missed_function_tools") or {}
        self._category = meta.get("category") or category_of(task.id)
        self.tools = copy.deepcopy(task.tools)  # grows as miss_func reveals functions
        self._start()
        self._backends = _Backends(task)
        return copy.deepcopy(task.messages), copy.deepcopy(task.tools)

    def step(self, assistant_text: str) -> StepResult:
        if self._done or self._backends is None:
            return StepResult([], True, 0.0, {"n_calls": 0, "n_format_errors": 0, "note": "episode is over"})
        self._score = None
        self._n_steps += 1
        try:
            return self._step(assistant_text)
        except Exception as exc:  # never raise on model output: end the episode, invalid
            self._force_quit = self._done = True
            return StepResult([], True, 0.0, {"n_calls": 0, "n_format_errors": 0,
                                              "error": f"{type(exc).__name__}: {exc}"})

    def _step(self, assistant_text: str) -> StepResult:
        text = assistant_text if isinstance(assistant_text, str) else (
            "" if assistant_text is None else str(assistant_text))
        _, visible = split_reasoning(text)
        parsed = parse_tool_calls(visible)
        info = {"turn": self._turn, "n_calls": 0, "n_format_errors": 0}
        if not parsed.has_call_markup:
            messages = self._end_turn()
            info["turn_ended"] = True
            return StepResult(messages, self._done, 0.0, info)

        self._turn_call_steps += 1
        messages: list[dict] = []
        to_run: list[tuple[int, str]] = []  # (message index, call string)
        for item in parsed.ordered:
            if not isinstance(item, ToolCall):
                self._format_errors += 1
                info["n_format_errors"] += 1
                messages.append({"role": "tool", "name": item.name or "tool_call_error",
                                 "content": error_observation(item)})
                continue
            info["n_calls"] += 1
            self._n_calls += 1
            messages.append({"role": "tool", "name": item.name, "content": ""})
            if item.name not in self._backends.methods:
                messages[-1]["content"] = f"Error during execution: name '{item.name}' is not defined"
                continue
            reason = _refusal(item.name, item.arguments)
            if reason is not None:
                messages[-1]["content"] = f"Error during execution: {reason}"
                continue
            try:
                call = to_bfcl_call(item.name, item.arguments)
            except (ValueError, RecursionError) as exc:
                messages[-1]["content"] = f"Error during execution: {exc}"
                continue
            to_run.append((len(messages) - 1, call))
        if to_run:
            results = self._backends.run([c for _, c in to_run])
            for (index, _), result in zip(to_run, results):
                messages[index]["content"] = result
            self._decoded[self._turn].append([c for _, c in to_run])
        if self._turn_call_steps > self.max_steps_per_turn:  # BFCL force-quits: the entry fails
            self._force_quit = self._done = True
            info["force_quit"] = True
        elif self._n_steps >= self.max_total_steps:
            self._done = True
        return StepResult(messages, self._done, 0.0, info)

    def _end_turn(self) -> list[dict]:
        self._completed_turns += 1
        self._turn += 1
        self._turn_call_steps = 0
        if self._turn >= len(self._turns) or self._n_steps >= self.max_total_steps:
            self._done = True
            return []
        self._decoded.append([])
        return self._user_messages(self._turn)

    def _user_messages(self, turn: int) -> list[dict]:
        revealed = self._missed_tools.get(str(turn)) or []
        messages = [dict(m) for m in self._turns[turn]]
        if revealed:
            self.tools += copy.deepcopy(revealed)
            messages.append({"role": "user", "content": render_new_tools_message(revealed)})
        if not messages:  # a turn with neither user text nor functions: nothing in BFCL's data does this
            messages = [{"role": "user", "content": "Please continue."}]
        return messages

    def metrics(self) -> dict:
        score = self.score()
        valid = float(bool(score.get("valid")))
        return {
            "valid": valid,
            "reward": valid,
            "n_calls": float(self._n_calls),
            "format_errors": float(self._format_errors),
            "category": self._category,
            "n_steps": float(self._n_steps),
            "completed_turns": float(self._completed_turns),
            "n_turns": float(len(self._turns)),
            "force_quit": float(self._force_quit),
        }

    def score(self) -> dict:
        """BFCL's verdict on the episode so far: {"valid": bool, ...error details...}."""
        if self._score is not None:
            return self._score
        if self._backends is None:
            self._score = {"valid": False, "error_type": "not_started"}
        elif self._force_quit:
            self._score = {"valid": False, "error_type": "multi_turn:force_terminated"}
        elif self._completed_turns < len(self._ground_truth):
            self._score = {"valid": False, "error_type": "incomplete",
                           "error_message": f"{self._completed_turns} of {len(self._ground_truth)} user turns finished"}
        else:
            self._score = self._backends.check(self._decoded[: len(self._ground_truth)], self._ground_truth)
        return self._score

    def close(self) -> None:
        if self._backends is not None:
            self._backends.close()

    @property
    def decoded(self) -> list[list[list[str]]]:
        """The executed call strings, [turn][step][call], as the checker sees them."""
        return copy.deepcopy(self._decoded)


def make_env(task: Task | None = None, max_steps_per_turn: int = MAX_STEPS_PER_TURN,
             max_total_steps: int = MAX_TOTAL_STEPS) -> BfclEnv:
    """EnvFactory for the rollout engine: a fresh environment per episode."""
    return BfclEnv(max_steps_per_turn=max_steps_per_turn, max_total_steps=max_total_steps)


# ---------------------------------------------------------------------------------------------
# Expert traces


def _reasoning(calls: list[dict]) -> str:
    names = ", ".join(f"`{c['name']}`" for c in calls)
    n = len(calls)
    plural = "s" if n != 1 else ""
    order = "it" if n == 1 else "them in this order"
    return f"This request takes {n} tool call{plural}: {names}. I will make {order}."


def _unable(category: str) -> dict:
    if "miss_func" in category:
        text = "None of the functions I have can do this, so I cannot complete this request yet."
    elif "miss_param" in category:
        text = "I cannot do this yet: the request leaves out information I need. Could you provide the missing details?"
    else:
        text = "There is nothing I need to call for this request."
    return {"role": "assistant", "content": text}


def expert_trace(task: Task, scope: str = "first_turn") -> list[dict]:
    """The expert trace of one task (see the module docstring for the two scopes)."""
    if scope not in ("first_turn", "episode"):
        raise ValueError(f"scope must be 'first_turn' or 'episode', got {scope!r}")
    turns = gold_calls(task)
    if scope == "first_turn":
        turns = turns[:1]
    backends = _Backends(task)
    trace: list[dict] = []
    try:
        for t, calls in enumerate(turns):
            if not calls:
                trace.append(_unable(task.metadata.get("category", "")))
                continue
            strings = [to_bfcl_call(c["name"], c["arguments"]) for c in calls]
            outputs = backends.run(strings)
            trace.append({"role": "assistant", "content": "", "reasoning": _reasoning(calls),
                          "tool_calls": [{"name": c["name"], "arguments": c["arguments"], "id": f"call_{t}_{i}"}
                                         for i, c in enumerate(calls)]})
            trace += [{"role": "tool", "name": c["name"], "tool_call_id": f"call_{t}_{i}", "content": out}
                      for i, (c, out) in enumerate(zip(calls, outputs))]
            trace.append({"role": "assistant", "content": "Done: the requested operations are complete."})
    finally:
        backends.close()
    return trace


def bfcl_expert_traces(tasks: Iterable[Task], scope: str = "first_turn") -> list[Task]:
    """Copies of `tasks` with `trace` set from the ground truth executed on fresh backends."""
    return [replace(task, trace=expert_trace(task, scope)) for task in tasks]


# ---------------------------------------------------------------------------------------------
# Benchmark registration


def summarize(episodes: list[dict]) -> dict[str, float]:
    """Accuracy per category present, and their unweighted mean as bfcl_avg (BFCL's multi-turn
    average). Columns: base, miss_func, miss_param, long_context, bfcl_avg."""
    by_category: dict[str, list[float]] = {}
    for episode in episodes:
        by_category.setdefault(str(episode.get("category", "")), []).append(float(episode.get("valid", 0.0)))
    out = {c: mean(by_category[c]) for c in CATEGORIES if by_category.get(c)}
    if out:
        out[AVG_KEY] = mean(out.values())
    return out


def _load(path: str | None) -> list[Task]:
    if path:
        from pact_cotrain.data.trace_format import load_tasks

        return load_tasks(path)
    return load_bfcl()


def _register() -> None:
    from pact_cotrain.eval.benchmarks import Benchmark, register

    register(Benchmark("bfcl", _load, lambda task: BfclEnv(), MAX_TOTAL_STEPS, summarize, COLUMNS))


_register()
