"""Python functions (and environment methods) as tools, the way TRL takes them.

A tool's schema is transformers' `get_json_schema` (type hints and a Google-style docstring), the
same schema TRL's GRPOTrainer renders; a function it cannot describe is refused in one line naming
the function and what is missing.

Running a call (`run_sync`, `run_async`): the return value becomes the tool message (dicts and
lists as JSON, anything else as `str()`, as the sandbox worker renders it); an exception becomes
`an error occurred when calling NAME: ExcType: message` and the episode goes on; a call past the
timeout becomes a timeout message (a sync call cannot be killed: its thread is abandoned and the
episode's later calls run on a fresh thread); output beyond the cap is cut with a marker.

`HomeThread`: all synchronous user code of one episode (constructor, reset, tools, get_reward)
runs on one thread of its own, so per-episode state bound to a thread (a sqlite connection opened
in `reset`) stays usable, while episodes run side by side.
"""

from __future__ import annotations

import importlib
import inspect
import queue
import sys
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pact_cotrain.errors import UserError
from pact_cotrain.sandbox.pool import error_observation
from pact_cotrain.sandbox.worker import format_tool_output
from pact_cotrain.tools.loop import ASYNC_TOOLS


class UserToolError(UserError):
    """A user's tool, environment or MCP server cannot be used; the message is the whole report."""


@dataclass
class ToolOutcome:
    output: str  # the tool message the model sees
    ok: bool  # the call returned normally (and, for MCP, its result was not an error)
    timed_out: bool = False
    truncated: bool = False


@dataclass
class FunctionTool:
    name: str
    schema: dict  # {"type": "function", "function": {name, description, parameters, ...}}
    fn: Callable
    is_async: bool


def describe(fn: Callable) -> str:
    """`module.qualname` of a callable, for error messages."""
    target = getattr(fn, "__func__", fn)
    module = getattr(target, "__module__", None) or "?"
    qualname = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or repr(target)
    return f"{module}.{qualname}"


