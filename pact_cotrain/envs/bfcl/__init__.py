"""BFCL multi-turn (Berkeley Function Calling Leaderboard v4) on BFCL's own executable backends.

Data, tool docs, backends and the checker all come from the pinned `bfcl-eval==2026.3.23` wheel
(installed with `pip install --no-deps bfcl-eval==2026.3.23 mpmath`). `bfcl_eval` is imported lazily,
so this package (and the "bfcl" benchmark, registered on import) can be imported without it.

Categories: multi_turn_base, multi_turn_miss_func, multi_turn_miss_param, multi_turn_long_context
(200 entries each).

One module per part, each explaining its part:
    wheel      lazy access to bfcl_eval: data files, function docs, backend classes, executor, checker
    data       function docs -> OpenAI-style schemas; entries -> Tasks (``load_bfcl``)
    calls      our calls <-> BFCL call strings, gold calls, refusal of calls that would hang
    backends   one episode's backend instances, isolated from BFCL's module globals (``_Backends``)
    env        the environment (``BfclEnv``): episodes, limits, scoring
    traces     expert traces from the ground truth (``bfcl_expert_traces``)
    benchmark  per-category summary and the "bfcl" benchmark registration
"""

from .benchmark import AVG_KEY, COLUMNS, _register, summarize
from .calls import (
    MAX_DECIMAL_PLACES,
    MAX_INT_EXPONENT,
    MAX_PRECISION,
    gold_calls,
    gold_turn_text,
    parse_bfcl_call,
    to_bfcl_call,
)
from .data import ADDITIONAL_FUNCTION_PROMPT, TYPE_MAP, bfcl_doc_to_tool, category_of, load_bfcl, render_new_tools_message
from .env import MAX_STEPS_PER_TURN, MAX_TOTAL_STEPS, BfclEnv, make_env
from .traces import bfcl_expert_traces, expert_trace
from .wheel import BFCL_VERSION, CATEGORIES, INSTALL_HINT, VERSION_PREFIX, BfclUnavailable, _bfcl, bfcl_available  # noqa: F401

__all__ = [
    "ADDITIONAL_FUNCTION_PROMPT",
    "AVG_KEY",
    "BFCL_VERSION",
    "CATEGORIES",
    "COLUMNS",
    "INSTALL_HINT",
    "MAX_DECIMAL_PLACES",
    "MAX_INT_EXPONENT",
    "MAX_PRECISION",
    "MAX_STEPS_PER_TURN",
    "MAX_TOTAL_STEPS",
    "TYPE_MAP",
    "VERSION_PREFIX",
    "BfclEnv",
    "BfclUnavailable",
    "bfcl_available",
    "bfcl_doc_to_tool",
    "bfcl_expert_traces",
    "category_of",
    "expert_trace",
    "gold_calls",
    "gold_turn_text",
    "load_bfcl",
    "make_env",
    "parse_bfcl_call",
    "render_new_tools_message",
    "summarize",
    "to_bfcl_call",
]

_register()
