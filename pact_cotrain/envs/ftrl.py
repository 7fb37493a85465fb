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
import os
import threading
from pathlib import Path

from pact_cotrain.data.trace_format import Task
from pact_cotrain.envs.base import ToolCall
from pact_cotrain.envs.ftrl_scored import FtrlScoredEnv
from pact_cotrain.sandbox import ToolSandbox

FTRL_MAX_STEPS = 20

# ---------------------------------------------------------------------------------------------
# Shared data location and the shared sandbox


def shared_data_dir() -> Path | None:
    """$PACT_SHARED_DATA when set (a folder with ftrl/ and toolhop/), else None: the bundled copy."""
    env = os.environ.get("PACT_SHARED_DATA")
    return Path(env) if env else None


def default_ftrl_path() -> Path:
    """The FTRL file the package ships (pact_cotrain/data/bundled), unless $PACT_SHARED_DATA says otherwise."""
    from pact_cotrain.data.bundled import bundled_path

    folder = shared_data_dir()
    return folder / "ftrl" / "ftrl_test_public.jsonl" if folder else bundled_path("ftrl")


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


class FtrlEnv(FtrlScoredEnv):
    """One episode over an FTRL task (the Environment protocol); the task's tool code runs in the sandbox."""

    def __init__(self, sandbox: ToolSandbox | None = None, max_steps: int = FTRL_MAX_STEPS,
                 reward: str = "solve_f1"):
        self._sandbox = sandbox
        self._codes: dict = {}
        super().__init__(max_steps, reward)

    @property
    def sandbox(self) -> ToolSandbox:
        if self._sandbox is None:
            self._sandbox = shared_sandbox()
        return self._sandbox

    def _load(self, task: Task) -> None:
        codes = task.metadata.get("codes")
        self._codes = codes if isinstance(codes, dict) else {}

    def execute(self, call: ToolCall) -> tuple[str, bool]:
        """(observation, ok): run one validated call in the sandbox with the task's code."""
        result = self.sandbox.call(self._codes, call.name, call.arguments)
        return result.output, result.ok


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
