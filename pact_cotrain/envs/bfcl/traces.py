"""Expert traces for BFCL tasks: the ground truth executed on fresh backends.

Expert traces (`bfcl_expert_traces`): the trace format allows only assistant/tool messages, so a trace
cannot hold the later user turns. The default (`scope="first_turn"`) covers the first user turn only:
one assistant message with a short templated reasoning and all of that turn's gold calls (BFCL's
ground truth is one call list per turn), the real outputs of those calls on fresh backends, and a
closing assistant message; a first turn whose ground truth is empty (the needed function or parameter
is missing) gives one assistant message saying so. This is exactly a prefix of a correct episode after
`task.messages`, so it is sound both as an SFT target and as privileged context. `scope="episode"`
chains every turn's calls and outputs without the later user turns; it is only meant for privileged
context, since as an SFT target it would teach acting on requests not yet made.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable

from pact_cotrain.data.trace_format import Task

from .backends import _Backends
from .calls import gold_calls, to_bfcl_call


def _reasoning(calls: list[dict]) -> str:
    names = ", ".join(f"`{c['name']}`" for c in calls)
    n = len(calls)
    plural = "s" if n != 1 else ""
    order = "it" if n == 1 else "them in this order"
    return f"This request takes {n} tool call{plural}: {names}. I will make {order}."


def _unable(category: str) -> dict:
    if "miss_func" in category:
        text = "None of the functions I have can do this, so I cannot complete this request yet."
    elif "miss_param" in category:
        text = "I cannot do this yet: the request leaves out information I need. Could you provide the missing details?"
    else:
        text = "There is nothing I need to call for this request."
    return {"role": "assistant", "content": text}


def expert_trace(task: Task, scope: str = "first_turn") -> list[dict]:
    """The expert trace of one task (see the module docstring for the two scopes)."""
    if scope not in ("first_turn", "episode"):
        raise ValueError(f"scope must be 'first_turn' or 'episode', got {scope!r}")
    turns = gold_calls(task)
    if scope == "first_turn":
        turns = turns[:1]
    backends = _Backends(task)
    trace: list[dict] = []
    try:
        for t, calls in enumerate(turns):
            if not calls:
                trace.append(_unable(task.metadata.get("category", "")))
                continue
            strings = [to_bfcl_call(c["name"], c["arguments"]) for c in calls]
            outputs = backends.run(strings)
            trace.append({"role": "assistant", "content": "", "reasoning": _reasoning(calls),
                          "tool_calls": [{"name": c["name"], "arguments": c["arguments"], "id": f"call_{t}_{i}"}
                                         for i, c in enumerate(calls)]})
            trace += [{"role": "tool", "name": c["name"], "tool_call_id": f"call_{t}_{i}", "content": out}
                      for i, (c, out) in enumerate(zip(calls, outputs))]
            trace.append({"role": "assistant", "content": "Done: the requested operations are complete."})
    finally:
        backends.close()
    return trace


def bfcl_expert_traces(tasks: Iterable[Task], scope: str = "first_turn") -> list[Task]:
    """Copies of `tasks` with `trace` set from the ground truth executed on fresh backends."""
    return [replace(task, trace=expert_trace(task, scope)) for task in tasks]
