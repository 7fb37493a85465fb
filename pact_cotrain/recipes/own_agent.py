"""A user's own agent as a config (or command-line flags) gives it: its tools, environment, MCP servers and
reward functions, for `pact tools list/call --config F` and `pact eval --tasks F --config F`.

    agent = own_agent("my.yaml")                         # the keys tools / env / reward_funcs / mcp_servers ...
    agent = own_agent(None, env="my_agent:Env", reward_funcs=["trace_match"])   # flags instead of a config
    agent.factory.tool_schemas(task); agent.benchmark("tasks.jsonl")             # eval/runner.py's Benchmark

Flags override the config's keys. MODULE:ATTR names are resolved with the current directory on the import
path (user_code.py); every error is one line, before any model loads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from pact_cotrain.errors import UserError


@dataclass
class OwnAgent:
    cfg: dict
    factory: object  # envs.user_env.UserEnvFactory
    reward_funcs: list
    reward_weights: list | None

    def load_tasks(self, path: str, split: str | None = "train") -> list:
        from pact_cotrain.data.sources import load_task_rows
        from pact_cotrain.training.api import default_tools_for

        tasks = load_task_rows(path, split=split, default_tools=default_tools_for(self.factory))
        for task in tasks:
            self.factory.check_task(task)
        return tasks

    def find_task(self, row_id: str | None):
        """The row `row_id` of the config's data.path (None: no row; the tools of a dict environment need one)."""
        if row_id is None:
            return None
        path = self.cfg["data"].get("path")
        if not path:
            raise UserError(f"--id {row_id}: the config has no data.path to find the row in")
        tasks = self.load_tasks(path, self.cfg["data"].get("split"))
        task = next((t for t in tasks if t.id == row_id), None)
        if task is None:
            from pact_cotrain.errors import did_you_mean

            raise UserError(f"no row {row_id!r} in {path}{did_you_mean(row_id, [t.id for t in tasks])}")
        return task

    def reward(self):
        """The episode reward an evaluation reports: the reward functions (+ the environment's get_reward),
        or the config's method.reward when it is a generic trace reward."""
        from pact_cotrain.rewards.episode import EpisodeReward
        from pact_cotrain.rewards.user import RewardFunctions
        from pact_cotrain.training.api import env_has_reward

        if self.reward_funcs or env_has_reward(self.factory):
            return RewardFunctions(self.reward_funcs, self.reward_weights, env_reward=env_has_reward(self.factory))
        kind = self.cfg["method"].get("reward")
        if kind in ("trace_match", "answer_match"):
            return EpisodeReward(kind)
        raise UserError("no reward to evaluate your own tasks with: give reward_funcs (e.g. [trace_match] or "
                        "MODULE:ATTR), an environment with get_reward, or method.reward=trace_match|answer_match")

    def benchmark(self, path: str, name: str | None = None):
        """An eval/runner.py Benchmark over the rows of `path`, run in the user's environment, scored by
        `reward()`: metrics `reward` (mean over the episodes not lost to reward faults), each reward
        function's mean where it applied (`rewards/<name>`), and `lost_episodes`."""
        from pact_cotrain.eval.benchmarks import Benchmark
        from pact_cotrain.rewards.user import score_batch

        reward = self.reward()

        def score(episodes, tasks):
            by_id = {t.id: t for t in tasks}
            scored = score_batch(reward, episodes, [by_id[ep.task_id] for ep in episodes])
            for ep, values in zip(episodes, scored):
                ep.metrics.update({key: float(value) for key, value in values.items()
                                   if key == "reward" or key.startswith("rewards/") and key != "rewards/none_applicable"})
                ep.reward = ep.metrics["reward"]

        def summarize(per_episode: list[dict]) -> dict[str, float]:
            out = {}
            keys = ["reward"] + sorted({k for m in per_episode for k in m if k.startswith("rewards/")})
            for key in keys:
                values = [m[key] for m in per_episode if key in m and not math.isnan(m[key])]
                if values:
                    out[key] = sum(values) / len(values)
            out["lost_episodes"] = float(sum(1 for m in per_episode if math.isnan(m.get("reward", 0.0))))
            return out

        max_turns = int(self.cfg["sampling"]["max_turns"])
        bench = Benchmark(name or Path(path).stem, lambda _path=None: self.load_tasks(path), self.factory, max_turns,
                          summarize)
        bench.score = score
        return bench


def own_agent(config: str | None, overrides: list[str] = (), *, tools: str | None = None, env: str | None = None,
              reward_funcs: list[str] | None = None, mcp_servers: list | None = None) -> OwnAgent:
    from pact_cotrain.config import load_config
    from pact_cotrain.recipes.train import user_code

    cfg = load_config(config or "grpo", list(overrides))
    for key, value in (("tools", tools), ("env", env), ("reward_funcs", reward_funcs), ("mcp_servers", mcp_servers)):
        if value is not None:
            cfg[key] = value
    own = user_code(cfg)
    if not own["tools"] and own["environment_factory"] is None and not own["mcp_servers"]:
        raise UserError(f"{config or 'the flags'}: no tools: set tools=MODULE:ATTR, env=MODULE:ATTR or mcp_servers "
                        "(or pass --tools / --env)")
    from pact_cotrain.envs.user_env import user_env_factory

    factory = user_env_factory(tools=own["tools"], environment_factory=own["environment_factory"],
                               mcp_servers=own["mcp_servers"], max_steps=int(cfg["sampling"]["max_turns"]),
                               tool_timeout_s=float(cfg.get("tool_timeout_s", 30.0)),
                               max_tool_output_chars=int(cfg.get("max_tool_output_chars", 16384)),
                               sandbox=bool(cfg.get("tool_sandbox", False)))
    return OwnAgent(cfg, factory, own["reward_funcs"], cfg.get("reward_weights"))
