"""The error class for ordinary mistakes (a wrong name, a missing file, a typo in a config key).

`pact` prints a `UserError` as one line, `error: <message>`, and exits 2; every other exception is
a bug and keeps its traceback. The message says what is wrong and what to do about it.
"""

from __future__ import annotations

import difflib


class UserError(Exception):
    """A mistake in what the user asked for; the message is the whole report."""


def closest(word: str, choices, n: int = 1) -> list[str]:
    """The known names nearest to a mistyped one (difflib's ratio; none when nothing is close)."""
    return difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)


def did_you_mean(word: str, choices) -> str:
    """"; did you mean `x`?" or "" when nothing known is close."""
    match = closest(word, choices)
    return f"; did you mean `{match[0]}`?" if match else ""
