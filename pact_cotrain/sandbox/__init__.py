"""Sandboxed execution of dataset-supplied tool code (FTRL `codes`, ToolHop `functions`).

Dataset code never runs in the calling process: see :class:`ToolSandbox`.
"""

from .limits import Isolation, SandboxLimits
from .pool import SandboxResult, ToolSandbox, codes_from_functions, error_observation
from .worker import format_tool_output

__all__ = [
    "Isolation",
    "SandboxLimits",
    "SandboxResult",
    "ToolSandbox",
    "codes_from_functions",
    "error_observation",
    "format_tool_output",
]
