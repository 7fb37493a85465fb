"""A non-finite guard on every optimiser step, through TrainerCallback's documented hooks, under every launch.

`on_pre_optimizer_step` runs after gradient clipping and before `optimizer.step()`; `on_optimizer_step`
runs right after the step and before any checkpoint of that step is written.

* One process, DDP: a non-finite gradient (`p.grad`, identical on every process after DDP's all-reduce)
  stops the run before the step; non-finite parameters after it (an overflowing update from finite
  gradients) stop it before they can be saved.
* FSDP2: each process holds shards (DTensors): it checks its local shards, and the finding is agreed
  across processes (an all-reduce), so every process stops together instead of one leaving the others
  waiting in the next collective.
* DeepSpeed (ZeRO-1/2/3): `p.grad` is None (gradients live in DeepSpeed's partitioned buffers) and the
  engine has already stepped inside `accelerator.backward` (accelerate's DeepSpeedEngineWrapper). DeepSpeed
  checks the gradients itself there: a non-finite global gradient norm sets its optimiser's `overflow`
  and the step is skipped (fp32; bf16 with `bf16.check_grad_overflow`, DeepSpeed's default; fp16's loss
  scaler), which accelerate reports as `optimizer_step_was_skipped`. That skip, outside fp16's dynamic
  loss scaling (where skipping an overflow step is routine), stops the run. Parameters are checked after
  the step on each process's partition (ZeRO-3: `ds_tensor`), agreed across processes.

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


def _local(t: torch.Tensor) -> torch.Tensor:
    """This process's own values of a parameter or gradient: an FSDP2 DTensor's shard, a ZeRO-3
    parameter's partition (`ds_tensor`), the tensor itself otherwise."""
    if hasattr(t, "ds_tensor"):
        return t.ds_tensor
    if hasattr(t, "to_local"):
        return t.to_local()
    return t


def first_non_finite(named) -> str | None:
    """The name of the first tensor of (name, tensor) pairs with a non-finite entry in this process's
    values (None tensors skipped)."""
    for name, t in named:
        if t is not None and not bool(torch.isfinite(_local(t).detach()).all()):
            return name
    return None


def agreed_non_finite(accelerator, local: str | None) -> str | None:
    """`local` (this process's finding) agreed across processes where they hold different values (FSDP,
    DeepSpeed): every process gets a finding when any process has one, so all stop together."""
    from pact_cotrain.training import distributed

    if accelerator is None or accelerator.num_processes == 1:
        return local
    if distributed.sharding(accelerator) is None and not _deepspeed(accelerator):
        return local  # DDP replicas: every process found the same
    flag = torch.tensor([0 if local is None else 1], dtype=torch.int64, device=accelerator.device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    if int(flag.item()) == 0:
        return None
    return local if local is not None else "a parameter (found by another process)"


def _deepspeed(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator is not None and accelerator.distributed_type == DistributedType.DEEPSPEED


def _fp16_loss_scaling(accelerator) -> bool:
    """DeepSpeed's fp16 with a dynamic loss scale: skipping a step on overflow is how it finds the scale."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    config = getattr(plugin, "deepspeed_config", None) or {}
    return accelerator.mixed_precision == "fp16" or (config.get("fp16") or {}).get("enabled") is True


class NonFiniteGuard(TrainerCallback):
    def __init__(self, trainer):
        self.trainer = trainer  # for the batch's task ids and the accelerator

    def _params(self, model):
        return [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def _fail(self, state, what: str, consequence: str) -> None:
        step = state.global_step + 1  # the step being taken, counted from 1 (see the module docstring)
        raise NonFiniteUpdateError(f"{what} at step {step} (counted from 1) on the batch of tasks "
                                   f"{self.trainer.current_task_ids()}: {consequence}; nothing of it is saved")

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        accelerator = getattr(self.trainer, "accelerator", None)
        if _deepspeed(accelerator):  # DeepSpeed checked and stepped (or skipped) inside backward
            if accelerator.optimizer_step_was_skipped and not _fp16_loss_scaling(accelerator):
                self._fail(state, "non-finite gradient (DeepSpeed found its global norm non-finite)",
                           "DeepSpeed skipped the optimiser step")
            return
        bad = agreed_non_finite(accelerator, first_non_finite((n, p.grad) for n, p in self._params(model)))
        if bad is not None:
            self._fail(state, f"non-finite gradient of {bad}", "the optimiser step was not applied")

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        bad = agreed_non_finite(getattr(self.trainer, "accelerator", None), first_non_finite(self._params(model)))
        if bad is not None:
            self._fail(state, f"non-finite parameter {bad} after the optimiser step", "the run is stopped")
