"""The environment protocol every benchmark implements.

One Environment instance runs one episode. The rollout engine calls `reset(task)` once, then
`step(assistant_text)` after every assistant turn until `done`. Environments never raise on
model output: malformed calls become error observations and counted format errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from pact_cotrain.data.trace_format import Task


@dataclass
class ToolCall:
    name: str
    arguments: dict
    raw: str = ""  # the text of the call block as the model wrote it


@dataclass
class StepResult:
    tool_messages: list[dict]  # {"role": "tool", "name": ..., "content": str}, in call order
    done: bool  # the episode ends after this step (no call made, or the env's own limit)
    reward: float = 0.0  # per-step reward (FTRL-style where the benchmark defines one)
    info: dict = field(default_factory=dict)  # e.g. {"n_calls": 2, "format_errors": 1}


class Environment(Protocol):
    max_steps: int  # assistant steps allowed before the engine stops the episode

    def reset(self, task: Task) -> tuple[list[dict], list[dict]]:
        """Start an episode: return (initial messages, tool schemas) shown to the model."""

    def step(self, assistant_text: str) -> StepResult:
        """Parse and execute the tool calls in one assistant turn."""

    def metrics(self) -> dict[str, float]:
        """Trajectory metrics so far; must include "reward", the trajectory reward for RL."""


EnvFactory = Callable[[Task], Environment]
