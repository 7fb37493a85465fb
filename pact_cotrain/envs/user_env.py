"""A user's own tools as the project's Environment: TRL's `tools` and `environment_factory`, and MCP servers.

    factory = user_env_factory(tools=[lookup], environment_factory=ShopEnv, mcp_servers=[...])
    env = factory(task); messages, schemas = env.reset(task); result = env.step(assistant_text)

TRL 1.16's GRPOTrainer semantics, kept:

* `tools`: plain functions shared by every episode; schema from transformers' `get_json_schema`.
* `environment_factory`: a class (or any callable returning an instance) with `reset(**row)`; every
  other public method is a tool, an optional `get_reward()` (sync or async) scores the episode.
  `reset` returns None or a string appended to the last user message. A dict of factories picks one
  per row by the row's `environment` column, which (as in TRL) is then not passed to `reset`.
* The row given to `reset(**row)`: what TRL passes, i.e. every column of the row, with the prompt
  under TRL's name `prompt` (our `messages`). Left out: `messages` and `tools` (the prompt and the
  schemas the model sees are ours to build) and `trace` (the expert trace is privileged: the rollout
  must not see it). A `reset` without `**kwargs` gets only the columns it names.

Differences from TRL, on purpose: one fresh instance per episode (TRL pools instances and resets
them; a TRL class supports both); the tool message of a dict or list is JSON, not `str()`; a raising
tool's message is `an error occurred when calling NAME: ExcType: message` (the project's wording).

Calls are parsed from the assistant text with the project's parser (`run_tool_turn`), so the
rollout's tokens stay exactly the ones sampled. What the model is shown are the schemas of the tools
that run; a row's `tools` column, or a trace call, naming a tool nothing runs is refused in one line.

Steps of different episodes may run concurrently (`concurrent_steps`): all synchronous user code of
one episode runs on that episode's own thread, async tools on a shared event loop.
"""

from __future__ import annotations

import copy
import inspect
import math
import os
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

from pact_cotrain.data.trace_format import Task
from pact_cotrain.envs.base import StepResult, ToolCall
from pact_cotrain.envs.tool_turn import run_tool_turn
from pact_cotrain.sandbox.pool import error_observation
from pact_cotrain.tools.functions import (CallTimeout, FunctionTool, HomeThread, ToolOutcome, UserToolError,
                                          await_on_loop, cap_output, describe, environment_methods, function_tool,
                                          run_call, sandbox_source, timeout_reason)

__all__ = ["UserEnv", "UserEnvFactory", "UserToolError", "user_env_factory", "reset_row"]

# Columns of our row that never reach `reset(**row)` (see the module docstring).
HIDDEN_COLUMNS = ("messages", "tools", "trace")


def reset_row(task: Task, multi_environment: bool) -> dict:
    """The keyword arguments TRL would give `reset(**row)` for this task's row."""
    row = {"id": task.id, "prompt": copy.deepcopy(task.messages)}
    row.update({k: v for k, v in task.metadata.items() if k not in HIDDEN_COLUMNS})
    if multi_environment:
        row.pop("environment", None)
    return row


def _kwargs_for(fn: Callable, row: dict) -> dict:
    """All of the row for a `**kwargs` signature, else only the parameters it names."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return row
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return row
    names = {p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    return {k: v for k, v in row.items() if k in names}


@dataclass
class _EnvSpec:
    """One environment factory, probed once: its tool methods' schemas and whether it scores."""

    key: str | None
    factory: Callable
    type_name: str
    methods: list[str]
    schemas: list[dict]
    method_async: dict[str, bool]
    has_reward: bool


@dataclass
class _Counts:
    n_steps: int = 0
    n_calls: int = 0  # valid calls executed (every block the parser accepted)
    format_errors: int = 0  # blocks the parser or the schema check rejected (not executed)
    tool_errors: int = 0  # executed calls that failed: raised, timed out, or an MCP error result
    tool_timeouts: int = 0  # executed calls stopped by tool_timeout_s (also counted in tool_errors)
    outputs_truncated: int = 0  # outputs cut to max_tool_output_chars


