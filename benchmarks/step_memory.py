"""Peak memory of one PACT step against the step's size, at a fixed micro-batch (`train.micro_batch_tokens`).

Default: SmolLM2-135M-Instruct (`pact models prepare smollm2-135m-instruct` first) at prompts_per_step
2, 4, 8 and 16 with micro_batch_tokens=2000 and sampling.generation_batch_size=2k (both fixed, so
only the number of micro-batches and decoding chunks grows with the step); the last line is
`peak_memory_ratio_16_vs_2: R`. With exact micro-batching the step's peak should barely grow
(target R <= 1.25): what grows is the batch's token lists and per-row tensors, not activations.

Each configuration runs in a fresh subprocess (a process's peak RSS only ever grows, so variants in one
process would hide each other): it builds the trainer, trains `--steps` steps (default 2) and measures
the last (with 2, the optimiser state exists when it starts), from `on_step_begin` to `on_step_end`:
wall seconds, rollout seconds, the step's forward tokens (`tokens`: every distinct context once), the
peak RSS during the step (Linux: VmHWM after resetting it through /proc/self/clear_refs; elsewhere
ru_maxrss, the process's lifetime peak) and that peak above the RSS at the step's start; on a GPU,
torch.cuda.max_memory_allocated instead. Rollouts are seeded: configurations of one step size roll out
the same prompts the same way.

    python benchmarks/step_memory.py                                   # the sweep above (SmolLM2)
    python benchmarks/step_memory.py --sweep 2 4 --budgets 1000 --max-completion-tokens 32   # smaller
    python benchmarks/step_memory.py --model tiny --compare-budgets    # random tiny Llama: unsplit vs
                                                                       # about 1/2 and 1/5 of the step's tokens
    python benchmarks/step_memory.py --compare-budgets --prompts 4 --budgets 4000 1500

No assertion on time or memory: it prints numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch


def _status_kb(field: str) -> int | None:
    """A /proc/self/status memory field (VmHWM: peak RSS, VmRSS: current) in KiB; None off Linux."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _vm_hwm_kb() -> int | None:
    return _status_kb("VmHWM")


