"""Evaluate a policy on held-out toolworld tasks: greedy, prompt-only, multi-turn.

Metrics (means over episodes): FTRL's Solve-R / Solve-P / Solve-F1, answer accuracy, and
tool-call validity: the share of episodes with at least one well-formed call of an offered tool,
and the share of call blocks that parsed and validated against the tool schemas.
"""

from __future__ import annotations

import json
from statistics import mean

from pact_cotrain.data.trace_format import Task
from pact_cotrain.envs.parsing import parse_tool_calls
from pact_cotrain.envs.toolworld import ToolworldEnv
from pact_cotrain.progress import Progress
from pact_cotrain.rollout.engine import Episode, RolloutEngine, SamplingConfig


def call_validity(episode: Episode, tools: list[dict]) -> tuple[int, int]:
    """(valid call blocks, all call blocks) over the episode's assistant turns."""
    valid = blocks = 0
    for msg in episode.messages:
        if msg["role"] == "assistant":
            parsed = parse_tool_calls(msg["content"], tools)
            valid += len(parsed.calls)
            blocks += len(parsed.calls) + len(parsed.errors)
    return valid, blocks


def evaluate_toolworld(model, tokenizer, tasks: list[Task], sampling: SamplingConfig | None = None,
                       episodes_out: str | None = None, progress: str | None = "eval toolworld") -> dict:
    """`progress`: the label of an episode counter with an ETA (a bar on a terminal, a line at least
    every 30 s in a log file); None for none."""
    sampling = sampling or SamplingConfig(greedy=True, max_turns=4, max_new_tokens_per_turn=96,
                                          max_completion_tokens=400)
    was_training = model.training
    model.eval()
    engine = RolloutEngine(model, tokenizer, lambda task: ToolworldEnv(max_steps=sampling.max_turns), sampling)
    bar = Progress(progress, total=len(tasks), unit="episode") if progress else None
    try:
        episodes = engine.rollout(tasks, k=1, seed=0,
                                  on_episode_done=(lambda _episode: bar.advance()) if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    model.train(was_training)
    by_id = {t.id: t for t in tasks}
    rows = []
    for ep in episodes:
        valid, blocks = call_validity(ep, by_id[ep.task_id].tools)
        rows.append({**{k: float(ep.metrics.get(k, 0.0)) for k in ("solve_r", "solve_p", "solve_f1",
                                                                   "answer_correct", "n_calls")},
                     "valid_call_episodes": float(valid > 0), "valid_calls": valid, "call_blocks": blocks})
    if episodes_out:
        with open(episodes_out, "w") as handle:
            for ep, row in zip(episodes, rows):
                handle.write(json.dumps({"task_id": ep.task_id, "messages": ep.messages, "metrics": row,
                                         "stop_reason": ep.stop_reason}) + "\n")
    summary = {k: mean(r[k] for r in rows) for k in ("solve_r", "solve_p", "solve_f1", "answer_correct",
                                                     "valid_call_episodes", "n_calls")}
    total_blocks = sum(r["call_blocks"] for r in rows)
    summary["valid_call_blocks"] = sum(r["valid_calls"] for r in rows) / total_blocks if total_blocks else 0.0
    summary["n_episodes"] = len(rows)
    summary["max_turns"] = sampling.max_turns
    return summary
