"""Trace turns from ordered calls, and their replay through a benchmark's environment.

Trace shape: per step an assistant turn with a short templated ``reasoning`` ("To find ..., I will
call NAME with ...") and its ``tool_calls``, then one tool turn per call with the sandbox output,
and a final assistant turn whose ``content`` is the row's answer.
"""

from __future__ import annotations

import copy
import json

from pact_cotrain.data.trace_format import Task
from pact_cotrain.envs.parsing import render_assistant_text

from .goals import Goal, MinedCall


def _args_text(arguments: dict) -> str:
    if not arguments:
        return "no arguments"
    return ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in arguments.items())


def _purpose(call: MinedCall, goals_by_order: dict[int, Goal], bench: str) -> str:
    if bench == "toolhop" and call.goal.label:
        return f'the answer to "{call.goal.label.strip()}"'
    if call.deps:
        used = ", ".join(json.dumps(goals_by_order[d].expected, ensure_ascii=False) for d in sorted(call.deps))
        return f"the next fact the question needs, which builds on {used} from the earlier result"
    return "a fact the question needs"


def build_trace(steps: list[list[MinedCall]], goals: list[Goal], answer: str, bench: str) -> list[dict]:
    """Assistant turns (reasoning + tool_calls) per step; tool turns are filled in by the replay."""
    goals_by_order = {g.order: g for g in goals}
    trace = []
    for step in steps:
        sentences = [f"To find {_purpose(c, goals_by_order, bench)}, I will call {c.goal.tool} with "
                     f"{_args_text(c.arguments)}." for c in step]
        trace.append({"role": "assistant", "content": "", "reasoning": " ".join(sentences),
                      "tool_calls": [{"name": c.goal.tool, "arguments": copy.deepcopy(c.arguments)} for c in step]})
    trace.append({"role": "assistant", "content": answer,
                  "reasoning": "I now have all the information the question needs, so I can answer."})
    return trace


def replay(env, task: Task, trace: list[dict]) -> tuple[list[dict], dict[str, float], list[tuple[str, str]]]:
    """Run the assistant turns of `trace` through `env`; return (trace with the actual tool
    turns, the env's metrics, [(tool, output) of every executed call])."""
    env.reset(task)
    out: list[dict] = []
    executed: list[tuple[str, str]] = []
    for msg in trace:
        if msg["role"] != "assistant":
            continue
        out.append(copy.deepcopy(msg))
        result = env.step(render_assistant_text(msg))
        for tool_msg in result.tool_messages:
            out.append({"role": "tool", "name": tool_msg["name"], "content": tool_msg["content"]})
            executed.append((tool_msg["name"], tool_msg["content"]))
        if result.done:
            break
    return out, env.metrics(), executed
