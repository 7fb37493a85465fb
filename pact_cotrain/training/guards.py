"""A non-finite guard on every optimiser step, through TrainerCallback's documented hooks.

`on_pre_optimizer_step` runs after gradient clipping and before `optimizer.step()`: a non-finite
gradient stops the run there, so the step is not applied. `on_optimizer_step` runs right after the
step and before any checkpoint of that step is written: non-finite parameters (an overflowing update
from finite gradients) stop the run before they can be saved.

Steps are counted from 1, as the progress bar and `checkpoint-N` count them: both hooks run before
transformers increments `state.global_step`, so the step being taken is `global_step + 1`. The error
is a RunError, so `pact train` prints it as one line.
"""

from __future__ import annotations

import torch
from transformers import TrainerCallback

from pact_cotrain.training.checkpoints import RunError


class NonFiniteUpdateError(RunError, FloatingPointError):
    """A step whose gradient or update is not finite; the run stops (a condition of the run, not a bug)."""


def _first_non_finite(tensors) -> str | None:
    for name, t in tensors:
        if t is not None and not bool(torch.isfinite(t.detach()).all()):
            return name
    return None


class NonFiniteGuard(TrainerCallback):
    def __init__(self, trainer):
        self.trainer = trainer  # for the batch's task ids

    def _params(self, model):
        return [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def _fail(self, state, what: str, consequence: str) -> None:
        step = state.global_step + 1  # the step being taken, counted from 1 (see the module docstring)
        raise NonFiniteUpdateError(f"{what} at step {step} (counted from 1) on the batch of tasks "
                                   f"{self.trainer.current_task_ids()}: {consequence}; nothing of it is saved")

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        bad = _first_non_finite((n, p.grad) for n, p in self._params(model))
        if bad is not None:
            self._fail(state, f"non-finite gradient of {bad}", "the optimiser step was not applied")

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        bad = _first_non_finite(self._params(model))
        if bad is not None:
            self._fail(state, f"non-finite parameter {bad} after the optimiser step", "the run is stopped")
