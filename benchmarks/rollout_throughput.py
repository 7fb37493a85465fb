"""Rollout throughput on this machine: plain `model.generate` vs our engine (HF backend), with and
without environments in the loop, on the same batch. Prints measured tokens/s and the ratios.

    python benchmarks/rollout_throughput.py --batch 8 --new-tokens 64 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import time

import torch

from pact_cotrain.envs.base import StepResult
from pact_cotrain.envs.toolworld import ToolworldEnv, generate_tasks
from pact_cotrain.recipes.common import load_model_and_tokenizer
from pact_cotrain.render import prompt_ids
from pact_cotrain.rollout.engine import RolloutEngine, SamplingConfig


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
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    model, tok = load_model_and_tokenizer(args.model, args.dtype)
    tasks = generate_tasks(args.batch, seed=1, split="test")
    prompts = [prompt_ids(tok, t) for t in tasks]

    def plain_generate():
        width = max(map(len, prompts))
        ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
        attn = (torch.arange(width)[None, :] >= torch.tensor([width - len(p) for p in prompts])[:, None]).long()
        out = model.generate(input_ids=ids, attention_mask=attn, max_new_tokens=args.new_tokens, do_sample=True,
                             temperature=1.0, top_k=0, min_new_tokens=args.new_tokens, pad_token_id=tok.pad_token_id)
        return (out.shape[1] - width) * len(prompts)

    def engine_run(env_factory, max_turns):
        cfg = SamplingConfig(max_turns=max_turns, max_new_tokens_per_turn=args.new_tokens,
                             max_completion_tokens=max_turns * args.new_tokens + 400)
        episodes = RolloutEngine(model, tok, env_factory, cfg).rollout(tasks, k=1, seed=0)
        return sum(ep.n_generated for ep in episodes)

    runs = {
        "plain model.generate (fixed length)": plain_generate,
        "engine, no environment (1 turn)": lambda: engine_run(lambda t: NoToolEnv(), 1),
        "engine + toolworld env (<=3 turns)": lambda: engine_run(lambda t: ToolworldEnv(max_steps=3), 3),
    }
    print(f"model={args.model} dtype={args.dtype} batch={args.batch} new_tokens/turn={args.new_tokens} "
          f"threads={torch.get_num_threads()}")
    rates = {}
    for name, fn in runs.items():
        best = 0.0
        for _ in range(args.repeats):
            started = time.perf_counter()
            with torch.no_grad():
                n = fn()
            best = max(best, n / (time.perf_counter() - started))
        rates[name] = best
        print(f"{name:40s} {best:8.1f} tok/s")
    base = rates["plain model.generate (fixed length)"]
    for name, rate in rates.items():
        print(f"{name:40s} {rate / base:6.2f}x of plain generate")


if __name__ == "__main__":
    main()
