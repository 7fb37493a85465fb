"""The "bfcl" benchmark: per-category accuracy and their mean (bfcl_avg), and its registration."""

from __future__ import annotations

from statistics import mean

from pact_cotrain.data.trace_format import Task

from .data import load_bfcl
from .env import MAX_STEPS_PER_TURN, MAX_TOTAL_STEPS, BfclEnv
from .wheel import CATEGORIES

AVG_KEY = "bfcl_avg"
COLUMNS = CATEGORIES + (AVG_KEY,)


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


def protocol_env(task: Task) -> BfclEnv:
    """BFCL's own limits: 20 steps with calls per user turn (one more force-quits the entry) and no
    total beyond that, i.e. at most (20 + 1) steps per user turn, the last one ending the turn."""
    n_user_turns = len(task.metadata.get("user_turns") or [task.messages])
    return BfclEnv(max_total_steps=n_user_turns * (MAX_STEPS_PER_TURN + 1))


def _register() -> None:
    from pact_cotrain.eval.benchmarks import Benchmark, register

    register(Benchmark("bfcl", _load, protocol_env, MAX_TOTAL_STEPS, summarize, COLUMNS))
