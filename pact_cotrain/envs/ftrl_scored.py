"""Episode logic shared by the environments scored by FTRL's rules (toolworld, FTRL).

A subclass says how a task's tools execute (`_load(task)` prepares, `execute(call) -> (output, ok)`
runs one validated call); this class does the rest: one assistant turn through `run_tool_turn`,
FTRL's call accounting and per-step reward (`FtrlTracker`), and the trajectory metrics.

Call accounting: a block that names a tool counts as a call (FTRL's C) even when schema validation
rejects it (it can solve nothing); a block that cannot be read as a call at all is a format error
only, and makes a call-less step "malformed" (-0.3). Only calls that ran successfully can solve
expected strings, so an error message echoing an argument never scores.
"""

from __future__ import annotations

import copy

from pact_cotrain.data.trace_format import Task
from pact_cotrain.envs.base import StepResult, ToolCall
from pact_cotrain.envs.tool_turn import run_tool_turn
from pact_cotrain.rewards.ftrl import FtrlTracker, contains_answer

REWARD_MODES = ("solve_f1", "step_mean")


class FtrlScoredEnv:
    """One episode (the Environment protocol) scored as FTRL scores it."""

    def __init__(self, max_steps: int, reward: str = "solve_f1"):
        if reward not in REWARD_MODES:
            raise ValueError(f"reward must be one of {REWARD_MODES}, got {reward!r}")
        self.max_steps = max_steps
        self.reward_mode = reward
        self.task: Task | None = None
        self._begin([], {}, "")  # a usable (empty) state even before reset

    # -- what a subclass provides

    def _load(self, task: Task) -> None:
        """Prepare tool execution for `task`."""
        raise NotImplementedError

    def execute(self, call: ToolCall) -> tuple[str, bool]:
        """(observation, ok) for one validated call."""
        raise NotImplementedError

    # -- the episode

    def _begin(self, tools: list[dict], unsolved: dict, answer: str) -> None:
        self._tools = tools
        self._tracker = FtrlTracker(unsolved)
        self._answer = answer
        self._n_steps = 0
        self._format_errors = 0
        self._final_content = ""

    def reset(self, task: Task) -> tuple[list[dict], list[dict]]:
        self.task = task
        meta = task.metadata
        self._load(task)
        unsolved = meta.get("unsolved_set") if isinstance(meta.get("unsolved_set"), dict) else {}
        self._begin(task.tools, unsolved, str(meta.get("answer", "")))
        return copy.deepcopy(task.messages), copy.deepcopy(task.tools)

    def step(self, assistant_text: str) -> StepResult:
        self._n_steps += 1
        turn = run_tool_turn(assistant_text, self._tools, self.execute)
        n_solved = sum(self._tracker.record_call(a.name, a.ok_output) for a in turn.attempts)
        self._format_errors += turn.n_format_errors
        self._final_content = turn.content
        reward = self._tracker.record_step(turn.n_attempts, n_solved, turn.visible_text, turn.malformed, self._answer)
        info = {"n_calls": turn.n_attempts, "n_format_errors": turn.n_format_errors, "n_solved": n_solved,
                "n_tool_errors": turn.n_tool_errors}
        return StepResult(turn.tool_messages, turn.done(self._n_steps, self.max_steps), reward, info)

    def metrics(self) -> dict[str, float]:
        t = self._tracker
        out = {
            "solve_r": t.solve_r,
            "solve_p": t.solve_p,
            "solve_f1": t.solve_f1,
            # The answer must be in the visible text of the last turn, outside any call block.
            "answer_correct": float(contains_answer(self._final_content, self._answer)),
            "format_errors": float(self._format_errors),
            "n_calls": float(t.C),
            "n_solved": float(t.S),
            "n_steps": float(self._n_steps),
            "step_mean": t.step_mean,
            "step_reward_sum": float(sum(s["reward"] for s in t.steps)),
        }
        out["reward"] = out[self.reward_mode]
        return out
