"""The environment: one BFCL multi-turn episode on BFCL's backends, scored by BFCL's checker.

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
"""

from __future__ import annotations

import copy

from pact_cotrain.data.trace_format import Task
from pact_cotrain.envs.base import StepResult, ToolCall
from pact_cotrain.envs.parsing import error_observation, parse_tool_calls, split_reasoning

from .backends import _Backends
from .calls import _refusal, to_bfcl_call
from .data import category_of, render_new_tools_message

MAX_STEPS_PER_TURN = 20  # BFCL's MAXIMUM_STEP_LIMIT
MAX_TOTAL_STEPS = 50


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
