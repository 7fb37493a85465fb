"""Smoke run of the rollout engine: a few toolworld tasks, K samples each, printed in full."""

from __future__ import annotations

import time
from statistics import mean

import torch
from rich.console import Console
from rich.table import Table

from pact_cotrain.envs.toolworld import ToolworldEnv, generate_tasks
from pact_cotrain.recipes.common import load_model_and_tokenizer
from pact_cotrain.rollout.engine import RolloutEngine, SamplingConfig, component_token_counts


def run_rollout_smoke(model="smollm2-135m-instruct", n_tasks=4, k=4, seed=0, max_new_tokens=128,
                      temperature=1.0, show=4):
    console = Console(width=max(Console().width, 150))  # the table has 11 columns
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, tokenizer = load_model_and_tokenizer(model)
    tasks = generate_tasks(n_tasks, seed=seed, split="test")
    engine = RolloutEngine(model, tokenizer, lambda task: ToolworldEnv(),
                           SamplingConfig(temperature=temperature, max_new_tokens_per_turn=max_new_tokens,
                                          max_turns=4, max_completion_tokens=4 * max_new_tokens))
    started = time.time()
    episodes = engine.rollout(tasks, k=k, seed=seed)
    elapsed = time.time() - started

    for ep in episodes[:show]:
        console.rule(f"{ep.task_id} sample {ep.sample_index}: stop={ep.stop_reason} reward={ep.reward:.3f}")
        for msg in ep.messages:
            console.print(f"[bold]{msg['role']}[/bold]: {msg['content']}", markup=True, highlight=False)

    table = Table(title=f"{len(episodes)} episodes ({n_tasks} tasks x {k} samples)")
    for col in ("episode", "turns", "reasoning", "tool_call", "answer", "inserted", "Solve-R", "Solve-P",
                "Solve-F1", "format errors", "stop"):
        table.add_column(col)
    for ep in episodes:
        c, m = component_token_counts(ep, tokenizer), ep.metrics
        table.add_row(f"{ep.task_id}#{ep.sample_index}", str(len(ep.turn_spans)), str(c["reasoning"]),
                      str(c["tool_call"]), str(c["answer"]), str(c["inserted"]), f"{m.get('solve_r', 0):.2f}",
                      f"{m.get('solve_p', 0):.2f}", f"{m.get('solve_f1', 0):.2f}", str(m.get("format_errors", 0)),
                      ep.stop_reason)
    console.print(table)
    generated = sum(ep.n_generated for ep in episodes)
    console.print(
        f"mean Solve-R {mean(e.metrics.get('solve_r', 0) for e in episodes):.3f}  "
        f"Solve-P {mean(e.metrics.get('solve_p', 0) for e in episodes):.3f}  "
        f"Solve-F1 {mean(e.metrics.get('solve_f1', 0) for e in episodes):.3f}  "
        f"format errors {sum(e.metrics.get('format_errors', 0) for e in episodes)}\n"
        f"{generated} tokens generated in {elapsed:.1f} s = {generated / elapsed:.1f} tok/s (environment included)"
    )
    return episodes
