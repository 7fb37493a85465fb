"""The trajectory reward that RL methods train on, computed from a finished episode.

* "env": the environment's own trajectory reward (`metrics["reward"]`; BFCL: valid or not).
* "solve_f1": FTRL's trajectory Solve-F1, as the environment measured it.
* "ftrl_step": the mean of FTRL's per-step rewards over the episode's assistant steps (FTRL trains
  with per-step rewards; with one group-normalised advantage per trajectory we use their mean).
* "toolrl": ToolRL's format (think / calls / answer layout of each turn) + name/parameter/value
  matching of all the trajectory's calls against the expert trace's (`rewards/toolrl.py`).
* "matchtir": MatchTIR's reward (`rewards/matchtir.py`): bipartite-matched per-call scores, per-turn
  rewards (`turn_rewards`, for the turn-level advantage) and the trajectory reward
  R = R_proc + R_out, R_out the final answer's token F1 against the expert trace's final answer.
* "trace_match", "answer_match": the generic trace rewards of `rewards/generic.py` (MatchTIR's process
  reward of the calls; the final answer's token F1), for tasks without a verifier.
"""

from __future__ import annotations

from pact_cotrain.data.trace_format import Task
from pact_cotrain.envs.parsing import parse_tool_calls, split_reasoning
from pact_cotrain.rollout.engine import Episode


def predicted_turns(episode: Episode, tools: list[dict]) -> tuple[list[list[dict]], list[bool]]:
    """The calls of each assistant turn (valid ones), and whether the turn parsed without errors.
    Calls are read from the visible part of the turn (after `</think>`), as the engine does."""
    turns, format_ok = [], []
    for msg in episode.messages:
        if msg["role"] != "assistant":
            continue
        parsed = parse_tool_calls(split_reasoning(msg["content"])[1], tools)
        turns.append([{"name": c.name, "arguments": c.arguments} for c in parsed.calls])
        format_ok.append(not parsed.errors)
    return turns, format_ok


def _assistant_texts(messages: list[dict]) -> list[str]:
    return [m["content"] or "" for m in messages if m["role"] == "assistant"]


def final_answer_text(messages: list[dict], tools: list[dict] | None = None) -> str | None:
    """The visible text (no reasoning, no call blocks) of the last assistant message when it makes
    no call, else None (the trajectory did not end on an answer)."""
    texts = [m for m in messages if m.get("role") == "assistant"]
    if not texts or texts[-1].get("tool_calls"):
        return None
    parsed = parse_tool_calls(split_reasoning(texts[-1].get("content") or "")[1], tools)
    return None if parsed.calls else parsed.content


class EpisodeReward:
    """Callable reward with TRL's reward-function shape; `score` is what the trainer calls."""

    def __init__(self, kind: str = "solve_f1"):
        self.kind = kind
        self.__name__ = f"reward_{kind}"

    def score(self, episode: Episode, task: Task) -> dict:
        if self.kind == "env":
            return {"reward": float(episode.metrics.get("reward", 0.0))}
        if self.kind == "solve_f1":
            return {"reward": float(episode.metrics.get("solve_f1", 0.0))}
        if self.kind == "ftrl_step":
            steps = episode.step_rewards
            return {"reward": sum(steps) / len(steps) if steps else 0.0}
        from pact_cotrain.rewards.calls import gold_turns_from_trace

        if not task.trace:
            raise ValueError(f"reward {self.kind!r} needs gold calls, but task {task.id} has no expert trace")
        if self.kind in ("trace_match", "answer_match"):
            from pact_cotrain.rewards.generic import BUILTIN_REWARDS
            from pact_cotrain.rewards.user import episode_completion

            prompt = episode.env_messages if episode.env_messages is not None else task.messages
            completion = episode_completion(episode.messages, len(prompt), task.tools)
            value = BUILTIN_REWARDS[self.kind]([prompt], [completion], trace=[task.trace])[0]
            return {"reward": 0.0 if value is None else value}  # None: a trace that ends without an answer
        pred, format_ok = predicted_turns(episode, task.tools)
        gold = gold_turns_from_trace(task.trace)
        if self.kind == "toolrl":
            from pact_cotrain.rewards.toolrl import toolrl_reward, toolrl_turn_format

            layout = [toolrl_turn_format(text, task.tools) for text in _assistant_texts(episode.messages)]
            return toolrl_reward(pred, gold, layout, format_ok)
        if self.kind == "matchtir":
            from pact_cotrain.rewards.matchtir import answer_f1, matchtir_rewards

            answer, gold_answer = final_answer_text(episode.messages, task.tools), final_answer_text(task.trace)
            outcome = answer_f1(answer, gold_answer) if answer is not None and gold_answer is not None else 0.0
            return matchtir_rewards(pred, gold, outcome_reward=outcome)
        raise ValueError(f"unknown reward {self.kind!r}")

    def __call__(self, prompts=None, completions=None, **kwargs):
        episodes, tasks = kwargs["episodes"], kwargs["tasks"]
        return [self.score(ep, task)["reward"] for ep, task in zip(episodes, tasks)]
