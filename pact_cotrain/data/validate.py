"""`pact data validate`: every bad row of a task/trace JSONL file, not just the first.

    report = validate_file("tasks.jsonl", max_errors=50)
    report.errors      # [RowError(line, field, reason)], the first `max_errors` bad rows in file order
    report.bad_rows    # all bad rows, also those past the limit
    print(report.format())

The checks are the loader's (`trace_format.iter_rows`): row size, UTF-8, JSON, the record format,
unique ids, and each trace against its own task's tools. Training refuses a file on its first bad
row with the same `path:line: field: reason`; this module collects them for a user fixing data.
A valid row whose text holds a control-token string (`<|im_end|>`, ...) gets a warning line
(`report.warnings`): training encodes it as text, but it is usually a conversion mistake.

`check_trace_needs(tasks, method, reward, source)` is the training-time rule for rows without an
expert trace (spec section 4): GRPO and PACT with an environment reward (solve_f1, ftrl_step, env)
train on them (PACT anchors such a prompt); the methods and rewards that read the trace (SFT, CHORD,
the hint baseline; ToolRL's and MatchTIR's gold calls) refuse the data before the model loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pact_cotrain.errors import UserError

from .control_strings import control_strings_in
from .trace_format import DEFAULT_MAX_ROW_BYTES, Task, _Invalid, iter_rows, task_from_record

DEFAULT_MAX_ERRORS = 50


@dataclass
class RowError:
    line: int
    field_name: str
    reason: str


@dataclass
class ValidationReport:
    path: str
    rows: int = 0          # non-blank lines
    valid: int = 0
    traced: int = 0        # valid rows with an expert trace
    bad_rows: int = 0
    errors: list[RowError] = field(default_factory=list)
    warnings: list[RowError] = field(default_factory=list)  # valid rows holding control-token strings
    warned_rows: int = 0

    @property
    def ok(self) -> bool:
        return self.bad_rows == 0 and self.rows > 0

    def error_lines(self) -> list[str]:
        lines = [f"{self.path}:{e.line}: {e.field_name}: {e.reason}" for e in self.errors]
        if self.rows == 0:
            lines.append(f"{self.path}: <file>: no task rows (the file is empty)")
        hidden = self.bad_rows - len(self.errors)
        if hidden:
            lines.append(f"... and {hidden} more bad rows (raise --max-errors to see them)")
        if self.bad_rows:
            lines.append(f"{self.path}: {self.bad_rows} bad rows of {self.rows}")
        return lines

    def warning_lines(self) -> list[str]:
        lines = [f"{self.path}:{w.line}: {w.field_name}: warning: {w.reason}" for w in self.warnings]
        if self.warned_rows > len(self.warnings):
            lines.append(f"... and {self.warned_rows - len(self.warnings)} more rows with control-token strings")
        return lines

    def summary(self) -> str:
        return (f"{self.path}: {self.valid} valid tasks, {self.traced} with an expert trace, "
                f"{self.valid - self.traced} without")


def validate_file(path: str | Path, max_errors: int = DEFAULT_MAX_ERRORS,
                  max_row_bytes: int = DEFAULT_MAX_ROW_BYTES) -> ValidationReport:
    """Check every row; keep the first `max_errors` bad rows (all are counted). Raises OSError
    when the file cannot be read."""
    report = ValidationReport(path=str(path))
    for line_no, item in iter_rows(path, task_from_record, max_row_bytes):
        report.rows += 1
        if isinstance(item, _Invalid):
            report.bad_rows += 1
            if len(report.errors) < max_errors:
                report.errors.append(RowError(line_no, item.field_name, item.reason))
        else:
            report.valid += 1
            report.traced += item.trace is not None
            found = control_strings_in(item.to_record())
            if found:
                report.warned_rows += 1
                if len(report.warnings) < max_errors:
                    where, string = found[0]
                    more = f" (and {len(found) - 1} more fields)" if len(found) > 1 else ""
                    report.warnings.append(RowError(line_no, where, f"holds the control-token string {string!r}{more}; "
                                                    "training encodes it as plain text, never as a control token"))
    return report


# Methods whose loss is built from the trace itself: SFT (and its phase of sft_then_grpo), CHORD's SFT
# term, the hint baseline's rollout context and OPSD's teacher context. A row without one has nothing for
# them to train on.
TRACE_METHODS = ("sft", "sft_then_grpo", "chord_mu", "chord_phi", "hint_rollouts", "opsd")
# Rewards that match the rollout's calls against gold calls. The task format has no gold calls besides
# the trace (FTRL / toolworld metadata hold expected tool *outputs*, not calls), so an untraced task
# has no gold to match: refused, rather than scored on format alone.
TRACE_REWARDS = ("toolrl", "matchtir", "trace_match", "answer_match")


def check_trace_needs(tasks: list[Task], method: str, reward: str, source: str) -> None:
    """UserError when `method` or `reward` needs an expert trace and some task of `source` has none.

    Refused, not skipped: dropping rows would silently change the data a run trains on (its epochs
    and step counts), as TRL's SFTTrainer does not drop rows that lack a completion either."""
    missing = [t.id for t in tasks if not t.trace]
    if not missing:
        return
    count = f"{len(missing)} of {len(tasks)} rows have no expert trace (first: task {missing[0]})"
    if method in TRACE_METHODS:
        raise UserError(f"{source}: {count}; method {method} trains on the traces: add them, remove those rows, "
                        f"or use grpo / pact, which train on untraced rows")
    if reward in TRACE_REWARDS:
        raise UserError(f"{source}: {count}; reward {reward} matches calls against the trace's gold calls: add "
                        f"traces, remove those rows, or use reward solve_f1 / ftrl_step / env")
