"""One PACT step with a colocated vLLM engine (train.rollout_backend=vllm and its colocate defaults), on a
small random Llama saved to OUT, for benchmarks/gpu_check.sh where vllm imports.

    python benchmarks/gpu_vllm_step.py OUT

Prints `vllm_step_seconds: S`, `vllm_sync_seconds: S` and the engine arguments it was built with.
"""

import sys
import time

import torch
from transformers import AutoModelForCausalLM

from pact_cotrain.config import load_config
from pact_cotrain.recipes.train import build_trainer
from pact_cotrain.testing import save_tiny_llama_for_vllm, tiny_tokenizer

out = sys.argv[1]
tok = tiny_tokenizer()
save_tiny_llama_for_vllm(tok, f"{out}/model")
model = AutoModelForCausalLM.from_pretrained(f"{out}/model", dtype=torch.float32)
cfg = load_config("pact", ["train.k=2", "train.prompts_per_step=2", "data.n_train=8", "train.max_steps=1",
                           "sampling.max_new_tokens_per_turn=16", "sampling.max_completion_tokens=64",
                           "sampling.max_turns=2", "train.report_to=[]", "train.save_steps=0", "train.disable_tqdm=true",
                           "train.rollout_backend=vllm", "train.rollout_dtype=float32", f"output_dir={out}/run"]
                  + ([] if torch.cuda.is_available() else ["train.vllm={kv_cache_memory_bytes: 67108864}"]))
trainer = build_trainer(cfg, model=model, tokenizer=tok)
print(f"vllm_engine_kwargs: {trainer.vllm_kwargs}", flush=True)
started = time.perf_counter()
trainer.train()
print(f"vllm_step_seconds: {time.perf_counter() - started:.1f}")
syncs = trainer._metrics["train"].get("vllm_sync_seconds") or [float("nan")]
print(f"vllm_sync_seconds: {syncs[-1]:.3f}")
trainer.close_rollout_engine()
