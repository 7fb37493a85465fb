"""ToolHop: the environment over ToolHop tasks (Ye et al., arXiv 2501.02506).

Tasks come from ``pact_cotrain.data.readers.read_toolhop``. A call of tool NAME runs the source
in the row's ``functions`` that defines NAME (``tool_source``: among two different definitions
of the same name, the first whose signature accepts the call's arguments), only ever in a
``ToolSandbox`` worker. Calls are validated against the schemas like FTRL's; a name offered
twice (two different tools) accepts a call that fits either schema (``parse_calls``).

Answer correctness (AC), as /work/shared/data/README.md defines it: the gold answer, normalised
(lower-cased, commas removed), is a substring of the final assistant content (the visible text
of the last assistant turn, outside any call block) or of the tool output just before it (the
outputs of the step before the last one; error observations of failed calls are not tool output
and do not count). An empty gold answer never counts. At most ``max_steps`` (9) assistant steps;
the episode ends at a step with no ``<tool_call>`` markup.

Scenarios, after ToolHop's three evaluation settings:

``free``       the tools are offered and the model decides whether to use them. The prompt's
               instruction is replaced by one saying the tools may be used.
``mandatory``  the tools are offered and must be used: the prompt keeps the reader's instruction
               (FTRL's "all your information must be obtained by calling tools"), and AC only
               counts when at least one valid call (parsed, schema-valid, sent to the sandbox)
               was made in the episode.
``direct``     no tools are offered (the schema list is empty) and the prompt asks for a direct
               answer; a call block gets an "unknown tool" error observation and a format error.

Metrics: answer_correct (AC), n_calls (valid calls executed), format_errors, n_steps, and
reward = AC.
"""

from __future__ import annotations

import copy
from pathlib import Path

from pact_cotrain.data.readers import FTRL_INSTRUCTION, tool_source
from pact_cotrain.data.trace_format import Task
from pact_cotrain.envs.base import StepResult, ToolCall
from pact_cotrain.envs.ftrl import shared_data_dir, shared_sandbox
from pact_cotrain.envs.parsing import CallError, ParseResult, parse_tool_calls
from pact_cotrain.envs.tool_turn import run_tool_turn
from pact_cotrain.rewards.ftrl import normalise
from pact_cotrain.sandbox import ToolSandbox

SCENARIOS = ("free", "mandatory", "direct")
TOOLHOP_MAX_STEPS = 9

FREE_INSTRUCTION = (
    "Answer the question. You may call the given tools if they help; decide for yourself whether "
    "and when to use them.\n"
)
DIRECT_INSTRUCTION = "Answer the question directly, without calling any tool.\n"


def default_toolhop_path() -> Path:
    from pact_cotrain.data.bundled import bundled_path

    folder = shared_data_dir()  # $PACT_SHARED_DATA, else the copy shipped in the package
    return folder / "toolhop" / "toolhop_subset_public.jsonl" if folder else bundled_path("toolhop")


def answer_in(text: str, answer: str) -> bool:
    """ToolHop's AC test: normalised gold answer is a substring of the normalised text."""
    gold = normalise(answer).strip()
    return bool(gold) and gold in normalise(text)


