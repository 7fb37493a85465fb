"""How much of the expert format a run's token and turn caps would cut.

    report = caps_report(tasks, tokenizer, Caps(max_turns=3, max_new_tokens_per_turn=80,
                                                max_completion_tokens=320))
    print(format_caps_report("train", report))

Each expert trace is tokenised with the run's tokenizer exactly as a rollout would hold it: an
assistant turn is what the chat template writes for that message after the assistant header, up to
and including the end-of-turn token (what the model would have to sample), and the trace's
completion is everything the template renders after the prompt (turns and inserted tool responses).
A turn is over the per-turn cap when it needs more new tokens than `max_new_tokens_per_turn`; a
trace is over the caps when any turn is, when it has more assistant turns than `max_turns`, or when
its completion is longer than `max_completion_tokens`. Tasks without a trace are counted and skipped.
Pure: no model, no environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pact_cotrain.data.trace_format import Task
from pact_cotrain.render import apply_template, encode

# Above this share of expert turns or traces over the caps, `pact study` refuses to start.
MAX_CUT_SHARE = 0.05


@dataclass(frozen=True)
class Caps:
    max_turns: int | None = None  # None: no cap
    max_new_tokens_per_turn: int | None = None
    max_completion_tokens: int | None = None


@dataclass
class CapsReport:
    caps: Caps
    n_tasks: int = 0  # tasks with an expert trace
    n_without_trace: int = 0
    n_turns: int = 0  # expert assistant turns
    turns_over_token_cap: int = 0
    traces_over_turn_cap: int = 0
    traces_over_completion_cap: int = 0
    traces_over_any_cap: int = 0
    longest_turn: int = 0  # new tokens of the longest expert turn
    most_turns: int = 0
    longest_completion: int = 0
    over_ids: list[str] = field(default_factory=list)  # ids of the traces over some cap

    @property
    def turn_share(self) -> float:
        return self.turns_over_token_cap / self.n_turns if self.n_turns else 0.0

    @property
    def trace_share(self) -> float:
        return self.traces_over_any_cap / self.n_tasks if self.n_tasks else 0.0

    def exceeds(self, limit: float = MAX_CUT_SHARE) -> bool:
        return self.turn_share > limit or self.trace_share > limit

    def to_dict(self) -> dict:
        return {"caps": vars(self.caps), "n_tasks": self.n_tasks, "n_without_trace": self.n_without_trace,
                "n_turns": self.n_turns, "turns_over_token_cap": self.turns_over_token_cap,
                "turn_share": self.turn_share, "traces_over_turn_cap": self.traces_over_turn_cap,
                "traces_over_completion_cap": self.traces_over_completion_cap,
                "traces_over_any_cap": self.traces_over_any_cap, "trace_share": self.trace_share,
                "longest_turn": self.longest_turn, "most_turns": self.most_turns,
                "longest_completion": self.longest_completion}


def expert_turn_lengths(task: Task, tokenizer) -> tuple[list[int], int]:
    """(new tokens of each expert assistant turn, completion tokens of the whole trace)."""
    eos = tokenizer.eos_token or ""
    prompt = apply_template(tokenizer, task.messages, task.tools, add_generation_prompt=True)
    turns = []
    for i, message in enumerate(task.trace):
        if message["role"] != "assistant":
            continue
        before = apply_template(tokenizer, task.messages + task.trace[:i], task.tools, add_generation_prompt=True)
        upto = apply_template(tokenizer, task.messages + task.trace[: i + 1], task.tools, add_generation_prompt=False)
        turn = upto[len(before):] if upto.startswith(before) else upto
        if eos and eos in turn:  # the template may write more after the end-of-turn token ("\n")
            turn = turn[: turn.index(eos) + len(eos)]
        turns.append(len(encode(tokenizer, turn)))
    full = apply_template(tokenizer, task.messages + task.trace, task.tools, add_generation_prompt=False)
    return turns, len(encode(tokenizer, full)) - len(encode(tokenizer, prompt))


def caps_report(tasks: list[Task], tokenizer, caps: Caps) -> CapsReport:
    report = CapsReport(caps)
    for task in tasks:
        if not task.trace:
            report.n_without_trace += 1
            continue
        turns, completion = expert_turn_lengths(task, tokenizer)
        report.n_tasks += 1
        report.n_turns += len(turns)
        report.longest_turn = max(report.longest_turn, max(turns, default=0))
        report.most_turns = max(report.most_turns, len(turns))
        report.longest_completion = max(report.longest_completion, completion)
        over_tokens = 0 if caps.max_new_tokens_per_turn is None else sum(n > caps.max_new_tokens_per_turn for n in turns)
        report.turns_over_token_cap += over_tokens
        over_turns = caps.max_turns is not None and len(turns) > caps.max_turns
        over_completion = caps.max_completion_tokens is not None and completion > caps.max_completion_tokens
        report.traces_over_turn_cap += int(over_turns)
        report.traces_over_completion_cap += int(over_completion)
        if over_tokens or over_turns or over_completion:
            report.traces_over_any_cap += 1
            report.over_ids.append(task.id)
    return report


def _cap(value: int | None) -> str:
    return "none" if value is None else str(value)


def describe_caps(report: dict) -> str:
    """One sentence from `CapsReport.to_dict()` (also what results.json stores)."""
    c = report["caps"]
    if not report["n_tasks"]:
        return f"no expert traces to measure ({report['n_without_trace']} tasks without one)"
    return (f"under turns {_cap(c['max_turns'])}, new tokens/turn {_cap(c['max_new_tokens_per_turn'])}, "
            f"completion {_cap(c['max_completion_tokens'])}: "
            f"{report['turns_over_token_cap']}/{report['n_turns']} expert turns ({100 * report['turn_share']:.1f}%) "
            f"over the per-turn cap; {report['traces_over_any_cap']}/{report['n_tasks']} expert traces "
            f"({100 * report['trace_share']:.1f}%) over some cap ({report['traces_over_turn_cap']} over the turn cap, "
            f"{report['traces_over_completion_cap']} over the completion cap); longest turn {report['longest_turn']} "
            f"tokens, most turns {report['most_turns']}, longest completion {report['longest_completion']} tokens"
            + (f"; {report['n_without_trace']} tasks without a trace" if report["n_without_trace"] else ""))


def format_caps_report(name: str, report: CapsReport) -> str:
    return f"caps [{name}] " + describe_caps(report.to_dict())


def shares_over_limit(reports: dict[str, CapsReport], limit: float = MAX_CUT_SHARE) -> list[str]:
    """The names of the reports whose share of expert turns or traces over the caps is above `limit`."""
    return [name for name, report in reports.items() if report.exceeds(limit)]


def refusal_message(reports: dict[str, CapsReport], limit: float = MAX_CUT_SHARE) -> str:
    """One line: which caps cut more than `limit` of the expert format, by how much, and what the
    expert traces need (the caps that cut none of them: most turns, longest turn, longest completion)."""
    parts = []
    for name in shares_over_limit(reports, limit):
        r = reports[name]
        parts.append(f"{name} {100 * r.turn_share:.1f}% of expert turns and {100 * r.trace_share:.1f}% of traces "
                     f"(caps turns {_cap(r.caps.max_turns)}, new tokens/turn {_cap(r.caps.max_new_tokens_per_turn)}, "
                     f"completion {_cap(r.caps.max_completion_tokens)}; the traces need {r.most_turns}, "
                     f"{r.longest_turn}, {r.longest_completion})")
    return (f"the caps cut more than {100 * limit:.0f}% of the expert format: " + "; ".join(parts)
            + "; raise the caps in the study or pass --force-caps")