class UserEnvFactory:
    """Builds one `UserEnv` per episode; see `user_env_factory`."""

    def __init__(self, tools, environment_factory, mcp_servers, max_steps: int, tool_timeout_s: float,
                 max_tool_output_chars: int, sandbox: bool):
        if tools is None and environment_factory is None and not mcp_servers:
            raise UserToolError("no tools given: pass tools=[functions], environment_factory=... or mcp_servers=[...]")
        if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
            raise UserToolError(f"max_steps must be a positive integer, got {max_steps!r}")
        if not isinstance(tool_timeout_s, (int, float)) or isinstance(tool_timeout_s, bool) or not tool_timeout_s > 0:
            raise UserToolError(f"tool_timeout_s must be a positive number of seconds, got {tool_timeout_s!r}")
        if not isinstance(max_tool_output_chars, int) or isinstance(max_tool_output_chars, bool) or max_tool_output_chars < 1:
            raise UserToolError(f"max_tool_output_chars must be a positive integer, got {max_tool_output_chars!r}")
        self.max_steps = max_steps
        self.tool_timeout_s = float(tool_timeout_s)
        self.max_tool_output_chars = max_tool_output_chars
        self.sandbox = bool(sandbox)

        if tools is not None and (isinstance(tools, (str, bytes, dict)) or not hasattr(tools, "__iter__")):
            raise UserToolError(f"tools must be a list of Python functions, got {type(tools).__name__}")
        self.functions: list[FunctionTool] = [function_tool(fn, f"tools[{i}]") for i, fn in enumerate(tools or [])]
        self._check_unique([t.name for t in self.functions], "tools")

        self.multi_environment = isinstance(environment_factory, dict)
        if environment_factory is None:
            factories: dict = {}
        elif self.multi_environment:
            if not environment_factory:
                raise UserToolError("environment_factory is an empty dict; map environment names to factories")
            factories = dict(environment_factory)
        else:
            factories = {None: environment_factory}
        self.envs: dict[str | None, _EnvSpec] = {key: self._probe(key, f) for key, f in factories.items()}

        self.mcp = None
        if mcp_servers:
            from pact_cotrain.tools.mcp import MCPToolSource  # the mcp SDK is needed only here

            self.mcp = MCPToolSource(mcp_servers)
        mcp_schemas = self.mcp.schemas if self.mcp is not None else []
        for spec in self.envs.values():
            self._check_unique([t.name for t in self.functions] + spec.methods + [_name_of(s) for s in mcp_schemas],
                               "tools" + (f" of environment {spec.key!r}" if spec.key is not None else ""))
        if not self.envs:
            self._check_unique([t.name for t in self.functions] + [_name_of(s) for s in mcp_schemas], "tools")

        self._sandbox = None
        self._sandbox_codes: dict[str, str] = {}
        if self.sandbox and self.functions:
            self._start_sandbox()

    # -- construction helpers

    @staticmethod
    def _check_unique(names: list[str], where: str) -> None:
        seen = set()
        for name in names:
            if name in seen:
                raise UserToolError(f"{where}: two tools are named {name!r} (functions, environment methods and MCP "
                                    "tools share one namespace); rename one")
            seen.add(name)

    def _probe(self, key, factory) -> _EnvSpec:
        where = "environment_factory" + (f"[{key!r}]" if key is not None else "")
        if not callable(factory):
            raise UserToolError(f"{where}: {factory!r} is not callable; give a class or a function returning an environment")
        try:
            instance = factory()
        except Exception as exc:  # noqa: BLE001 - reported in one line
            raise UserToolError(f"{where}: {describe(factory)}() raised {type(exc).__name__}: {exc}") from None
        env_type = type(instance)
        methods, has_reset, has_reward = environment_methods(env_type)
        if not has_reset:
            raise UserToolError(f"{where}: {env_type.__qualname__} has no `reset` method (TRL's contract: reset(**row) "
                                "returns None or a string)")
        schemas, is_async = [], {}
        for name in methods:
            tool = function_tool(getattr(instance, name), f"{where} method")
            schemas.append(tool.schema)
            is_async[name] = tool.is_async
        return _EnvSpec(key, factory, env_type.__qualname__, methods, schemas, is_async, has_reward)

    def _start_sandbox(self) -> None:
        import atexit

        from pact_cotrain.sandbox.pool import ToolSandbox

        roots = {}
        for tool in self.functions:
            source, root = sandbox_source(tool)
            self._sandbox_codes[tool.name] = source
            roots[tool.name] = root
        sandbox = ToolSandbox(n_workers=max(1, min(4, os.cpu_count() or 1)), timeout_s=self.tool_timeout_s,
                              max_output_chars=self.max_tool_output_chars)
        if sandbox.isolation.kind == "bwrap":
            hidden = [n for n, r in roots.items() if r == "/tmp" or r.startswith("/tmp/")]
            if hidden:
                sandbox.close()
                raise UserToolError(f"sandbox=True: tool {hidden[0]} lives under {roots[hidden[0]]}, which the sandbox "
                                    "hides (it mounts a private /tmp); move the module out of /tmp")
        self._sandbox = sandbox
        atexit.register(sandbox.close)
        weakref.finalize(self, sandbox.close)

    # -- per task

    def env_spec(self, task: Task | None) -> _EnvSpec | None:
        """The environment a task's episodes use (by its `environment` column with a dict of factories)."""
        if not self.envs:
            return None
        if not self.multi_environment:
            return self.envs[None]
        task_id = task.id if task is not None else "<none>"
        key = task.metadata.get("environment") if task is not None else None
        known = sorted(map(str, self.envs))
        if key is None:
            raise UserToolError(f"task {task_id!r} has no `environment` column; with a dict environment_factory "
                                f"every row names its environment (one of {known})")
        if key not in self.envs:
            raise UserToolError(f"task {task_id!r}: environment {key!r} is not among environment_factory's keys {known}")
        return self.envs[key]

    def tool_schemas(self, task: Task | None = None) -> list[dict]:
        """The schemas a task's episodes show the model: functions, then environment methods, then MCP tools."""
        spec = self.env_spec(task)
        schemas = [copy.deepcopy(t.schema) for t in self.functions]
        if spec is not None:
            schemas += copy.deepcopy(spec.schemas)
        if self.mcp is not None:
            schemas += copy.deepcopy(self.mcp.schemas)
        return schemas

    def check_task(self, task: Task) -> None:
        """Refuse, in one line, a row whose `tools` column or trace names a tool nothing runs."""
        runnable = [_name_of(s) for s in self.tool_schemas(task)]
        offered = ", ".join(runnable) or "none"
        for i, schema in enumerate(task.tools or []):
            name = _name_of(schema)
            if name not in runnable:
                raise UserToolError(f"task {task.id!r}: tools[{i}] {name!r} is offered by the row but no tool, environment "
                                    f"method or MCP server runs it (runnable: {offered})")
        for i, message in enumerate(task.trace or []):
            for j, call in enumerate(message.get("tool_calls") or []):
                if call.get("name") not in runnable:
                    raise UserToolError(f"task {task.id!r}: trace[{i}].tool_calls[{j}] calls {call.get('name')!r}, which no "
                                        f"tool, environment method or MCP server offers (runnable: {offered})")

    def close(self) -> None:
        """Stop this factory's sandbox workers and MCP servers now (otherwise at exit)."""
        if self._sandbox is not None:
            self._sandbox.close()
        if self.mcp is not None:
            self.mcp.close()

    def __call__(self, task: Task) -> "UserEnv":
        return UserEnv(self, self.env_spec(task))

    def call_tool(self, task: Task | None, name: str, arguments: dict) -> str:
        """One call outside a rollout (after the task's reset, as in an episode): the tool message."""
        task = task or Task(id="tools-call", messages=[{"role": "user", "content": ""}], tools=[])
        if not isinstance(arguments, dict):
            raise UserToolError(f"arguments must be a JSON object, got {type(arguments).__name__}")
        env = self(task)
        try:
            _, schemas = env.reset(task)
            names = [_name_of(s) for s in schemas]
            if name not in names:
                raise UserToolError(f"no tool named {name!r} (offered: {', '.join(names) or 'none'})")
            return env.run_call(name, arguments).output
        finally:
            env.close()


