"""The benchmarks `pact eval` knows: how to load a benchmark's tasks, make an environment for one
episode, and turn per-episode metrics into the benchmark's reported numbers.

Each benchmark module registers itself here; `pact eval --benchmarks a,b` looks them up by name and
`--data NAME=PATH` replaces the default file with another in the same format.

Each benchmark also has its evaluation protocol (`PROTOCOLS`, `protocol_of`): the turn limit, the
new tokens per turn, the completion cap and the temperature its official harness runs with, and
where that is written. `pact eval` uses them unless told otherwise; `eval_settings` resolves a run's
overrides against them and lists every deviation, which results.json and results.md record.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import mean
from typing import Callable

from pact_cotrain.data.trace_format import Task
from pact_cotrain.envs.base import Environment


@dataclass(frozen=True)
class Protocol:
    """How a benchmark's official harness runs one episode."""

    max_turns: int | None  # assistant turns per episode; None: only the environment's own limit
    max_new_tokens_per_turn: int
    max_completion_tokens: int | None  # None: no cap but the model's context
    temperature: float  # 0: greedy
    source: str  # where these numbers come from


# Studied in the released code of each harness (read, not copied):
# - FTRL (github.com/bytedance/FTRL, Code/evaluation/evaluation_self.py and evaluation_toolhop.py):
#   --max_turns 20 for its own test set and 9 for ToolHop, --temperature 0 (do_sample off), and
#   utils.get_params: max_new_tokens 1024 per generate call without thinking (8192 with it); the
#   conversation itself has no token cap.
# - BFCL (bfcl-eval==2026.3.23): MAXIMUM_STEP_LIMIT = 20 steps per user turn (one more force-quits;
#   BfclEnv enforces it, with no total beyond that), temperature 0.001 (greedy here), and the local
#   handler's max_tokens = min(4096, context - prompt - 2) per step.
PROTOCOLS: dict[str, Protocol] = {
    "toolworld": Protocol(10, 256, 4096, 0.0, "this project's synthetic benchmark (no external harness)"),
    "ftrl": Protocol(20, 1024, None, 0.0, "FTRL evaluation_self.py: 20 turns, temperature 0, 1024 new tokens"),
    "toolhop": Protocol(9, 1024, None, 0.0, "FTRL evaluation_toolhop.py: 9 turns, temperature 0, 1024 new tokens"),
    "toolhop_mandatory": Protocol(9, 1024, None, 0.0, "FTRL evaluation_toolhop.py (Mandatory)"),
    "toolhop_direct": Protocol(1, 1024, None, 0.0, "FTRL evaluation_toolhop.py (Direct: one answer, no tools)"),
    "bfcl": Protocol(None, 4096, None, 0.0, "bfcl-eval: 20 steps per user turn, temperature 0.001, "
                                            "max_tokens min(4096, context left)"),
}
# A turn or completion cap of None runs as this (the engine needs a number).
UNCAPPED = 10**9


@dataclass
class Benchmark:
    name: str
    load: Callable[[str | None], list[Task]]  # a path in the benchmark's format, or None for the default
    make_env: Callable[[Task], Environment]  # a fresh environment for one episode
    max_turns: int  # assistant turns allowed per episode
    summarize: Callable[[list[dict]], dict[str, float]]  # per-episode metrics -> reported metrics
    columns: tuple[str, ...] = ()  # the reported metrics, in table order


def protocol_of(bench: Benchmark) -> Protocol:
    """The benchmark's official protocol; one not listed gets its own turn limit and run_eval's old defaults."""
    return PROTOCOLS.get(bench.name) or Protocol(bench.max_turns, 256, 4096, 0.0, "no official protocol known")


@dataclass
class EvalSettings:
    """What one benchmark is run with, and how that differs from its protocol."""

    max_turns: int | None
    max_new_tokens_per_turn: int
    max_completion_tokens: int | None
    temperature: float
    deviations: list[str]  # e.g. "max_turns 3 (protocol 9)"; empty when the protocol is followed

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def _cap(value: int | None) -> str:
    return "none" if value is None else str(value)


def eval_settings(bench: Benchmark, max_turns: int | None = None, max_new_tokens_per_turn: int | None = None,
                  max_completion_tokens: int | None = None, temperature: float | None = None) -> EvalSettings:
    """The protocol with the given overrides (None: the protocol's value). `max_turns` only lowers the
    limit: the environment enforces the benchmark's own limit too."""
    p = protocol_of(bench)
    turns = p.max_turns if max_turns is None else (max_turns if p.max_turns is None else min(p.max_turns, max_turns))
    chosen = {"max_turns": turns,
              "max_new_tokens_per_turn": p.max_new_tokens_per_turn if max_new_tokens_per_turn is None
              else max_new_tokens_per_turn,
              "max_completion_tokens": p.max_completion_tokens if max_completion_tokens is None else max_completion_tokens,
              "temperature": p.temperature if temperature is None else temperature}
    deviations = [f"{key} {_cap(value)} (protocol {_cap(getattr(p, key))})" for key, value in chosen.items()
                  if value != getattr(p, key)]
    return EvalSettings(**chosen, deviations=deviations)


BENCHMARKS: dict[str, Benchmark] = {}


def register(benchmark: Benchmark) -> Benchmark:
    BENCHMARKS[benchmark.name] = benchmark
    return benchmark


def mean_of(*keys: str) -> Callable[[list[dict]], dict[str, float]]:
    def summarize(episodes: list[dict]) -> dict[str, float]:
        return {k: mean(float(e.get(k, 0.0)) for e in episodes) if episodes else 0.0 for k in keys}

    return summarize


def _toolworld() -> Benchmark:
    from pact_cotrain.data.trace_format import load_tasks
    from pact_cotrain.envs.toolworld import ToolworldEnv, generate_tasks

    def load(path: str | None) -> list[Task]:
        return load_tasks(path) if path else generate_tasks(100, seed=1000, split="test")

    return Benchmark("toolworld", load, lambda task: ToolworldEnv(max_steps=10), 10,
                     mean_of("solve_r", "solve_p", "solve_f1", "answer_correct"),
                     ("solve_r", "solve_p", "solve_f1", "answer_correct"))


register(_toolworld())


def _load_optional() -> None:
    """Benchmarks that live in their own modules register themselves on import (lazily, here)."""
    for module in ("pact_cotrain.envs.ftrl", "pact_cotrain.envs.toolhop", "pact_cotrain.envs.bfcl"):
        try:
            __import__(module)
        except ImportError:
            pass


_load_optional()
