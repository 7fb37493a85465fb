"""The trajectory reward that RL methods train on, computed from a finished episode.

* "env": the environment's own trajectory reward (`metrics["reward"]`; BFCL: valid or not).
* "solve_f1": FTRL's trajectory Solve-F1, as the environment measured it.
* "ftrl_step": the mean of FTRL's per-step rewards over the episode's assistant steps (FTRL trains
  with per-step rewards; with one group-normalised advantage per trajectory we use their mean).
* "toolrl": ToolRL's format + name/parameter/value matching reward against the expert trace's calls.
* "matchtir": MatchTIR's bipartite-matching reward against the expert trace's calls (trajectory
  total of the turn-level rewards).
"""

from __future__ import annotations

from pact_cotrain.data.trace_format import Task
from pact_cotrain.envs.parsing import parse_tool_calls
from pact_cotrain.rollout.engine import Episode


def predicted_turns(episode: Episode, tools: list[dict]) -> tuple[list[list[dict]], list[bool]]:
    """The calls of each assistant turn (valid ones), and whether the turn parsed without errors."""
    turns, format_ok = [], []
    for msg in episode.messages:
        if msg["role"] != "assistant":
            continue
        parsed = parse_tool_calls(msg["content"], tools)
        turns.append([{"name": c.name, "arguments": c.arguments} for c in parsed.calls])
        format_ok.append(not parsed.errors)
    return turns, format_ok


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
        pred, format_ok = predicted_turns(episode, task.tools)
        gold = gold_turns_from_trace(task.trace)
        if self.kind == "toolrl":
            from pact_cotrain.rewards.toolrl import toolrl_reward

            return toolrl_reward(pred, gold, format_ok)
        if self.kind == "matchtir":
            from pact_cotrain.rewards.matchtir import matchtir_rewards

            return matchtir_rewards(pred, gold)
        raise ValueError(f"unknown reward {self.kind!r}")

    def __call__(self, prompts=None, completions=None, **kwargs):
        episodes, tasks = kwargs["episodes"], kwargs["tasks"]
        return [self.score(ep, task)["reward"] for ep, task in zip(episodes, tasks)]
