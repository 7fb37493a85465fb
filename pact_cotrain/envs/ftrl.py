"""FTRL: the environment over the FTRL test set (Ye et al., arXiv 2508.08791).

Tasks come from ``pact_cotrain.data.readers.read_ftrl``: the tools are the row's schemas, the
code that answers a call is the row's ``codes[tool]``, run only in a ``ToolSandbox`` worker
(never in this process). Scoring is ``FtrlTracker`` (``pact_cotrain.rewards.ftrl``), i.e.
/work/shared/data/README.md:

    S = expected strings solved, C = tool calls made, U = initial number of expected strings
    Solve-P = S/C (1 if C = 0), Solve-R = S/U, Solve-F1 = 2S/(C+U)
    per-step reward 2k/(n+1) for a step with n >= 1 calls, k of which solved something; a step
    without a call: -0.5 empty, -0.3 malformed <tool_call>, 1/(1+remaining) with the answer,
    0.5 all solved, else 0

Episode: at most ``max_steps`` (20) assistant steps; it ends at a step with no ``<tool_call>``
markup. Accounting is the one of ``ToolworldEnv``:

* a block that names a tool counts as one of FTRL's C calls even when schema validation rejects
  it (it gets an error observation and solves nothing);
* a block that cannot be read as a call at all is a format error only, and makes a call-less
  step "malformed" (-0.3);
* only a call the sandbox ran to completion (``SandboxResult.ok``) can solve an expected string:
  an exception, timeout or crash of the tool code is shown to the model as
  ``an error occurred when calling NAME: REASON`` and counts as a call that solved nothing.
  A normal return value (even an ``{'error': ...}`` dict the tool code builds itself) is an
  output like any other, as in FTRL.

The sandbox is shared: ``shared_sandbox()`` starts one ``ToolSandbox`` on first use, every
environment made without an explicit sandbox reuses it, and it is closed at exit; creating an
environment is therefore cheap (no process is started per episode).
"""

from __future__ import annotations

import atexit
import copy
import os
import threading
from pathlib import Path

from pact_cotrain.data.trace_format import Task
from pact_cotrain.envs.base import StepResult, ToolCall
from pact_cotrain.envs.tool_turn import run_tool_turn
from pact_cotrain.rewards.ftrl import FtrlTracker, contains_answer
from pact_cotrain.sandbox import ToolSandbox

REWARD_MODES = ("solve_f1", "step_mean")
FTRL_MAX_STEPS = 20

# ---------------------------------------------------------------------------------------------
# Shared data location and the shared sandbox


def shared_data_dir() -> Path:
    """The benchmark data directory: $PACT_SHARED_DATA, else ../shared/data next to the repo."""
    env = os.environ.get("PACT_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def default_ftrl_path() -> Path:
    return shared_data_dir() / "ftrl" / "ftrl_test_public.jsonl"


_sandbox_lock = threading.Lock()
_shared: ToolSandbox | None = None
_atexit_registered = False


def shared_sandbox() -> ToolSandbox:
    """The process-wide ToolSandbox every benchmark environment uses by default.

    Created lazily on the first call (2 workers, FTRL's 10 s timeout), reused afterwards, closed
    at interpreter exit. A sandbox closed by someone else is replaced by a fresh one.
    """
    global _shared, _atexit_registered
    with _sandbox_lock:
        if _shared is None or _shared._closed:
            _shared = ToolSandbox(n_workers=2, timeout_s=10.0)
            if not _atexit_registered:
                atexit.register(close_shared_sandbox)
                _atexit_registered = True
        return _shared


def close_shared_sandbox() -> None:
    global _shared
    with _sandbox_lock:
        box, _shared = _shared, None
    if box is not None:
        box.close()


# ---------------------------------------------------------------------------------------------
# The environment


class FtrlEnv:
    """One episode over an FTRL task (the Environment protocol)."""

    def __init__(self, sandbox: ToolSandbox | None = None, max_steps: int = FTRL_MAX_STEPS,
                 reward: str = "solve_f1"):
        if reward not in REWARD_MODES:
            raise ValueError(f"reward must be one of {REWARD_MODES}, got {reward!r}")
        self._sandbox = sandbox
        self.max_steps = max_steps
        self.reward_mode = reward
        self.task: Task | None = None
        self._start({}, [], {}, "")  # a usable (empty) state even before reset

    @property
    def sandbox(self) -> ToolSandbox:
        if self._sandbox is None:
            self._sandbox = shared_sandbox()
        return self._sandbox

    def _start(self, codes: dict, tools: list[dict], unsolved: dict, answer: str) -> None:
        self._codes = codes
        self._tools = tools
        self._tracker = FtrlTracker(unsolved)
        self._answer = answer
        self._n_steps = 0
        self._format_errors = 0
        self._final_content = ""
        self._step_rewards: list[float] = []

    def reset(self, task: Task) -> tuple[list[dict], list[dict]]:
        self.task = task
        meta = task.metadata
        codes = meta.get("codes") if isinstance(meta.get("codes"), dict) else {}
        unsolved = meta.get("unsolved_set") if isinstance(meta.get("unsolved_set"), dict) else {}
        self._start(codes, task.tools, unsolved, str(meta.get("answer", "")))
        return copy.deepcopy(task.messages), copy.deepcopy(task.tools)

    def execute(self, call: ToolCall) -> tuple[str, bool]:
        """(observation, ok): run one validated call in the sandbox with the task's code."""
        result = self.sandbox.call(self._codes, call.name, call.arguments)
        return result.output, result.ok

    def step(self, assistant_text: str) -> StepResult:
        self._n_steps += 1
        turn = run_tool_turn(assistant_text, self._tools, self.execute)
        # FTRL's C counts rejected named calls too; only a call the sandbox ran to completion can solve.
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


def make_env(task: Task | None = None, max_steps: int = FTRL_MAX_STEPS, reward: str = "solve_f1",
             sandbox: ToolSandbox | None = None) -> FtrlEnv:
    """EnvFactory for the rollout engine: a fresh environment per episode (shared sandbox)."""
    return FtrlEnv(sandbox=sandbox, max_steps=max_steps, reward=reward)


# ---------------------------------------------------------------------------------------------
# Registration with `pact eval`


def load_ftrl(path: str | None = None) -> list[Task]:
    from pact_cotrain.data.readers import read_ftrl

    return read_ftrl(path or default_ftrl_path())


def _register() -> None:
    from pact_cotrain.eval.benchmarks import Benchmark, mean_of, register

    columns = ("solve_r", "solve_p", "solve_f1", "answer_correct")
    register(Benchmark("ftrl", load_ftrl, lambda task: FtrlEnv(max_steps=FTRL_MAX_STEPS), FTRL_MAX_STEPS,
                       mean_of(*columns, "n_calls", "format_errors"), columns))


_register()
