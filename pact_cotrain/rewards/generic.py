"""Rewards for tasks without a verifier, read against the row's expert trace, in TRL's reward-function
convention (`reward_funcs=["trace_match"]`, `method.reward: trace_match`, or beside one's own functions).

Each takes `prompts`, `completions` (per sample: the messages after the prompt, or a string) and the
row's `trace` column, and returns one value per sample: a float, or None where it does not apply
(no trace, or a trace that ends without an answer), which TRL's sum leaves out.

* `trace_match`: the rollout's tool calls matched against the trace's, as MatchTIR matches them
  (`rewards/matchtir.py`: optimal one-to-one matching on S_ij = name match x (1 + argument-name
  Jaccard + matching values) / (2 + gold arguments), all turns pooled). The value is MatchTIR's
  process reward R_proc = sum_i s_i / max(m, n), m predicted and n gold calls: 1 iff every gold
  call is made exactly and nothing else; 1 when both make no call.
* `answer_match`: token F1 of the rollout's final answer against the trace's final answer (the
  token-set F1 of `matchtir.answer_f1`: lower-cased, punctuation to spaces, whitespace collapsed).
* `answer_exact_match`: 1.0 when the two answers are equal after that same normalisation, else 0.0.

A rollout that ends without an answer (its last assistant message calls a tool, or it has none)
scores 0.0 on the two answer rewards. Calls are read from `tool_calls` (TRL's
`{"type": "function", "function": {name, arguments}}` or the trace format's `{name, arguments}`),
else parsed from the message text (`<tool_call>` blocks after any `</think>`).
"""

from __future__ import annotations

import json
import string

from pact_cotrain.envs.parsing import parse_tool_calls, split_reasoning
from pact_cotrain.rewards.calls import gold_turns_from_trace
from pact_cotrain.rewards.matchtir import answer_f1, matchtir_rewards


def _call(call: dict) -> dict:
    fn = call.get("function") if isinstance(call.get("function"), dict) else call
    arguments = fn.get("arguments") or {}
    if isinstance(arguments, str):  # OpenAI sends arguments JSON-encoded
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            arguments = {}
    return {"name": fn.get("name", ""), "arguments": arguments if isinstance(arguments, dict) else {}}


def _as_messages(completion) -> list[dict]:
    if isinstance(completion, str):
        return [{"role": "assistant", "content": completion}]
    return list(completion or [])


def _assistant_turns(messages: list[dict]) -> list[tuple[list[dict], str]]:
    """(calls, visible text without call blocks) of each assistant message."""
    turns = []
    for msg in messages:
        if msg.get("role") != "assistant":
            continue
        text = split_reasoning(msg.get("content") or "")[1]
        parsed = parse_tool_calls(text)
        if msg.get("tool_calls"):
            turns.append(([_call(c) for c in msg["tool_calls"]], parsed.content))
        else:
            turns.append(([{"name": c.name, "arguments": c.arguments} for c in parsed.calls], parsed.content))
    return turns


def final_answer(messages: list[dict]) -> str | None:
    """The visible text of the last assistant message when it makes no call, else None."""
    turns = _assistant_turns(messages)
    if not turns or turns[-1][0]:
        return None
    return turns[-1][1]


def _traces(trace, n: int) -> list:
    return list(trace) if trace is not None else [None] * n


def trace_match(prompts, completions, trace=None, **kwargs) -> list[float | None]:
    """MatchTIR's process reward R_proc of the rollout's calls against the trace's (module docstring);
    None for a row without a trace."""
    out: list[float | None] = []
    for completion, gold_trace in zip(completions, _traces(trace, len(completions))):
        if not gold_trace:
            out.append(None)
            continue
        pred = [calls for calls, _ in _assistant_turns(_as_messages(completion))]
        out.append(float(matchtir_rewards(pred, gold_turns_from_trace(gold_trace))["process"]))
    return out


def _answer_reward(completions, trace, score) -> list[float | None]:
    out: list[float | None] = []
    for completion, gold_trace in zip(completions, _traces(trace, len(completions))):
        gold = final_answer(gold_trace) if gold_trace else None
        if gold is None:
            out.append(None)
            continue
        answer = final_answer(_as_messages(completion))
        out.append(0.0 if answer is None else float(score(answer, gold)))
    return out


def answer_match(prompts, completions, trace=None, **kwargs) -> list[float | None]:
    """Token F1 of the final answer against the trace's final answer (module docstring); None where the
    row has no trace or its trace ends without an answer."""
    return _answer_reward(completions, trace, answer_f1)


def answer_exact_match(prompts, completions, trace=None, **kwargs) -> list[float | None]:
    """1.0 when the final answer equals the trace's after normalisation, else 0.0; None as answer_match."""
    return _answer_reward(completions, trace, lambda answer, gold: float(_normalised(answer) == _normalised(gold)))


def _normalised(text: str) -> str:
    """Lower-cased, punctuation replaced by spaces, whitespace collapsed (answer_f1's normalisation)."""
    text = text.lower()
    for punct in string.punctuation:
        text = text.replace(punct, " ")
    return " ".join(text.split())


BUILTIN_REWARDS = {"trace_match": trace_match, "answer_match": answer_match, "answer_exact_match": answer_exact_match}
