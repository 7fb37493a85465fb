"""Tools importable by module path, for the sandboxed-tool tests (tests/test_user_tools.py)."""

import os


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first integer
        b: the second integer
    """
    return a + b


def whoami() -> dict:
    """The process the tool runs in."""
    return {"pid": os.getpid()}


def explode(reason: str) -> str:
    """Raise an error.

    Args:
        reason: the error message
    """
    raise ValueError(reason)
