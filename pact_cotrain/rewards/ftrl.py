"""FTRL scoring (Ye et al., arXiv 2508.08791), as /work/shared/data/README.md defines it.

Matching. An output o of tool t solves expected string a when every piece of a.split(", "),
normalised, is a substring of normalised o, where normalise(s) = s.lower() with commas
removed. Each output solves at most one expected string: the FIRST still-unsolved string of
t's list that it matches, so a tool listed with two strings must be called successfully twice.

Episode metrics, with S = expected strings solved, C = tool calls made, U = initial number of
expected strings:

    Solve-P = S / C     (1 when C = 0)
    Solve-R = S / U     (1 when U = 0: nothing was asked for; our choice, FTRL rows never have U = 0)
    Solve-F1 = 2S / (C + U)   (1 when C + U = 0, same reason)

Per-step reward (FTRL's RL reward), rules tried in this order:

    step with n >= 1 calls, k of which solved something   ->  2k / (n + 1)
    step with no call:  text empty                        ->  -0.5
                        text holds a malformed <tool_call> ->  -0.3
                        text contains the answer           ->  1 / (1 + remaining)   (remaining = U - S)
                        everything already solved          ->  0.5
                        otherwise                          ->  0
"""

from __future__ import annotations


def normalise(text: str) -> str:
    """FTRL normalisation: lower-case, commas removed (nothing else: whitespace is kept)."""
    return text.lower().replace(",", "")


def matches(expected: str, output: str) -> bool:
    """True when every `", "`-separated piece of `expected` is in `output`, both normalised.

    The split happens before commas are removed, so "Brazil, China" needs "brazil" and "china"
    anywhere in the output, and "Washington, D.C." needs "washington" and "d.c.".
    """
    out = normalise(output)
    return all(normalise(piece) in out for piece in expected.split(", "))


def contains_answer(text: str, answer: str) -> bool:
    """'Contains the answer' is not spelled out by the README; we use the same rule as
    `matches` (answer pieces, normalised, all substrings of the text). An empty answer never
    counts as contained, since the empty string is a substring of everything."""
    return bool(answer) and matches(answer, text)


class FtrlTracker:
    """Running S, C, U and per-step rewards for one episode."""

    def __init__(self, unsolved_set: dict[str, list[str]]):
        # Copies: the task's metadata must stay untouched across episodes.
        self.expected: dict[str, list[str]] = {t: [str(a) for a in v] for t, v in unsolved_set.items()}
        self.unsolved: dict[str, list[str]] = {t: list(v) for t, v in self.expected.items()}
        self.U = sum(len(v) for v in self.expected.values())
        self.S = 0
        self.C = 0
        self.calls: list[tuple[str, str | None, str | None]] = []  # (tool, output, expected string it solved)
        self.steps: list[dict] = []  # one dict per recorded step, with its reward

    @property
    def remaining(self) -> int:
        return self.U - self.S

    def record_call(self, name: str, output: str | None) -> bool:
        """Count one call (C += 1) and let its output solve at most one expected string.

        `output=None` is a call that produced no tool output (e.g. rejected by schema
        validation): it counts as a call but can solve nothing.
        """
        self.C += 1
        solved = None
        if output is not None:
            pending = self.unsolved.get(name, [])
            for i, expected in enumerate(pending):
                if matches(expected, output):
                    solved = pending.pop(i)
                    self.S += 1
                    break
        self.calls.append((name, output, solved))
        return solved is not None

    @property
    def solve_p(self) -> float:
        return 1.0 if self.C == 0 else self.S / self.C

    @property
    def solve_r(self) -> float:
        return 1.0 if self.U == 0 else self.S / self.U

    @property
    def solve_f1(self) -> float:
        return 1.0 if self.C + self.U == 0 else 2 * self.S / (self.C + self.U)

    def step_reward(self, n_calls: int, n_solved_in_step: int, text: str, malformed: bool, answer: str) -> float:
        """FTRL's per-step reward for a step whose calls are already recorded (see module doc).

        `text` is the step's visible text; `malformed` says it holds a `<tool_call>` block that
        did not parse into a call.
        """
        if n_calls >= 1:
            return 2 * n_solved_in_step / (n_calls + 1)
        if not text.strip():
            return -0.5
        if malformed:
            return -0.3
        if contains_answer(text, answer):
            return 1 / (1 + self.remaining)
        if self.remaining == 0:
            return 0.5
        return 0.0

    def record_step(self, n_calls: int, n_solved_in_step: int, text: str, malformed: bool, answer: str) -> float:
        """`step_reward`, kept in `steps` so the episode's step rewards can be averaged."""
        reward = self.step_reward(n_calls, n_solved_in_step, text, malformed, answer)
        self.steps.append({"n_calls": n_calls, "n_solved": n_solved_in_step, "malformed": malformed, "reward": reward})
        return reward

    @property
    def step_mean(self) -> float:
        return sum(s["reward"] for s in self.steps) / len(self.steps) if self.steps else 0.0
