"""A non-finite guard on every optimiser step, through TrainerCallback's documented hooks.

`on_pre_optimizer_step` runs after gradient clipping and before `optimizer.step()`: a non-finite
gradient stops the run there, so the step is not applied. `on_optimizer_step` runs right after the
step and before any checkpoint of that step is written: non-finite parameters (an overflowing update
from finite gradients) stop the run before they can be saved.
"""

from __future__ import annotations

import torch
from transformers import TrainerCallback


class NonFiniteUpdateError(FloatingPointError):
    pass


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
        raise NonFiniteUpdateError(f"{what} at step {state.global_step} on the batch of tasks "
                                   f"{self.trainer.current_task_ids()}: {consequence}; nothing of it is saved")

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        bad = _first_non_finite((n, p.grad) for n, p in self._params(model))
        if bad is not None:
            self._fail(state, f"non-finite gradient of {bad}", "the optimiser step was not applied")

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        bad = _first_non_finite(self._params(model))
        if bad is not None:
            self._fail(state, f"non-finite parameter {bad} after the optimiser step", "the run is stopped")
