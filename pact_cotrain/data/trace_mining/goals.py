"""What a trace must produce: a row's goals (expected outputs per tool) and the calls mined for them.

Goals. A row's goals are the expected outputs the trace must produce:
    FTRL     every string of ``unsolved_set[tool]`` (a tool listed twice must be solved twice)
    ToolHop  every sub-question's intermediate answer, for the tool ``subtask_tools`` assigns it
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pact_cotrain.data.trace_format import Task


@dataclass
class Goal:
    tool: str
    expected: str
    index: int  # position among the expected strings of the same tool
    order: int  # position among all goals of the row
    label: str = ""  # ToolHop: the sub-question


@dataclass
class MinedCall:
    goal: Goal
    arguments: dict
    output: str
    clean: bool  # neither an echo of the expected string nor an error-looking output
    deps: set[int] = field(default_factory=set)  # orders of goals this call depends on


def ftrl_goals(task: Task) -> list[Goal]:
    goals: list[Goal] = []
    for tool, expected in (task.metadata.get("unsolved_set") or {}).items():
        for i, exp in enumerate(expected):
            goals.append(Goal(tool, str(exp), i, len(goals)))
    return goals


def toolhop_goals(task: Task) -> list[Goal]:
    goals: list[Goal] = []
    counts: Counter = Counter()
    sub_task = task.metadata.get("sub_task") or {}
    tools = task.metadata.get("subtask_tools") or {}
    for question, answer in sub_task.items():
        tool = tools.get(question)
        if not tool:
            continue
        goals.append(Goal(tool, str(answer), counts[tool], len(goals), label=str(question)))
        counts[tool] += 1
    return goals