def _name_of(schema: dict) -> str:
    fn = schema.get("function", schema) if isinstance(schema, dict) else {}
    return fn.get("name") if isinstance(fn, dict) else None


class UserEnv:
    """One episode over a user's tools (the Environment protocol)."""

    concurrent_steps = True  # the engine may step episodes of this env side by side (see module docstring)

    def __init__(self, factory: UserEnvFactory, spec: _EnvSpec | None):
        self.factory = factory
        self.spec = spec
        self.max_steps = factory.max_steps
        self.task: Task | None = None
        self.instance = None
        self.counts = _Counts()
        self._schemas: list[dict] = []
        self._home = HomeThread()
        self._finalizer = weakref.finalize(self, self._home.close)
        self._reward: tuple[int, float] | None = None  # (n_steps when computed, value)

    # -- the protocol

    def reset(self, task: Task) -> tuple[list[dict], list[dict]]:
        factory = self.factory
        factory.check_task(task)
        self.task = task
        self.counts = _Counts()
        self._reward = None
        messages = copy.deepcopy(task.messages)
        if self.spec is not None:
            spec = self.spec
            self.instance = self._user_code(spec.factory, f"{describe(spec.factory)}()")
            row = _kwargs_for(self.instance.reset, reset_row(task, factory.multi_environment))
            observation = self._user_code(lambda: self.instance.reset(**row), f"{spec.type_name}.reset")
            if observation is not None:
                if not isinstance(observation, str):
                    raise UserToolError(f"task {task.id!r}: {spec.type_name}.reset returned {type(observation).__name__}; "
                                        "it must return None or a string")
                users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
                target = messages[users[-1] if users else -1]
                target["content"] = (target.get("content") or "") + observation
        self._schemas = factory.tool_schemas(task)
        return messages, copy.deepcopy(self._schemas)

    def step(self, assistant_text: str) -> StepResult:
        self.counts.n_steps += 1
        turn = run_tool_turn(assistant_text, self._schemas, self._execute)
        self.counts.n_calls += turn.n_valid
        self.counts.format_errors += turn.n_format_errors
        self.counts.tool_errors += turn.n_tool_errors
        info = {"n_calls": turn.n_valid, "n_format_errors": turn.n_format_errors, "n_tool_errors": turn.n_tool_errors}
        return StepResult(turn.tool_messages, turn.done(self.counts.n_steps, self.max_steps), 0.0, info)

    def metrics(self) -> dict[str, float]:
        c = self.counts
        out = {"n_steps": float(c.n_steps), "n_calls": float(c.n_calls), "format_errors": float(c.format_errors),
               "tool_errors": float(c.tool_errors), "tool_timeouts": float(c.tool_timeouts),
               "outputs_truncated": float(c.outputs_truncated)}
        reward = self.env_reward()
        if reward is not None:
            out["env_reward"] = reward  # the environment's get_reward() for the episode so far
        out["reward"] = reward if reward is not None else 0.0
        return out

    def close(self) -> None:
        self._finalizer()

    # -- the environment's reward

    def env_reward(self) -> float | None:
        """get_reward() of the episode's environment (None when it has none); computed once per step count."""
        spec = self.spec
        if spec is None or not spec.has_reward or self.instance is None:
            return None
        if self._reward is not None and self._reward[0] == self.counts.n_steps:
            return self._reward[1]
        where = f"task {self.task.id!r}: {spec.type_name}.get_reward"
        value = self._user_code(self.instance.get_reward, f"{spec.type_name}.get_reward")  # sync or async
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserToolError(f"{where} returned {value!r}; it must return a finite number")
        if not math.isfinite(value):
            raise UserToolError(f"{where} returned {value!r}, which is not finite")
        self._reward = (self.counts.n_steps, float(value))
        return float(value)

    # -- calls

    def _user_code(self, fn: Callable[[], Any], what: str) -> Any:
        """Constructor, reset or get_reward of the user's environment, on the episode's thread. These are
        not tool calls: if one raises or hangs, the rollout stops with one line rather than train on it."""
        task_id = self.task.id if self.task is not None else "?"
        try:
            value = self._home.run(fn, self.factory.tool_timeout_s)
            if inspect.isawaitable(value):
                value = await_on_loop(value, self.factory.tool_timeout_s)
            return value
        except CallTimeout:
            raise UserToolError(f"task {task_id!r}: {what} did not return within tool_timeout_s="
                                f"{self.factory.tool_timeout_s:g} s") from None
        except UserToolError:
            raise
        except Exception as exc:  # noqa: BLE001 - one line naming the task and the method
            raise UserToolError(f"task {task_id!r}: {what} raised {type(exc).__name__}: {' '.join(str(exc).split())}") from None

    def _execute(self, call: ToolCall) -> tuple[str, bool]:
        outcome = self.run_call(call.name, call.arguments)
        return outcome.output, outcome.ok

    def run_call(self, name: str, arguments: dict) -> ToolOutcome:
        """Execute one call of a tool this episode offers; never raises for a tool's own failure (a dead MCP
        server does raise: its calls cannot be answered)."""
        factory = self.factory
        timeout_s, cap = factory.tool_timeout_s, factory.max_tool_output_chars
        function = next((t for t in factory.functions if t.name == name), None)
        spec = self.spec
        try:
            if function is not None and factory._sandbox is not None:
                result = factory._sandbox.call(factory._sandbox_codes, name, arguments)
                timed_out = not result.ok and (result.error or "").startswith("timeout")
                outcome = ToolOutcome(result.output, result.ok, timed_out, result.truncated)
            elif function is not None:
                outcome = run_call(name, lambda: function.fn(**arguments), function.is_async, self._home, timeout_s, cap)
            elif spec is not None and name in spec.methods:
                method = getattr(self.instance, name)
                outcome = run_call(name, lambda: method(**arguments), spec.method_async[name], self._home, timeout_s, cap)
            elif factory.mcp is not None and factory.mcp.offers(name):
                text, is_error, timed_out = factory.mcp.call(name, arguments, timeout_s)
                text, truncated = cap_output(error_observation(name, text) if is_error else text, cap)
                outcome = ToolOutcome(text, not is_error, timed_out, truncated)
            else:
                outcome = ToolOutcome(error_observation(name, "no such tool"), False)
        except CallTimeout:
            # The stuck call keeps its thread; the episode's later calls get a fresh one.
            self._home.close()
            self._home = HomeThread()
            self._finalizer.detach()
            self._finalizer = weakref.finalize(self, self._home.close)
            outcome = ToolOutcome(error_observation(name, timeout_reason(timeout_s)), False, timed_out=True)
        self.counts.tool_timeouts += outcome.timed_out
        self.counts.outputs_truncated += outcome.truncated
        return outcome


def user_env_factory(tools=None, environment_factory=None, mcp_servers=None, max_steps: int = 10,
                     tool_timeout_s: float = 30.0, max_tool_output_chars: int = 16384,
                     sandbox: bool = False) -> UserEnvFactory:
    """An environment factory (task -> Environment) over a user's tools; bad input is refused at once, in one line.

    tools: Python functions (TRL's `tools=`); environment_factory: a class or callable, or a dict of them
    chosen by the row's `environment` column (TRL's `environment_factory=`); mcp_servers: MCP servers
    whose tools join ({name, command, args, env} over stdio, or {name, url} over streamable HTTP).
    sandbox: run the function tools in the sandbox worker (they must be importable by module path).
    """
    return UserEnvFactory(tools, environment_factory, mcp_servers, max_steps, tool_timeout_s,
                          max_tool_output_chars, sandbox)
