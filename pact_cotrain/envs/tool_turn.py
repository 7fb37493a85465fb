"""One assistant turn of a tool-calling environment: parse it, execute it, answer every block.

``ToolworldEnv``, ``FtrlEnv`` and ``ToolHopEnv`` share this turn logic. Each supplies how one
valid call is executed (``execute(call) -> (output, ok)``) and, where it differs, how a turn is
parsed; the scoring (FTRL tracker, answer correctness, ...) stays in the environment.

Rules, common to the three:

* calls are read from the visible text (after any ``</think>``), validated against the schemas;
* every block is answered by one tool message, in text order: a valid call by its output, a bad
  block by ``error_observation`` (under the tool's name when the block named one, else
  ``tool_call_error``);
* every bad block is one format error; a bad block that names a tool is still an attempted call
  (``attempts``, e.g. one of FTRL's C), one that cannot be read as a call at all makes the turn
  ``malformed``;
* the episode is done at a turn with no ``<tool_call>`` markup, or after ``max_steps`` turns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from pact_cotrain.envs.base import ToolCall
from pact_cotrain.envs.parsing import ParseResult, error_observation, parse_tool_calls, split_reasoning

Execute = Callable[[ToolCall], tuple[str, bool]]
Parse = Callable[[str, list[dict]], ParseResult]


@dataclass
class CallAttempt:
    """A block that names a tool, in text order."""

    name: str
    output: str | None  # what the execution returned; None for a call the schema rejected (not run)
    ok: bool  # executed and succeeded: only then can the output count as tool output

    @property
    def ok_output(self) -> str | None:
        """The output when the call succeeded, else None (FTRL's "no tool output")."""
        return self.output if self.ok else None


@dataclass
class TurnOutcome:
    visible_text: str  # the turn after any reasoning
    content: str  # the visible text outside every call block
    has_markup: bool  # the turn has at least one call block (or stray close tag)
    tool_messages: list[dict] = field(default_factory=list)  # one per block, in text order
    attempts: list[CallAttempt] = field(default_factory=list)  # blocks that name a tool, in text order
    n_valid: int = 0  # valid calls executed
    n_format_errors: int = 0  # blocks rejected by parsing or schema validation
    n_tool_errors: int = 0  # valid calls whose execution did not succeed
    malformed: bool = False  # some block could not be read as a call at all

    @property
    def n_attempts(self) -> int:
        """Valid calls plus rejected blocks that name a tool."""
        return len(self.attempts)

    @property
    def outputs(self) -> list[str]:
        """The outputs of the successful calls, in text order."""
        return [a.output for a in self.attempts if a.ok]

    def done(self, n_steps: int, max_steps: int) -> bool:
        return not self.has_markup or n_steps >= max_steps


def run_tool_turn(assistant_text, tools: list[dict], execute: Execute,
                  parse: Parse = parse_tool_calls) -> TurnOutcome:
    """Parse one assistant turn, execute its valid calls in text order and answer every block."""
    text = assistant_text if isinstance(assistant_text, str) else ("" if assistant_text is None else str(assistant_text))
    _, visible = split_reasoning(text)
    parsed = parse(visible, tools)
    turn = TurnOutcome(visible_text=visible, content=parsed.content, has_markup=parsed.has_call_markup)
    for item in parsed.ordered:
        if isinstance(item, ToolCall):
            output, ok = execute(item)
            turn.n_valid += 1
            turn.n_tool_errors += not ok
            turn.attempts.append(CallAttempt(item.name, output, ok))
            turn.tool_messages.append({"role": "tool", "name": item.name, "content": output})
            continue
        turn.n_format_errors += 1
        if item.name is not None:  # a named call the schema rejected: still an attempted call
            turn.attempts.append(CallAttempt(item.name, None, False))
        else:
            turn.malformed = True
        turn.tool_messages.append({"role": "tool", "name": item.name or "tool_call_error", "content": error_observation(item)})
    return turn
