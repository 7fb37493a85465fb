"""The benchmarks `pact eval` knows: how to load a benchmark's tasks, make an environment for one
episode, and turn per-episode metrics into the benchmark's reported numbers.

Each benchmark module registers itself here; `pact eval --benchmarks a,b` looks them up by name and
`--data NAME=PATH` replaces the default file with another in the same format.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import mean
from typing import Callable

from pact_cotrain.data.trace_format import Task
from pact_cotrain.envs.base import Environment


@dataclass
class Benchmark:
    name: str
    load: Callable[[str | None], list[Task]]  # a path in the benchmark's format, or None for the default
    make_env: Callable[[Task], Environment]  # a fresh environment for one episode
    max_turns: int  # assistant turns allowed per episode
    summarize: Callable[[list[dict]], dict[str, float]]  # per-episode metrics -> reported metrics
    columns: tuple[str, ...] = ()  # the reported metrics, in table order


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
