"""SIGTERM and SIGINT stop a run without losing it: the step under way is finished, a checkpoint of it is
written, and the run ends with one line and a non-zero exit (128 + the signal's number, as a shell
reports a process a signal ended: 143 for SIGTERM, 130 for SIGINT). A second signal exits at once.

A cluster scheduler sends SIGTERM some time before it kills a pre-empted job; this is the window to save
in. Through TrainerCallback's documented controls: at the end of the step, `should_save` (the Trainer
writes the checkpoint, exact_resume.py, atomically) and `should_training_stop`. With several processes
each receives its own signal, possibly in different steps: the stop is agreed with one all-reduce of a
flag per step (accelerate's `reduce`), so every process saves and stops at the same step.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import torch
from transformers import TrainerCallback

from pact_cotrain.training.checkpoints import RunError

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StoppedBySignal(RunError):
    """The run stopped on a signal after saving its checkpoint; `exit_code` is 128 + the signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class GracefulStop(TrainerCallback):
    def __init__(self, trainer):
        self.trainer = trainer  # its accelerator, to agree on the stop across processes
        self.signum: int | None = None  # the first signal received
        self.stopped_at: int | None = None  # the step whose checkpoint the stop wrote
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            print(f"second {name}: exiting at once, without a checkpoint of the step under way", file=sys.stderr,
                  flush=True)
            os._exit(128 + signum)  # the kernel releases the run lock (flock) with the process
        self.signum = signum
        print(f"{name}: finishing the step under way, then saving a checkpoint and stopping ({name} again to exit "
              f"at once)", file=sys.stderr, flush=True)

    def on_train_begin(self, args, state, control, **kwargs):
        self.signum, self.stopped_at = None, None
        if threading.current_thread() is threading.main_thread():  # Python runs handlers in the main thread only
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}

    def _agreed(self) -> bool:
        accelerator = self.trainer.accelerator
        if accelerator.num_processes == 1:
            return self.signum is not None
        flag = torch.tensor([0 if self.signum is None else 1], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)

    def on_step_end(self, args, state, control, **kwargs):
        if self._agreed():
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step

    def on_train_end(self, args, state, control, **kwargs):
        self.restore_handlers()

    def restore_handlers(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def raise_if_stopped(self, output_dir: str) -> None:
        """After `train()` returned: the one line a stopped run ends with (the CLI prints it)."""
        if self.stopped_at is None:
            return
        signum = self.signum if self.signum is not None else signal.SIGTERM  # another process's signal
        raise StoppedBySignal(f"stopped by {signal.Signals(signum).name} after step {self.stopped_at}: saved "
                              f"{os.path.join(output_dir, f'checkpoint-{self.stopped_at}')}; continue with --resume",
                              signum)