def _rss_kb() -> int:
    rss = _status_kb("VmRSS")
    return rss if rss is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak() -> bool:
    """Linux >= 4.0: writing 5 to clear_refs resets VmHWM (the peak RSS) to the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _model(spec: str):
    """(model, tokenizer): `tiny[:hidden:layers]` is a random Llama on the test tokenizer; anything else a
    registry name or model directory."""
    if spec.startswith("tiny"):
        from pact_cotrain.testing import tiny_llama, tiny_tokenizer

        _, *sizes = spec.split(":")
        hidden, layers = (int(sizes[0]), int(sizes[1])) if sizes else (256, 4)
        tokenizer = tiny_tokenizer()
        return tiny_llama(tokenizer, hidden=hidden, layers=layers), tokenizer
    from pact_cotrain.recipes.common import load_model_and_tokenizer

    return load_model_and_tokenizer(spec, "float32")


def run_variant(args) -> dict:
    """One variant in this process: `args.steps` steps, the last measured."""
    from transformers import TrainerCallback

    from pact_cotrain.config import load_config
    from pact_cotrain.recipes.train import build_trainer
    from pact_cotrain.training import microbatch

    model, tokenizer = _model(args.model)
    overrides = [f"train.prompts_per_step={args.prompts}", f"train.k={args.k}", f"train.max_steps={args.steps}",
                 "train.report_to=[]", "train.disable_tqdm=true", "train.save_steps=0", "train.logging_steps=1",
                 f"sampling.max_completion_tokens={args.max_completion_tokens}",
                 f"sampling.max_new_tokens_per_turn={args.max_new_tokens}", "sampling.max_turns=2",
                 f"data.n_train={max(2 * args.prompts, 8)}", f"output_dir={args.output_dir}"]
    if args.budget is not None:
        overrides.append(f"train.micro_batch_tokens={args.budget}")
    if args.generation_batch_size is not None:
        overrides.append(f"sampling.generation_batch_size={args.generation_batch_size}")
    trainer = build_trainer(load_config("pact", overrides + list(args.overrides)), model=model, tokenizer=tokenizer)
    cuda = torch.cuda.is_available()
    out: dict = {}

    class Measure(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if state.global_step != args.steps - 1:
                return
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            out["reset"] = _reset_peak()
            out["rss_start_mb"] = _rss_kb() / 1024
            out["started"] = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            if "started" not in out or "seconds" in out:
                return
            if cuda:
                torch.cuda.synchronize()
                out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
            out["seconds"] = time.perf_counter() - out.pop("started")
            hwm = _vm_hwm_kb() if out["reset"] else None
            peak_kb = hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            out["peak_rss_mb"] = peak_kb / 1024
            out["step_peak_over_start_mb"] = out["peak_rss_mb"] - out["rss_start_mb"]

    trainer.add_callback(Measure())
    trainer.train()
    logs = [h for h in trainer.state.log_history if "rollout_seconds" in h]
    out["rollout_seconds"] = logs[-1]["rollout_seconds"] if logs else float("nan")
    out["micro_batches"] = logs[-1].get("micro_batches", 1.0) if logs else float("nan")
    batch = trainer._buffered_inputs[0]
    rows = trainer._scoring_rows(batch, batch["plan"]) if "anchor" in batch else (None, None)
    items = (microbatch.rollout_pieces(batch, args.k, *rows) if "anchor" in batch else []) + microbatch.sft_pieces(batch)
    out["step_forward_tokens"] = microbatch.forward_tokens(items)
    return out


def _spawn(args, prompts: int, budget: int | None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--model", args.model, "--prompts", str(prompts),
           "--k", str(args.k), "--max-completion-tokens", str(args.max_completion_tokens),
           "--max-new-tokens", str(args.max_new_tokens), "--steps", str(args.steps)]
    if budget is not None:
        cmd += ["--budget", str(budget)]
    if args.generation_batch_size is not None:
        cmd += ["--generation-batch-size", str(args.generation_batch_size)]
    cmd += list(args.overrides)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"variant prompts={prompts} budget={budget} failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _row(label: str, r: dict) -> str:
    memory = f"{r['cuda_peak_mb']:10.1f}" if "cuda_peak_mb" in r else f"{r['peak_rss_mb']:10.1f}"
    return (f"{label:<24} {r['step_forward_tokens']:>8} {int(r['micro_batches']):>6} {memory} "
            f"{r['step_peak_over_start_mb']:12.1f} {r['seconds']:9.2f} {r['rollout_seconds']:9.2f}")


HEADER = (f"{'variant':<24} {'tokens':>8} {'parts':>6} {'peak_MB':>10} {'step_+MB':>12} {'step_s':>9} "
          f"{'rollout_s':>9}\n" + "-" * 85)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct",
                    help="a registry name or model directory, or tiny[:hidden:layers] (random Llama)")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--sweep", type=int, nargs="+", default=[2, 4, 8, 16],
                    help="prompts_per_step values, each at --budgets[0] (the default mode)")
    ap.add_argument("--budgets", type=int, nargs="+", default=None,
                    help="micro_batch_tokens: the sweep's (default 2000), or with --compare-budgets the budgets to "
                         "compare with the unsplit step (default: about a half and a fifth of its tokens)")
    ap.add_argument("--compare-budgets", action="store_true",
                    help="instead of the sweep: one step size (--prompts), unsplit vs each of --budgets")
    ap.add_argument("--prompts", type=int, default=4, help="prompts_per_step with --compare-budgets")
    ap.add_argument("--max-completion-tokens", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--generation-batch-size", type=int, default=None,
                    help="rollouts decoded at once (default in the sweep: 2k, fixed; with --compare-budgets: all)")
    ap.add_argument("--steps", type=int, default=2,
                    help="steps per configuration, the last measured (2: the optimiser state exists when it starts; "
                         "1 halves the time and its peak includes the optimiser state's creation)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--budget", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. train.gradient_checkpointing=false")
    args = ap.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory() as out:
            args.output_dir = out
            result = run_variant(args)
        print(json.dumps(result))
        return

    print(f"model={args.model} k={args.k} max_completion_tokens={args.max_completion_tokens} "
          f"device={'cuda' if torch.cuda.is_available() else 'cpu'} (peak_MB: "
          f"{'torch.cuda.max_memory_allocated' if torch.cuda.is_available() else 'peak RSS during the step'})")
    if not args.compare_budgets:
        budget = args.budgets[0] if args.budgets else 2000
        if args.generation_batch_size is None:  # decoding memory must not grow with the step either
            args.generation_batch_size = 2 * args.k
        print(f"prompts_per_step sweep at micro_batch_tokens={budget}, "
              f"sampling.generation_batch_size={args.generation_batch_size}")
        print(HEADER)
        results = {}
        for prompts in args.sweep:
            results[prompts] = _spawn(args, prompts, budget)
            print(_row(f"prompts={prompts}", results[prompts]), flush=True)
        key = "cuda_peak_mb" if "cuda_peak_mb" in results[args.sweep[0]] else "peak_rss_mb"
        lo, hi = min(args.sweep), max(args.sweep)
        print(f"peak_memory_ratio_{hi}_vs_{lo}: {results[hi][key] / results[lo][key]:.3f}")
        return

    print(f"prompts_per_step={args.prompts}: unsplit vs micro-batched")
    print(HEADER)
    unsplit = _spawn(args, args.prompts, None)
    print(_row("unsplit", unsplit), flush=True)
    budgets = args.budgets
    print(f"(the unsplit step scores {unsplit['step_forward_tokens']} forward tokens)")
    if budgets is None:  # about 2 and 5 parts
        budgets = [max(unsplit["step_forward_tokens"] // 2, 1), max(unsplit["step_forward_tokens"] // 5, 1)]
    for budget in budgets:
        print(_row(f"micro_batch_tokens={budget}", _spawn(args, args.prompts, budget)), flush=True)


if __name__ == "__main__":
    main()
