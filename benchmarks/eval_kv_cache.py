"""HF backend: multi-turn KV-cache reuse against full prefill every turn, side by side in one run.

Greedy episodes on toolworld and on FTRL tasks, the same tasks and batch for both paths; prints
episodes/s, sampled tokens/s and prefilled tokens per path, the speed-up, and whether both paths
produced the same token ids. CPU numbers depend on the machine's load: the ratio is what compares.

    .venv/bin/python benchmarks/eval_kv_cache.py                  # SmolLM2-135M-Instruct
    .venv/bin/python benchmarks/eval_kv_cache.py --model runs/demo/final --benchmarks toolworld
    .venv/bin/python benchmarks/eval_kv_cache.py --tiny           # smoke test with a tiny random model
"""

from __future__ import annotations

import argparse
import time

import torch

from pact_cotrain.rollout.engine import RolloutEngine, SamplingConfig


def load_benchmark_tasks(name: str, n: int):
    from pact_cotrain.eval.benchmarks import BENCHMARKS
    import pact_cotrain.envs.ftrl  # noqa: F401  (registers ftrl)
    import pact_cotrain.eval.benchmarks  # noqa: F401

    if name == "toolworld":
        from pact_cotrain.envs.toolworld import generate_tasks, make_env
        return generate_tasks(n, seed=1000, split="test"), make_env
    bench = BENCHMARKS[name]
    return bench.load(None)[:n], bench.make_env


def time_path(model, tokenizer, tasks, make_env, reuse: bool, sampling: SamplingConfig):
    engine = RolloutEngine(model, tokenizer, make_env, sampling, reuse_kv_cache=reuse)
    start = time.perf_counter()
    episodes = engine.rollout(tasks, k=1)
    seconds = time.perf_counter() - start
    return episodes, seconds, engine.backend.prefilled_tokens


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random model (smoke test)")
    parser.add_argument("--model", default="smollm2-135m-instruct",
                        help="registry name or directory (e.g. runs/demo/final, which makes tool calls)")
    parser.add_argument("--benchmarks", default="toolworld,ftrl")
    parser.add_argument("--n", type=int, default=4, help="episodes per benchmark (one batch)")
    parser.add_argument("--max-turns", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.tiny:
        from pact_cotrain.testing import tiny_llama, tiny_tokenizer
        tokenizer = tiny_tokenizer()
        model, label = tiny_llama(tokenizer), "tiny random Llama"
    else:
        from pact_cotrain.models import prepare_model
        from pact_cotrain.recipes.common import load_model_and_tokenizer
        if args.model == "smollm2-135m-instruct":
            prepare_model(args.model)
        model, tokenizer = load_model_and_tokenizer(args.model, args.dtype)
        label = f"{args.model} ({args.dtype})"
    sampling = SamplingConfig(greedy=True, max_turns=args.max_turns, max_new_tokens_per_turn=args.max_new_tokens,
                              max_completion_tokens=args.max_turns * (args.max_new_tokens + 400))
    print(f"model: {label}; greedy; {args.n} episodes per benchmark in one batch; up to {args.max_turns} turns "
          f"x {args.max_new_tokens} new tokens; torch threads {torch.get_num_threads()}")
    print("| benchmark | path | episodes/s | sampled tokens/s | prefilled tokens | turns | seconds |")
    print("|---|---|---|---|---|---|---|")
    for name in args.benchmarks.split(","):
        tasks, make_env = load_benchmark_tasks(name, args.n)
        results = {}
        for reuse in (False, True):  # full prefill first, so a cold start does not favour reuse
            results[reuse] = time_path(model, tokenizer, tasks, make_env, reuse, sampling)
        for reuse, (episodes, seconds, prefilled) in results.items():
            sampled = sum(e.n_generated for e in episodes)
            turns = sum(len(e.turn_spans) for e in episodes)
            print(f"| {name} | {'KV reuse' if reuse else 'full prefill'} | {len(episodes) / seconds:.3f} | "
                  f"{sampled / seconds:.1f} | {prefilled} | {turns} | {seconds:.1f} |")
        same = [e.completion_ids for e in results[True][0]] == [e.completion_ids for e in results[False][0]]
        print(f"| {name} | speed-up | {results[False][1] / results[True][1]:.2f}x | | | | "
              f"same token ids: {same} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
