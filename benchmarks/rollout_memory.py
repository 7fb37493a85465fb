"""Peak memory of one HF-backend rollout turn at 128 and at 1,024 new tokens (issue 30 item 6).

The same batch of prompts goes through `HFBackend.generate` (SmolLM2-135M-Instruct, fp32, sampled at
T=1) once per setting, each in a fresh subprocess, so neither run sees the other's allocations. The end
of turn is set to an id the model never samples, so every row decodes all of its new tokens (the
number generated is printed and checked).

What "peak rollout memory" measures, on CPU: the process's peak resident set size during the turn
(VmHWM, reset just before the turn through /proc/self/clear_refs) minus its resident size after
torch and transformers were imported and before the model was loaded. So it counts the weights, the
KV cache and whatever the turn allocates (the analogue of torch.cuda.max_memory_allocated on a GPU),
and not the libraries' code. tracemalloc would miss torch's allocations altogether.

RSS counts live tensors only when freed memory goes back to the system. glibc's default mmap threshold
rises to the largest block freed (up to 32 MiB), after which blocks of that size come from the heap and
stay resident when freed: HF's DynamicCache grows every layer's K and V by torch.cat at each step, freeing
the previous, slightly smaller block, so under the default allocator RSS also holds those freed KV blocks.
The children therefore run with MALLOC_MMAP_THRESHOLD_ fixed (128 KiB by default), which makes RSS follow
live memory; `--malloc-mmap-threshold 0` measures under glibc's default instead.

    PYTHONPATH=$PWD python benchmarks/rollout_memory.py [--batch 4] [--threads 1]

The last line is `peak_rollout_memory_ratio_1024_vs_128: R`: peak rollout memory at 1,024 new tokens
over that at 128. Keeping full-vocabulary logits for every step made it grow with the new tokens
(B x T x V fp32, stacked, copied and normalised); recording each sampled token's log-prob as it is
sampled leaves only the KV cache growing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SETTINGS = (128, 1024)
QUESTIONS = ["What is the capital of France? Answer briefly.",
             "List three prime numbers and explain why each is prime.",
             "Write a short poem about the sea.",
             "Which tool would you call to look up the weather in Paris tomorrow, and with what arguments?"]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def child(new_tokens: int, batch: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pact_cotrain.models import resolve_model
    from pact_cotrain.rollout.backends import HFBackend

    base = rss_bytes()
    path = resolve_model("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                                             add_generation_prompt=True, tokenize=True, return_dict=False)
               for i in range(batch)]
    prompts = [list(p["input_ids"]) if isinstance(p, dict) else list(p) for p in prompts]
    never = model.config.vocab_size - 1  # an end-of-turn id that is never sampled: every row runs to the cap
    backend = HFBackend(model, eos_token_id=never, pad_token_id=tokenizer.pad_token_id or 0, reuse_cache=False)
    torch.manual_seed(0)
    backend.generate(prompts, max_new_tokens=2, temperature=1.0)  # warm-up: allocator and kernels
    peak_reset = reset_peak()
    before = rss_bytes()
    torch.manual_seed(1)
    started = time.perf_counter()
    turns = backend.generate(prompts, max_new_tokens=new_tokens, temperature=1.0)
    seconds = time.perf_counter() - started
    peak = peak_rss_bytes()
    generated = sum(len(t.token_ids) for t in turns)
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    # K and V of every layer for every fed token (the last sampled token is never fed), fp32
    kv_tokens = sum(len(p) + new_tokens - 1 for p in prompts)
    kv_bytes = 2 * c.num_hidden_layers * c.num_key_value_heads * head_dim * 4 * kv_tokens
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"kv_cache_bytes": kv_bytes, "weight_bytes": weight_bytes,"new_tokens": new_tokens, "batch": batch, "prompt_tokens": [len(p) for p in prompts],
            "generated": generated, "all_rows_full": all(len(t.token_ids) == new_tokens for t in turns),
            "peak_reset": peak_reset, "rss_after_imports": base, "rss_before_turn": before, "peak_rss": peak,
            "peak_rollout_memory": peak - base, "turn_seconds": seconds,
            "seconds_per_token": seconds / max(generated, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (torchrun gives each process one)")
    ap.add_argument("--malloc-mmap-threshold", type=int, default=131072,
                    help="bytes: glibc serves every larger allocation by mmap and returns it on free, so RSS tracks "
                         "live tensors (0: glibc's default, whose threshold rises to the largest block freed, so the "
                         "KV-cache blocks DynamicCache frees as it grows stay resident)")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.batch, args.threads)))
        return
    results = {}
    for n in SETTINGS:
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        if args.malloc_mmap_threshold:
            env["MALLOC_MMAP_THRESHOLD_"] = str(args.malloc_mmap_threshold)
        proc = subprocess.run([sys.executable, __file__, "--child", str(n), "--batch", str(args.batch),
                               "--threads", str(args.threads)], capture_output=True, text=True, env=env)
        if proc.returncode:
            sys.exit(f"the {n}-token run failed:\n{proc.stderr[-3000:]}")
        results[n] = r = json.loads(proc.stdout.strip().splitlines()[-1])
        if not r["peak_reset"]:
            print("note: /proc/self/clear_refs was not writable, so the peak includes model loading")
        print(f"new_tokens_per_turn: {n}  batch: {r['batch']}  prompt_tokens: {r['prompt_tokens']}  "
              f"generated: {r['generated']} (all rows to the cap: {r['all_rows_full']})")
        print(f"  peak_rollout_memory_mib_{n}: {r['peak_rollout_memory'] / 2**20:.1f}  "
              f"(peak RSS {r['peak_rss'] / 2**20:.1f} MiB - RSS after imports {r['rss_after_imports'] / 2**20:.1f} MiB; "
              f"RSS before the turn {r['rss_before_turn'] / 2**20:.1f} MiB)")
        other = r["peak_rollout_memory"] - r["weight_bytes"] - r["kv_cache_bytes"]
        print(f"  of which weights {r['weight_bytes'] / 2**20:.1f} MiB, KV cache at the end {r['kv_cache_bytes'] / 2**20:.1f} "
              f"MiB (computed from the config), the rest {other / 2**20:.1f} MiB")
        print(f"  rollout_ms_per_token_{n}: {1000 * r['seconds_per_token']:.2f}  (turn {r['turn_seconds']:.1f} s, "
              f"{args.threads} thread(s), tokens = rows x new tokens)")
    ratio = results[1024]["peak_rollout_memory"] / results[128]["peak_rollout_memory"]
    print(f"peak_rollout_memory_ratio_1024_vs_128: {ratio:.3f}")


if __name__ == "__main__":
    main()
