"""PACT steps on 2 processes whose batches differ in every way that changes a process's pass count
(launched by tests/test_distributed_uneven.py with torchrun).

    python -m torch.distributed.run --nproc_per_node 2 tests/distributed_uneven.py OUT [WAIT_SECONDS]

Each process gets its own task list (same ids, same length, so the sampler hands both the same indices):
process 0 only untraced tasks, so every prompt is anchored (prompt-only GRPO, no [x; h] pass, no SFT
trace); process 1 only traced tasks with anchor_q = 0, so no prompt is anchored and every row is scored
after [x; h] and SFT runs on its traces. Their forward-token counts, and so their micro-batch counts,
differ. Micro-batch counts are padded to the largest as under ZeRO and FSDP (`_pad_parts`, with one
packed forward per part); the padding's all-reduce is itself a collective, so a process that skips a
pass the other runs leaves both waiting (the hang of issue 30 item 1).

Two trainers run one after the other in the same process group: num_iterations 1 and 2 (2 adds the
frozen pi_old passes, in the prompt-only and the trace-conditioned context). Each process writes
OUT/rank<r>.pt: per run, per step, the trained model's forward calls in train mode and in no-grad mode;
and what the agreement check raised when the two processes reach different agreement sites.

The process group is made here with a collective timeout of WAIT_SECONDS (default 60; accelerate uses the
group it finds): a process left waiting on a collective the other never calls fails with gloo's timeout
error after that long, instead of after torch's default of 30 minutes.
"""

import dataclasses
import datetime
import os
import sys

import torch

from pact_cotrain.config import load_config
from pact_cotrain.envs.toolworld import generate_tasks
from pact_cotrain.recipes.train import build_trainer
from pact_cotrain.testing import exit_launched_process, tiny_llama, tiny_tokenizer
from transformers import TrainerCallback

out = sys.argv[1]
wait = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
torch.distributed.init_process_group("gloo", timeout=datetime.timedelta(seconds=wait))
rank = torch.distributed.get_rank()


class ForwardCounter(TrainerCallback):
    """Forward calls of the trained model per optimiser step: with gradients (training passes) and
    without (pi_old's passes; rollouts run a separate copy or in eval mode and are not counted)."""

    def __init__(self, trainer):
        self.trainer, self.steps, self.grad, self.no_grad = trainer, [], 0, 0
        trainer.model.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        if module.training:
            if torch.is_grad_enabled():
                self.grad += 1
            else:
                self.no_grad += 1

    def on_step_end(self, args, state, control, **kwargs):
        parts = self.trainer._metrics["train"].get("micro_batches") or [0.0]  # this process's own, before the log
        batch = self.trainer._buffered_inputs[0]
        self.steps.append({"grad": self.grad, "no_grad": self.no_grad, "parts": parts[-1],
                           "anchored": float(batch["anchor"].float().mean()), "sft_traces": len(batch.get("sft_targets", []))})
        self.grad = self.no_grad = 0


tok = tiny_tokenizer()
traced = generate_tasks(8, seed=0)
assert all(t.trace for t in traced)
# process 0: the same tasks without their traces (every prompt anchored, nothing to supervise)
tasks = traced if rank == 1 else [dataclasses.replace(t, trace=None) for t in traced]
results = {}
for iterations in (1, 2):
    cfg = load_config("pact", ["train.k=2", "train.prompts_per_step=2", f"train.max_steps={iterations}",
                               f"train.num_iterations={iterations}", "train.micro_batch_tokens=160",
                               "train.forward_per_group=false", "method.anchor_q=0.0",
                               "sampling.max_new_tokens_per_turn=8", "sampling.max_completion_tokens=24",
                               "sampling.max_turns=2", "train.report_to=[]", "train.save_steps=0",
                               "train.disable_tqdm=true", "train.gradient_checkpointing=false",
                               f"output_dir={out}/run{iterations}"])
    trainer = build_trainer(cfg, model=tiny_llama(tok), tokenizer=tok, tasks=tasks)
    trainer._pad_parts = True  # as ZeRO-2/3 and FSDP turn it on (distributed.padded_count)
    counter = ForwardCounter(trainer)
    trainer.add_callback(counter)
    trainer.train()
    results[iterations] = counter.steps
    from pact_cotrain.training.distributed import sharding

    results["sharding"] = sharding(trainer.accelerator)  # zero2 / zero3 under a DeepSpeed launch, None under DDP

    print(f"RANK {rank} launch={trainer.accelerator.distributed_type} sharding={sharding(trainer.accelerator)} "
          f"num_iterations={iterations} steps={trainer.state.global_step} "
          f"forwards={counter.steps}", flush=True)
# The agreement's own check: processes that reach different agreement sites raise, on every process, instead
# of waiting (here the two sites' collectives match each other, as two different passes' collectives would).
from pact_cotrain.training import distributed

try:
    distributed.agreed_counts(trainer.accelerator, f"site of rank {rank}", 7, {"parts": 1}, force=True)
    results["mismatch"] = None
except distributed.CollectiveMismatchError as exc:
    results["mismatch"] = str(exc)
torch.save(results, f"{out}/rank{rank}.pt")
exit_launched_process()
