"""Progress with an ETA for long jobs: a live bar on a terminal, plain lines in a log file.

    with Progress("eval toolworld", total=8, unit="episode") as bar:
        for ...:
            bar.advance()

On a terminal this is a rich bar (count, elapsed, time left). When the stream is not a terminal
(output sent to a file or a pipe) a rich bar would either print nothing until the end or one frame
at the end, so instead a line is written at the start, whenever a unit finishes and at least 30 s
have passed since the last line, every 30 s while a unit is still running (a training step can take
minutes), and at the end:

    train: step 3/16, 2.1 min/step, ETA 27 min

`PACT_PROGRESS=plain|rich|off` forces a mode (e.g. plain lines in a terminal).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TextIO

PLAIN_EVERY_S = 30.0


def format_duration(seconds: float) -> str:
    """4.2 s, 45 s, 2.1 min, 1.3 h: short enough for a progress line, precise enough to plan with."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min" if seconds < 600 else f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def progress_line(label: str, unit: str, done: int, total: int | None, elapsed: float,
                  done_here: int | None = None, running_for: float | None = None) -> str:
    """`label: unit done/total, time/unit, ETA t`. `elapsed` is the time since the start and
    `running_for` how long the unit in progress has been running. The rate is over the `done_here`
    units finished (all of `done` unless a resumed job started part way), in the time they took, so
    that a unit half done does not inflate it; the ETA counts the running unit's time as spent, up to
    one unit's worth. Both appear once a unit has finished."""
    done_here = done if done_here is None else done_here
    count = f"{done}/{total}" if total is not None else str(done)
    parts = [f"{label}: {unit} {count}"]
    finished = total is not None and done >= total
    in_progress = 0.0 if finished or running_for is None else min(running_for, elapsed)
    if done_here > 0:
        per_unit = (elapsed - in_progress) / done_here
        parts.append(f"{format_duration(per_unit)}/{unit}")
        if total is not None:
            left = per_unit * (total - done) - min(in_progress, per_unit)
            parts.append(f"done in {format_duration(elapsed)}" if finished else f"ETA {format_duration(left)}")
    else:
        parts.append(f"{format_duration(elapsed)} elapsed")
    if running_for is not None and done_here > 0 and not finished and running_for >= 1.0:
        parts.append(f"this {unit} running for {format_duration(running_for)}")
    return ", ".join(parts)


def choose_mode(stream: TextIO, mode: str = "auto") -> str:
    """"rich" on a terminal, "plain" otherwise; PACT_PROGRESS or an explicit mode wins."""
    forced = os.environ.get("PACT_PROGRESS", "").strip().lower()
    if mode == "auto" and forced in ("plain", "rich", "off"):
        mode = forced
    if mode != "auto":
        return mode
    isatty = getattr(stream, "isatty", None)
    return "rich" if isatty is not None and isatty() else "plain"


class Progress:
    """A counter of finished units (episodes, steps, stages) that reports itself with an ETA."""

    def __init__(self, label: str, total: int | None, unit: str = "item", *, stream: TextIO | None = None,
                 mode: str = "auto", every_s: float = PLAIN_EVERY_S, start: int = 0):
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream if stream is not None else sys.stderr
        self.mode = choose_mode(self.stream, mode)
        self.every_s = every_s
        self.done = start
        self._start_count = start
        self._lock = threading.Lock()
        self._started = self._last_unit = self._last_line = time.monotonic()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._bar = self._job = None
        if self.mode == "rich":
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn(f"{unit}s"), TimeElapsedColumn(), TextColumn("ETA"),
                                     TimeRemainingColumn(), console=Console(file=self.stream))
            self._bar.start()
            self._job = self._bar.add_task(label, total=total, completed=start)
        elif self.mode == "plain":
            self._write(self.line())
            self._ticker = threading.Thread(target=self._tick, name=f"progress {label}", daemon=True)
            self._ticker.start()

    def line(self) -> str:
        now = time.monotonic()
        return progress_line(self.label, self.unit, self.done, self.total, now - self._started,
                             done_here=self.done - self._start_count, running_for=now - self._last_unit)

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            now = time.monotonic()
            self._last_unit = now
            due = now - self._last_line >= self.every_s
        if self._bar is not None:
            self._bar.update(self._job, completed=self.done)
        elif self.mode == "plain" and due:
            self._write(self.line())

    def close(self) -> None:
        """Stop the bar or the ticker and write the final line (plain mode)."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=1.0)
            self._ticker = None
            self._write(self.line())
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _tick(self) -> None:
        # Wakes often enough that a line is never more than every_s late, whatever advance() does.
        while not self._stop.wait(min(self.every_s, 5.0)):
            with self._lock:
                due = time.monotonic() - self._last_line >= self.every_s
            if due:
                self._write(self.line())

    def _write(self, text: str) -> None:
        with self._lock:
            self._last_line = time.monotonic()
        try:
            print(text, file=self.stream, flush=True)
        except ValueError:  # the stream was closed under us (interpreter shutdown): nothing to report to
            pass


class Stages:
    """Named steps of a job with no natural count (model preparation): one Progress over them,
    whose label names the stage running now."""

    def __init__(self, label: str, stages: list[str], **kwargs):
        self.label, self.stages = label, list(stages)
        self.progress = Progress(f"{label}: {self.stages[0]}", total=len(self.stages), unit="stage", **kwargs)

    def next(self) -> None:
        """The current stage is finished; the label moves to the next one."""
        p = self.progress
        if p.done + 1 < len(self.stages):
            p.label = f"{self.label}: {self.stages[p.done + 1]}"
            if p._bar is not None:
                p._bar.update(p._job, description=p.label)
        p.advance()

    def close(self) -> None:
        self.progress.label = self.label
        self.progress.close()


def plain_training_callback(stream: TextIO | None = None, every_s: float = PLAIN_EVERY_S):
    """A TrainerCallback writing `train: step 3/16, 2.1 min/step, ETA 27 min` lines (for a log file,
    where the rich panel would only be dumped once at the end)."""
    from transformers import TrainerCallback

    class PlainTrainingProgress(TrainerCallback):
        def __init__(self):
            self.progress: Progress | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.progress = Progress("train", total=state.max_steps, unit="step", stream=stream,
                                         mode="plain", every_s=every_s, start=state.global_step)

        def on_step_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.advance(state.global_step - self.progress.done)

        def on_train_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.close()
                self.progress = None

    return PlainTrainingProgress()
