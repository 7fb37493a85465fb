"""A few PACT steps in 2 processes, launched by benchmarks/gpu_check.sh (issue 30 item 9):

    python -m torch.distributed.run --standalone --nproc_per_node 2 benchmarks/gpu_multiproc.py MODE OUT

MODE: ddp (accelerate's DDP) or fsdp2 (accelerate's FSDP2 plugin, as pact_cotrain/configs/accelerate/fsdp2.yaml
sets it). Both processes may share one GPU: they then both use cuda:0, and the process group is gloo (NCCL
refuses two ranks on one device). The model is a small random Llama and the tokenizer the in-code one of
`pact_cotrain.testing`, so nothing is downloaded; trainers are built as `pact train` builds them.

Rank 0 prints `multiproc_<mode>_seconds_per_step: S` (the steps after the first), and every rank prints
`RANK r ... params=HASH` so the caller can check that the replicas ended equal.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time

import torch
import torch.distributed as dist

mode, out = sys.argv[1], sys.argv[2]
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 3
on_gpu = torch.cuda.is_available()
if on_gpu and torch.cuda.device_count() < int(os.environ["WORLD_SIZE"]):
    os.environ["LOCAL_RANK"] = "0"  # every process on cuda:0; accelerate reads LOCAL_RANK for its device
    torch.cuda.set_device(0)
    dist.init_process_group("gloo")  # accelerate keeps a group that is already initialised
if mode == "fsdp2":  # what `accelerate launch --config_file .../fsdp2.yaml` puts in the environment
    os.environ.update({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
                       "FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT", "FSDP_RESHARD_AFTER_FORWARD": "true",
                       "FSDP_CPU_RAM_EFFICIENT_LOADING": "false", "FSDP_OFFLOAD_PARAMS": "false"})

from accelerate import PartialState  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from pact_cotrain.config import load_config  # noqa: E402
from pact_cotrain.recipes.train import build_trainer  # noqa: E402
from pact_cotrain.testing import exit_launched_process, tiny_llama, tiny_tokenizer  # noqa: E402


class StepClock(TrainerCallback):
    def __init__(self):
        self.ends = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


def parameter_hash(trainer) -> str:
    if mode == "fsdp2":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(trainer.model, options=StateDictOptions(full_state_dict=True, cpu_offload=False))  # every rank
    else:
        state = trainer.accelerator.unwrap_model(trainer.model).state_dict()
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(state[name].detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


tok = tiny_tokenizer()
model = tiny_llama(tok, hidden=64, layers=2)
cfg = load_config("pact", ["train.k=2", "train.prompts_per_step=2", "data.n_train=16", f"train.max_steps={steps}",
                           "sampling.max_new_tokens_per_turn=16", "sampling.max_completion_tokens=64",
                           "sampling.max_turns=2", "train.report_to=[]", "train.save_steps=0", "train.disable_tqdm=true",
                           "train.forward_per_group=false", f"output_dir={out}/{mode}"])
started = time.perf_counter()
trainer = build_trainer(cfg, model=model, tokenizer=tok)
clock = StepClock()
trainer.add_callback(clock)
trainer.train()
state = PartialState()
from pact_cotrain.training import distributed  # noqa: E402

per_step = (clock.ends[-1] - clock.ends[0]) / max(len(clock.ends) - 1, 1) if len(clock.ends) > 1 else float("nan")
print(f"RANK {state.process_index}/{state.num_processes} mode={mode} sharding={distributed.sharding(trainer.accelerator)} "
      f"device={trainer.accelerator.device} backend={state.backend} steps={trainer.state.global_step} "
      f"params={parameter_hash(trainer)}", flush=True)
if state.process_index == 0:
    print(f"multiproc_{mode}_seconds_per_step: {per_step:.3f}", flush=True)
    print(f"multiproc_{mode}_seconds_total: {time.perf_counter() - started:.1f}", flush=True)
exit_launched_process()