def parse_calls(text: str, tools: list[dict]) -> ParseResult:
    """``parse_tool_calls`` with one addition for ToolHop rows that offer two different tools under
    one name (5 of the 70 public rows): a call of such a name is valid when it fits any of the
    schemas with that name (``parse_tool_calls`` alone checks only the last one)."""
    parsed = parse_tool_calls(text, tools)
    by_name: dict[str, list[dict]] = {}
    for schema in tools:
        fn = schema.get("function") if isinstance(schema, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            by_name.setdefault(fn["name"], []).append(schema)
    duplicates = {name: schemas for name, schemas in by_name.items() if len(schemas) > 1}
    if not duplicates or not parsed.errors:
        return parsed
    for i, item in enumerate(parsed.ordered):
        if isinstance(item, CallError) and item.name in duplicates:
            for schema in duplicates[item.name]:
                alternative = parse_tool_calls(item.raw, [schema])
                if alternative.calls:
                    parsed.ordered[i] = alternative.calls[0]
                    break
    parsed.calls = [c for c in parsed.ordered if isinstance(c, ToolCall)]
    parsed.errors = [e for e in parsed.ordered if isinstance(e, CallError)]
    return parsed


def scenario_messages(messages: list[dict], scenario: str) -> list[dict]:
    """The prompt for a scenario: the reader's instruction is swapped for free/direct."""
    messages = copy.deepcopy(messages)
    replacement = {"free": FREE_INSTRUCTION, "direct": DIRECT_INSTRUCTION}.get(scenario)
    if replacement is None:
        return messages
    for msg in messages:
        content = msg.get("content")
        if msg.get("role") == "user" and isinstance(content, str) and content.startswith(FTRL_INSTRUCTION):
            msg["content"] = replacement + content[len(FTRL_INSTRUCTION):]
    return messages


class ToolHopEnv:
    """One episode over a ToolHop task (the Environment protocol)."""

    def __init__(self, sandbox: ToolSandbox | None = None, max_steps: int = TOOLHOP_MAX_STEPS,
                 scenario: str = "free"):
        if scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {SCENARIOS}, got {scenario!r}")
        self._sandbox = sandbox
        self.max_steps = max_steps
        self.scenario = scenario
        self.task: Task | None = None
        self._start([], "")

    @property
    def sandbox(self) -> ToolSandbox:
        if self._sandbox is None:
            self._sandbox = shared_sandbox()
        return self._sandbox

    def _start(self, tools: list[dict], answer: str) -> None:
        self._tools = tools
        self._answer = answer
        self._n_steps = 0
        self._n_calls = 0
        self._format_errors = 0
        self._final_content = ""
        self._outputs_before_final: list[str] = []  # tool outputs of the step before the last one
        self._last_outputs: list[str] = []  # tool outputs of the last step

    def reset(self, task: Task) -> tuple[list[dict], list[dict]]:
        self.task = task
        tools = [] if self.scenario == "direct" else copy.deepcopy(task.tools)
        self._start(tools, str(task.metadata.get("answer", "")))
        return scenario_messages(task.messages, self.scenario), copy.deepcopy(tools)

    def execute(self, call: ToolCall) -> tuple[str, bool]:
        """(observation, ok): run one validated call in the sandbox with the matching source."""
        source = tool_source(self.task, call.name, call.arguments) if self.task is not None else None
        codes = {call.name: source} if source is not None else {}
        result = self.sandbox.call(codes, call.name, call.arguments)
        return result.output, result.ok

    def step(self, assistant_text: str) -> StepResult:
        self._n_steps += 1
        turn = run_tool_turn(assistant_text, self._tools, self.execute, parse=parse_calls)
        self._n_calls += turn.n_valid  # ToolHop counts only valid calls executed
        self._format_errors += turn.n_format_errors
        self._final_content = turn.content
        self._outputs_before_final, self._last_outputs = self._last_outputs, turn.outputs
        done = turn.done(self._n_steps, self.max_steps)
        reward = self._answer_correct() if done else 0.0
        info = {"n_calls": turn.n_valid, "n_format_errors": turn.n_format_errors, "n_tool_errors": turn.n_tool_errors}
        return StepResult(turn.tool_messages, done, reward, info)

    def _answer_correct(self) -> float:
        if self._n_steps == 0:
            return 0.0
        if self.scenario == "mandatory" and self._n_calls == 0:
            return 0.0
        texts = [self._final_content, *self._outputs_before_final]
        return float(any(answer_in(t, self._answer) for t in texts))

    def metrics(self) -> dict[str, float]:
        ac = self._answer_correct()
        return {
            "answer_correct": ac,
            "n_calls": float(self._n_calls),
            "format_errors": float(self._format_errors),
            "n_steps": float(self._n_steps),
            "reward": ac,
        }


def make_env(task: Task | None = None, max_steps: int = TOOLHOP_MAX_STEPS, scenario: str = "free",
             sandbox: ToolSandbox | None = None) -> ToolHopEnv:
    """EnvFactory for the rollout engine: a fresh environment per episode (shared sandbox)."""
    return ToolHopEnv(sandbox=sandbox, max_steps=max_steps, scenario=scenario)


# ---------------------------------------------------------------------------------------------
# Registration with `pact eval`


def load_toolhop(path: str | None = None) -> list[Task]:
    from pact_cotrain.data.readers import read_toolhop

    return read_toolhop(path or default_toolhop_path())


def _register() -> None:
    from pact_cotrain.eval.benchmarks import Benchmark, mean_of, register

    for name, scenario in (("toolhop", "free"), ("toolhop_mandatory", "mandatory"), ("toolhop_direct", "direct")):
        register(Benchmark(name, load_toolhop,
                           lambda task, scenario=scenario: ToolHopEnv(max_steps=TOOLHOP_MAX_STEPS, scenario=scenario),
                           TOOLHOP_MAX_STEPS, mean_of("answer_correct", "n_calls", "format_errors"),
                           ("answer_correct",)))


_register()
