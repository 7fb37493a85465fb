"""PACT steps with a vLLM engine in every process (launched by tests/test_distributed_vllm.py with torchrun
from the vLLM environment: `.venv-vllm/bin/vllm-python -m torch.distributed.run --nproc_per_node 2 ...`).

    distributed_vllm_step.py OUT STEPS

Each process trains the same tiny model with `train.rollout_backend=vllm` (its own colocated engine,
gloo on CPU) and writes OUT/rank<r>.pt: per step, the task ids it rolled out, the largest difference
between its engine's sampling log-probs and its trainer's re-score of the same tokens with the weights
the engine was synced to (before the step's update), the step the engine was synced at, and a hash of
the parameters after the step.
"""

import hashlib
import sys

import torch
from accelerate import PartialState
from transformers import LlamaForCausalLM, TrainerCallback

from pact_cotrain.config import load_config
from pact_cotrain.recipes.train import build_trainer
from pact_cotrain.testing import exit_launched_process, save_tiny_llama_for_vllm, tiny_tokenizer

out, steps = sys.argv[1], int(sys.argv[2])


def parameter_hash(model) -> str:
    digest = hashlib.sha256()
    for _, p in sorted(model.named_parameters()):
        digest.update(p.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


class Recorder(TrainerCallback):
    """Per step: the prompts, engine-vs-trainer log-prob agreement, the parameters after the update."""

    def __init__(self, trainer):
        self.trainer, self.steps = trainer, []

    @torch.no_grad()
    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        trainer = self.trainer
        batch = trainer._buffered_inputs[0]
        every = torch.ones(len(batch["completions"]), dtype=torch.bool)
        # The trainer's own scoring pass (prompt-only context, the rollout temperature) with the weights
        # that were pushed into the engine at this step's start: no update has been applied yet.
        rescored = trainer._score_passes(model, batch, every, None, sft=False)["logp_prompt"]
        mask = batch["loss_mask"].bool()
        diff = (rescored - batch["sampling_logps"]).abs()[mask]
        self.steps.append({"step": state.global_step, "task_ids": list(batch["task_ids"]),
                           "n_tokens": int(mask.sum()), "max_abs_logp_diff": float(diff.max()),
                           "mean_abs_logp_diff": float(diff.mean()), "engine_synced_step": trainer._vllm_synced_step,
                           "engine_seed": trainer._vllm.llm.model_config.seed,
                           "engine_executor": trainer._vllm.llm.llm_engine.vllm_config.parallel_config
                           .distributed_executor_backend})

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.steps[-1]["params_after"] = parameter_hash(self.trainer.accelerator.unwrap_model(model))


state = PartialState(cpu=not torch.cuda.is_available())  # the process group (gloo on CPU), as the trainer sets it up
tok = tiny_tokenizer()
if state.is_main_process:
    save_tiny_llama_for_vllm(tok, f"{out}/init")
state.wait_for_everyone()
model = LlamaForCausalLM.from_pretrained(f"{out}/init", dtype=torch.float32)
cfg = load_config("pact", ["train.k=2", "train.prompts_per_step=2", "data.n_train=16", f"train.max_steps={steps}",
                           "sampling.max_new_tokens_per_turn=12", "sampling.max_completion_tokens=48",
                           "sampling.max_turns=2", "train.report_to=[]", "train.save_steps=0",
                           "train.disable_tqdm=true", "train.learning_rate=1e-2", "method.anchor_q=0.5",
                           "train.rollout_backend=vllm",
                           "train.vllm={max_model_len: 2048, kv_cache_memory_bytes: 67108864}",
                           f"output_dir={out}/run"])
trainer = build_trainer(cfg, model=model, tokenizer=tok)
recorder = Recorder(trainer)
trainer.add_callback(recorder)
trainer.train()
torch.save({"rank": state.process_index, "world": state.num_processes, "backend": state.backend,
            "steps": recorder.steps}, f"{out}/rank{state.process_index}.pt")
for s in recorder.steps:
    print(f"RANK {state.process_index}/{state.num_processes} backend={state.backend} step={s['step']} "
          f"tasks={','.join(s['task_ids'])} tokens={s['n_tokens']} engine={s['engine_executor']} seed={s['engine_seed']} "
          f"synced_at={s['engine_synced_step']} max|dlogp|={s['max_abs_logp_diff']:.2e} "
          f"mean|dlogp|={s['mean_abs_logp_diff']:.2e} params={s['params_after'][:16]}", flush=True)
trainer.close_rollout_engine()
exit_launched_process()
