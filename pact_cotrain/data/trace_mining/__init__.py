"""Expert traces for FTRL and ToolHop rows, mined from the rows' own tool code and verified by replay.

    tasks, report = build_traces("ftrl", path=None)      # path None: the shared data file
    tasks, report = build_traces("toolhop", path=None)

One module per step, each explaining its part:
    goals       what a trace must produce: a row's expected outputs per tool (``Goal``, ``MinedCall``)
    hints       what a tool's syntax tree says about its parameters (``ToolHints``; parsed, never run)
    candidates  candidate values per parameter, best first, from hints, schema and row
    miner       candidate calls run in the sandbox until an output produces a goal (``mine_task``)
    matching    when an output counts as producing an expected string (``strong_match``)
    ordering    steps of mined calls by dependency depth (``order_calls``)
    trace       trace turns from the steps, and their replay through an environment
    build       mine, order, replay and verify each row of a benchmark file (``build_traces``)
    ranking, values  small shared helpers (best-first candidate sets; JSON values)
"""

from .build import BENCHES, build_traces, load_bench, trace_for_task
from .goals import Goal, MinedCall, ftrl_goals, toolhop_goals
from .hints import ToolHints
from .matching import strong_match
from .miner import MAX_CALLS_PER_GOAL, mine_goal, mine_task
from .ordering import order_calls
from .trace import build_trace, replay

__all__ = [
    "BENCHES",
    "MAX_CALLS_PER_GOAL",
    "Goal",
    "MinedCall",
    "ToolHints",
    "build_trace",
    "build_traces",
    "ftrl_goals",
    "load_bench",
    "mine_goal",
    "mine_task",
    "order_calls",
    "replay",
    "strong_match",
    "toolhop_goals",
    "trace_for_task",
]
