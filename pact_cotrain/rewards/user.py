"""A user's `reward_funcs`, called on finished episodes exactly as TRL's GRPOTrainer calls them.

TRL's convention (`GRPOTrainer._calculate_rewards`, trl 1.16): each function is called once per
batch as

    f(prompts=[...], completions=[...], completion_ids=[...], <column>=[...] for every other row column,
      trainer_state=TrainerState, log_extra=..., log_metric=..., [environments=[...]])

sync or async, and returns one float per sample, or None where it does not apply. Per sample the
reward is TRL's weighted sum that leaves out the functions that returned None,

    R = nansum_f  w_f * r_f           (w = `reward_weights`, 1 each by default)

plus, when the environment defines `get_reward`, its value (`env_reward`, weight 1, as TRL adds it).
A sample where every function returned None gets 0, as in TRL, and is counted (`rewards/none_applicable`).

What a sample is here: `prompts` are the messages the model saw (the row's prompt after
`reset`), `completions` the episode's messages after them (assistant messages as TRL parses them,
`{"role": "assistant", "content", "tool_calls": [{"type": "function", "function": {name, arguments}}]}`,
with any reasoning under `reasoning_content`, and the tool messages), `completion_ids` every token after
the prompt. The row's other columns are `id`, `tools`, `trace` and its metadata.

Faults are not rewards. A function that raises, returns the wrong number of values, or returns a
non-finite or non-numeric value for a sample loses that sample: it gets no reward (NaN), the trainer
leaves it out of the step (`fill_lost_rewards`), and one line names the function, the task and the
error. The lost episodes are counted (`reward/lost_episodes`, and `lost_total` for the run); a
batch call that raises is retried one sample at a time, so only the samples it fails on are lost.
No trainer imports here.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import sys
from collections import defaultdict
from typing import Any, Callable

from pact_cotrain.envs.parsing import parse_tool_calls, split_reasoning
from pact_cotrain.errors import UserError


class RewardFaultError(UserError):
    """Every episode of a step was lost to reward-function faults: nothing left to learn from."""


def function_name(func) -> str:
    return getattr(func, "__name__", None) or type(func).__name__


def episode_completion(messages: list[dict], n_prompt: int, tools: list[dict] | None = None) -> list[dict]:
    """The messages after the prompt in TRL's conversational completion shape (module docstring)."""
    out = []
    for msg in messages[n_prompt:]:
        if msg.get("role") != "assistant":
            out.append(dict(msg))
            continue
        reasoning, visible = split_reasoning(msg.get("content") or "")
        parsed = parse_tool_calls(visible, tools or None)  # [] would refuse every call as not offered
        turn: dict[str, Any] = {"role": "assistant", "content": parsed.content}
        if reasoning:
            turn["reasoning_content"] = reasoning
        if parsed.calls:
            turn["tool_calls"] = [{"type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                                  for c in parsed.calls]
        out.append(turn)
    return out


def _prompt_of(episode, task) -> list[dict]:
    return [dict(m) for m in (episode.env_messages if episode.env_messages is not None else task.messages)]


def row_columns(task) -> dict:
    """A task's columns other than the prompt, as a row of the dataset would carry them."""
    return {"id": task.id, "tools": task.tools, "trace": task.trace, **task.metadata}


def _run(func: Callable, kwargs: dict):
    out = func(**kwargs)
    if inspect.isawaitable(out):
        out = asyncio.run(_await(out))
    return out


async def _await(awaitable):
    return await awaitable


def _number(value) -> float | None:
    """A finite float, or None when `value` is not a number (bools count: TRL's tensor takes them)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class RewardFunctions:
    """`reward_funcs` (+ the environment's `get_reward`) as the trainer's episode reward (`score_episodes`)."""

    def __init__(self, funcs: list[Callable], weights: list[float] | None = None, env_reward: bool = False,
                 log: Callable[[str], None] | None = None):
        self.funcs = list(funcs)
        self.names = [function_name(f) for f in self.funcs]
        if weights is not None and len(weights) != len(self.funcs):
            raise UserError(f"reward_weights has {len(weights)} values for {len(self.funcs)} reward functions "
                            f"({', '.join(self.names)})")
        self.weights = [float(w) for w in weights] if weights is not None else [1.0] * len(self.funcs)
        self.env_reward = env_reward
        if not self.funcs and not env_reward:
            raise UserError("no reward source: pass reward_funcs, or an environment whose class defines get_reward")
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.lost_total = 0
        # () -> the user's environment instances of the episodes made since the last call, in episode order
        # (set by the trainer when the episodes run in a user's environment): TRL's `environments`.
        self.environments_source: Callable[[], list] | None = None
        self.__name__ = "reward_funcs"

    def _values(self, func, name: str, kwargs: dict, n: int, task_ids: list[str]) -> tuple[list, dict[int, str]]:
        """One function's values for n samples (None = not applicable) and {sample: fault}."""
        try:
            return self._check(_run(func, kwargs), name, n), {}
        except Exception as batch_exc:  # noqa: BLE001 - a user's function: retried per sample below
            if n == 1:
                return [None], {0: _describe(batch_exc)}
        values, faults = [], {}
        for i in range(n):  # the batch call failed: find the samples it fails on
            one = {k: (v[i : i + 1] if isinstance(v, list) and len(v) == n else v) for k, v in kwargs.items()}
            try:
                values += self._check(_run(func, one), name, 1)
            except Exception as exc:  # noqa: BLE001
                values.append(None)
                faults[i] = _describe(exc)
        return values, faults

    @staticmethod
    def _check(out, name: str, n: int) -> list:
        if not isinstance(out, (list, tuple)) and not hasattr(out, "tolist"):
            raise TypeError(f"returned {type(out).__name__}, not a list of {n} rewards")
        out = out.tolist() if hasattr(out, "tolist") else list(out)
        if len(out) != n:
            raise ValueError(f"returned {len(out)} rewards for {n} samples")
        return out

    def score_episodes(self, episodes: list, tasks: list, trainer_state=None, environments: list | None = None,
                       log_metric: Callable[[str, float], None] | None = None) -> list[dict]:
        """One dict per episode: "reward" (NaN when the episode is lost to a fault) and "rewards/<name>"
        per function (NaN where it returned None or faulted)."""
        n = len(episodes)
        ids = [t.id for t in tasks]
        prompts = [_prompt_of(ep, t) for ep, t in zip(episodes, tasks)]
        completions = [episode_completion(ep.messages, len(p), t.tools) for ep, p, t in zip(episodes, prompts, tasks)]
        columns: dict[str, list] = defaultdict(lambda: [None] * n)
        for i, task in enumerate(tasks):
            for key, value in row_columns(task).items():
                columns[key][i] = value
        kwargs = {"prompts": prompts, "completions": completions,
                  "completion_ids": [list(ep.completion_ids) for ep in episodes], **columns,
                  "trainer_state": trainer_state, "log_extra": lambda *a, **k: None,
                  "log_metric": log_metric or (lambda *a, **k: None)}
        if environments is None and self.environments_source is not None:
            made = self.environments_source()
            environments = made if len(made) == n else None
        if environments is not None:
            kwargs["environments"] = environments
        per_func: dict[str, list[float]] = {}
        lost: dict[int, str] = {}
        for func, name in zip(self.funcs, self.names):
            values, faults = self._values(func, name, kwargs, n, ids)
            column = []
            for i, value in enumerate(values):
                if i in faults:
                    column.append(math.nan)
                    continue
                if value is None:
                    column.append(math.nan)  # not applicable
                    continue
                number = _number(value)
                if number is None:
                    faults[i] = f"returned {value!r}, not a finite number"
                    column.append(math.nan)
                else:
                    column.append(number)
            for i, why in faults.items():
                lost.setdefault(i, f"reward function {name!r} {why}")
            self._report(name, faults, ids)
            per_func[name] = column
        names, weights = list(self.names), list(self.weights)
        if self.env_reward:
            column = []
            for ep in episodes:
                value = ep.metrics.get("env_reward")
                column.append(math.nan if value is None else (_number(value) if _number(value) is not None
                                                              else math.nan))
            per_func["env_reward"] = column
            names.append("env_reward")
            weights.append(1.0)
        out, none_applicable = [], []
        for i in range(n):
            values = [per_func[name][i] for name in names]
            applicable = [w * v for w, v in zip(weights, values) if not math.isnan(v)]
            if i in lost:
                reward = math.nan
            else:
                if not applicable:
                    none_applicable.append(i)
                reward = sum(applicable)
            out.append({"reward": reward, **{f"rewards/{name}": per_func[name][i] for name in names}})
        if lost:
            self.lost_total += len(lost)
            if len(lost) == n:
                first = min(lost)
                raise RewardFaultError(f"every episode of the step was lost to reward faults (task {ids[first]}: "
                                       f"{lost[first]})")
        if none_applicable:
            self.log(f"reward: no reward function applies to {len(none_applicable)} of {n} episodes (first: task "
                     f"{ids[none_applicable[0]]}); they score 0, as in TRL")
        for entry in out:
            entry["reward/lost_episodes"] = float(len(lost))
            entry["rewards/none_applicable"] = float(len(none_applicable))
        return out

    def _report(self, name: str, faults: dict[int, str], ids: list[str]) -> None:
        if not faults:
            return
        first = min(faults)
        self.log(f"reward function {name!r} on task {ids[first]}: {faults[first]}; {len(faults)} episodes of this "
                 f"step lost to it (left out of the step, not scored 0; {self.lost_total + len(faults)} lost so far)")

    def __call__(self, prompts=None, completions=None, **kwargs):  # TRL's shape; the trainer calls score_episodes
        return [s["reward"] for s in self.score_episodes(kwargs["episodes"], kwargs["tasks"])]


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"raised {type(exc).__name__}" + (f": {text}" if text else "")


def score_batch(reward, episodes: list, tasks: list, **context) -> list[dict]:
    """The trainer's call: `reward.score_episodes` when it scores a batch (RewardFunctions), else
    `reward.score` per episode (EpisodeReward)."""
    if hasattr(reward, "score_episodes"):
        return reward.score_episodes(episodes, tasks, **context)
    return [reward.score(ep, task) for ep, task in zip(episodes, tasks)]


def fill_lost_rewards(rewards, group_size: int):
    """(rewards with each lost (NaN) entry replaced by the mean of its group's finite entries, 0 when the
    whole group is lost; the boolean mask of lost entries). The filled reward equals its group's mean,
    so its group-normalised advantage is 0; the trainer also masks its tokens out of the loss."""
    import torch

    lost = ~torch.isfinite(rewards)
    if not lost.any():
        return rewards, lost
    groups = rewards.view(-1, group_size)
    finite = torch.isfinite(groups)
    means = torch.where(finite, groups, torch.zeros_like(groups)).sum(1) / finite.sum(1).clamp(min=1)
    filled = torch.where(finite, groups, means.unsqueeze(1).expand_as(groups))
    return filled.reshape(-1), lost


def reward_metrics(scored: list[dict]) -> dict[str, float]:
    """Step metrics from `score_batch`'s dicts: the mean of each `rewards/<name>` over the episodes where
    it applied (TRL's `rewards/<name>/mean`), and the counts of lost / no-reward episodes."""
    out: dict[str, float] = {}
    if not scored:
        return out
    for key in scored[0]:
        if key.startswith("rewards/") and key != "rewards/none_applicable":
            values = [s[key] for s in scored if not math.isnan(s[key])]
            if values:
                out[f"{key}/mean"] = sum(values) / len(values)
    for key in ("reward/lost_episodes", "rewards/none_applicable"):
        if key in scored[0]:
            out[key] = scored[0][key]
    return out
