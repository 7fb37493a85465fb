"""PACT steps with rollouts in every process (launched by tests/test_distributed.py with torchrun).

    python -m torch.distributed.run --nproc_per_node N tests/distributed_step.py OUT PROMPTS_PER_PROCESS STEPS \
        [GEN_BATCH [MICRO_BATCH_TOKENS [PAD]]]

PAD=1 pads every process's micro-batch count to the largest, as ZeRO and FSDP need (training/distributed.py,
item 4), with one packed forward per part (train.forward_per_group=false, as on GPUs).

Each process trains the same tiny model and writes OUT/rank<r>.pt: per step, the task ids and
rollout token ids it trained on, its loss scale, the gradient the optimiser is about to apply (after
DDP's all-reduce, before the step; no clipping) and a hash of the parameters after the step. The
optimiser is plain SGD, whose update is linear in the gradient, so a wrong loss normaliser shows
(Adam's first steps, and clipping, would hide a gradient's scale). On GPUs the same script runs under
`accelerate launch --config_file pact_cotrain/configs/accelerate/ddp.yaml`.
"""

import hashlib
import sys

import torch
from accelerate import PartialState
from transformers import TrainerCallback
from transformers.training_args import OptimizerNames

from pact_cotrain.config import load_config
from pact_cotrain.recipes.train import build_trainer
from pact_cotrain.testing import exit_launched_process, tiny_llama, tiny_tokenizer

out, prompts, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
generation_batch = sys.argv[4] if len(sys.argv) > 4 else "null"
micro_batch_tokens = sys.argv[5] if len(sys.argv) > 5 else "null"
pad = len(sys.argv) > 6 and sys.argv[6] == "1"


def parameter_hash(model) -> str:
    digest = hashlib.sha256()
    for _, p in sorted(model.named_parameters()):
        digest.update(p.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


class Recorder(TrainerCallback):
    """Per step: what the step trained on, the gradient it applies, the parameters it leaves."""

    def __init__(self, trainer):
        self.trainer, self.steps = trainer, []
        self.training_forwards = 0  # forward calls of the trained model in train mode (rollouts run in eval mode)
        trainer.model.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        if module.training:
            self.training_forwards += 1

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        batch = self.trainer._buffered_inputs[0]
        grads = torch.cat([p.grad.detach().flatten() for _, p in sorted(model.named_parameters())])
        self.steps.append({"step": state.global_step, "task_ids": list(batch["task_ids"]),
                           "completions": [list(c) for c in batch["completions"]],
                           "anchor": batch["anchor"].tolist(), "rl_loss_scale": batch.get("rl_loss_scale", 1.0),
                           "sft_loss_scale": batch.get("sft_loss_scale", 1.0), "n_sft": self._n_sft(batch),
                           "n_tokens": int(batch["loss_mask"].sum()), "grad": grads.clone(),
                           "forwards": self.training_forwards,
                           "parts": (self.trainer._metrics["train"].get("micro_batches") or [1.0])[-1]})
        self.training_forwards = 0

    def _n_sft(self, batch) -> int:
        from pact_cotrain.training.distributed import sft_raw_normaliser

        plan = batch["plan"]
        return int(sft_raw_normaliser(batch, plan.toolcall_weight, plan.answer_weight))

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.steps[-1]["params_after"] = parameter_hash(self.trainer.accelerator.unwrap_model(model))


def with_end_of_turn_bias(model, eos: int, bias: float = 4.7):
    """A logit bias on the end-of-turn id (p ~ 0.15 per token for this random model), so rollouts end at
    varying lengths and the processes' token counts D_r differ (equal D_r would hide a wrong normaliser)."""
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    head.weight = model.lm_head.weight  # still tied to the input embeddings
    with torch.no_grad():
        head.bias.zero_()
        head.bias[eos] = bias
    model.lm_head = head
    return model


tok = tiny_tokenizer()
model = with_end_of_turn_bias(tiny_llama(tok), tok.eos_token_id)
cfg = load_config("pact", ["train.k=2", f"train.prompts_per_step={prompts}", "data.n_train=16",
                           f"train.max_steps={steps}", f"sampling.generation_batch_size={generation_batch}",
                           f"train.micro_batch_tokens={micro_batch_tokens}",
                           "sampling.max_new_tokens_per_turn=12", "sampling.max_completion_tokens=48",
                           "sampling.max_turns=2", "train.report_to=[]", "train.save_steps=0",
                           "train.disable_tqdm=true", "train.learning_rate=1e-2", "train.max_grad_norm=0",
                           "method.anchor_q=0.5", f"output_dir={out}/run"]
                  + (["train.forward_per_group=false"] if pad else []))
trainer = build_trainer(cfg, model=model, tokenizer=tok)
trainer._pad_parts = pad
trainer.args.optim = OptimizerNames.SGD
recorder = Recorder(trainer)
trainer.add_callback(recorder)
trainer.train()
state = PartialState()
logs = [h for h in trainer.state.log_history if "loss" in h]  # rank 0's log: metrics averaged over processes
torch.save({"rank": state.process_index, "world": state.num_processes, "backend": state.backend,
            "steps": recorder.steps, "logs": logs}, f"{out}/rank{state.process_index}.pt")
print(f"RANK {state.process_index}/{state.num_processes} backend={state.backend} step={trainer.state.global_step} "
      f"params={parameter_hash(trainer.accelerator.unwrap_model(trainer.model))}", flush=True)
exit_launched_process()