def function_tool(fn: Callable, where: str = "tools") -> FunctionTool:
    """The tool a callable stands for, its schema from transformers' get_json_schema."""
    from transformers.utils import get_json_schema

    if not callable(fn):
        raise UserToolError(f"{where}: {fn!r} is not callable; give Python functions")
    name = getattr(fn, "__name__", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise UserToolError(f"{where}: {describe(fn)} has no usable function name; give a named function (def), not a lambda or partial")
    try:
        schema = get_json_schema(fn)
    except Exception as exc:  # transformers' DocstringParsingException / TypeHintParsingException / ValueError
        reason = " ".join(str(exc).split())
        raise UserToolError(f"{where}: tool {describe(fn)}: cannot derive its schema: {reason} "
                            "(tools need type hints and a Google-style docstring with an Args section)") from None
    return FunctionTool(name, schema, fn, inspect.iscoroutinefunction(fn))


def environment_methods(env_type: type) -> tuple[list[str], bool, bool]:
    """TRL's rule: (tool method names, has reset, has get_reward). Every public function of the class
    other than `reset` and `get_reward` is a tool; listed on the class so properties are not run."""
    names, has_reset, has_reward = [], False, False
    for name, _ in inspect.getmembers(env_type, predicate=inspect.isfunction):
        if name == "reset":
            has_reset = True
        elif name == "get_reward":
            has_reward = True
        elif not name.startswith("_"):
            names.append(name)
    return names, has_reset, has_reward


def cap_output(text: str, limit: int) -> tuple[str, bool]:
    """The text cut to `limit` characters with a marker saying so (the sandbox worker's marker)."""
    if len(text) <= limit:
        return text, False
    return text[:limit] + f"... [output truncated: {len(text)} characters, limit {limit}]", True


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def timeout_reason(timeout_s: float) -> str:
    return f"timeout: the call did not finish within {timeout_s:g} s"


class CallTimeout(Exception):
    """The call did not finish in time (distinct from a TimeoutError the tool itself raised)."""


def _serve(jobs: queue.SimpleQueue) -> None:
    while (job := jobs.get()) is not None:
        fn, future = job
        if not future.set_running_or_notify_cancel():
            continue
        try:
            future.set_result(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            future.set_exception(exc)


class HomeThread:
    """One daemon thread that runs submitted callables in order (one episode's synchronous user code)."""

    def __init__(self, name: str = "pact-episode"):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=_serve, args=(self._jobs,), name=name, daemon=True).start()

    def run(self, fn: Callable[[], Any], timeout_s: float | None = None) -> Any:
        """fn()'s result or exception; CallTimeout when it runs past timeout_s (it keeps running)."""
        future: Future = Future()
        self._jobs.put((fn, future))
        try:
            return future.result(timeout_s)
        except TimeoutError:
            if future.done():  # the callable itself raised TimeoutError
                raise
            raise CallTimeout from None

    def close(self) -> None:
        self._jobs.put(None)


def await_on_loop(awaitable, timeout_s: float | None) -> Any:
    """Run an awaitable on the shared async-tools loop; CallTimeout (and the task cancelled) past timeout_s."""

    async def wrap():
        return await awaitable

    future = ASYNC_TOOLS.submit(wrap())
    try:
        return future.result(timeout_s)
    except TimeoutError:
        if future.done():
            raise
        future.cancel()
        raise CallTimeout from None


def render(name: str, value: Any, max_chars: int) -> ToolOutcome:
    text, truncated = cap_output(format_tool_output(value), max_chars)
    return ToolOutcome(text, True, truncated=truncated)


def run_call(name: str, invoke: Callable[[], Any], is_async: bool, home: HomeThread, timeout_s: float,
             max_chars: int) -> ToolOutcome:
    """One call of an in-process tool: sync ones on the episode's home thread, async ones on the shared
    loop. CallTimeout propagates (the caller replaces its home thread); a tool's exception becomes the
    error message."""
    try:
        if is_async:
            value = await_on_loop(invoke(), timeout_s)
        else:
            value = home.run(invoke, timeout_s)
            if inspect.isawaitable(value):  # a sync callable that returned a coroutine
                value = await_on_loop(value, timeout_s)
    except CallTimeout:
        raise
    except Exception as exc:  # noqa: BLE001 - a raising tool is a tool message, the episode goes on
        return ToolOutcome(error_observation(name, _reason(exc)), False)
    return render(name, value, max_chars)


# -- sandbox ---------------------------------------------------------------------------------------


def sandbox_source(tool: FunctionTool) -> tuple[str, str]:
    """(source for the sandbox worker, the directory put on its sys.path): a stub named like the tool
    that imports the function by module path inside the worker and calls it. The worker runs an
    isolated interpreter, so only functions importable from a module file can run there."""
    fn = tool.fn
    module_name, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    why = None
    if tool.is_async:
        why = "it is async (the sandbox worker runs sync functions only)"
    elif module_name in (None, "__main__") or "<locals>" in qualname or "<lambda>" in qualname:
        why = "it is not importable by module path (define it at the top level of a module file, not in __main__ or inside a function)"
    module = sys.modules.get(module_name or "")
    file = getattr(module, "__file__", None)
    if why is None and not file:
        why = f"its module {module_name} has no file"
    if why is None:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
        if getattr(obj, "__wrapped__", obj) is not getattr(fn, "__wrapped__", fn) and obj is not fn:
            why = f"{module_name}.{qualname} does not lead back to it"
    if why is not None:
        raise UserToolError(f"sandbox=True: tool {describe(fn)} cannot run in the sandbox worker: {why}")
    path = Path(file).resolve()
    depth = len(module_name.split(".")) + (path.name == "__init__.py")
    root = str(path.parents[depth - 1])
    source = (
        "import importlib, sys\n"
        f"if {root!r} not in sys.path:\n"
        f"    sys.path.insert(0, {root!r})\n"
        f"_target = importlib.import_module({module_name!r})\n"
        f"for _part in {qualname!r}.split('.'):\n"
        "    _target = getattr(_target, _part)\n"
        f"def {tool.name}(**kwargs):\n"
        "    return _target(**kwargs)\n"
    )
    return source, root
