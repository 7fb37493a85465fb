"""GPU path check: PACT vs GRPO step cost on a randomly initialised Qwen3-0.6B-sized model.

Meant for a lent GPU machine (no internet, no pretrained weights): the model is built from a
`Qwen3Config` with Qwen3-0.6B's shape and random weights, the tokenizer is the in-code BPE of
`pact_cotrain.testing.tiny_tokenizer()`, and trainers are built exactly as `pact train` builds them
(`load_config` + `build_trainer`), weights in bf16, rollouts with HF `generate` (no vLLM there). Four
phases, as in benchmarks/step_cost.py:

1. one rollout batch through the PACT trainer's `_build_batch` (timed: rollout tokens/s; rollouts are
   the same for both methods: prompt-only);
2. forward+backward of GRPO's loss (the GRPO trainer's `compute_loss`, prompt-only contexts) and of
   PACT's (anchor_q=0: every prompt trace-conditioned, plus the SFT term) on that same batch, one
   warm-up then `--repeats` timed iterations each, with peak GPU memory per variant;
3. peak GPU memory of PACT's forward+backward on that batch through the trainer's micro-batched
   `training_step`, at 1, 2 and 4 micro-batches (`train.micro_batch_tokens` = the smallest budget
   that packs the step into n parts, about its forward tokens / n; the parts made are reported);
4. `--steps` real `trainer.train()` steps for each of GRPO and PACT (fresh model, same seed), skipped
   when the estimate would overrun `--deadline` seconds.

The last lines are a summary, one number a line (`name: value`); the same numbers are in the JSON's
"summary".

Random weights sample garbage that almost never contains the end-of-turn token, so each episode
usually runs one turn to `--max-new-tokens` and stops there (the engine ends an episode on a turn
that hits its limit); the tokens actually processed are reported.

    python benchmarks/gpu_step.py                    # on the GPU machine (see benchmarks/gpu_check.sh)
    OMP_NUM_THREADS=1 python benchmarks/gpu_step.py --tiny --prompts 2 --k 2 --steps 2 \
        --max-new-tokens 16 --max-turns 2 --repeats 1       # CPU smoke test

Writes the printed numbers as JSON to $OUT/gpu_step.json when OUT is set (after every phase, so a
run stopped by a timeout still leaves what it measured).
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import platform
import statistics
import sys
import time

import torch

QWEN3_06B = dict(hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                 head_dim=128, intermediate_size=3072, vocab_size=151936)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, intermediate_size=128, vocab_size=512)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="a tiny model, for a CPU smoke test")
    ap.add_argument("--prompts", type=int, default=4, help="distinct prompts per step")
    ap.add_argument("--k", type=int, default=8, help="rollouts per prompt")
    ap.add_argument("--steps", type=int, default=3, help="real trainer.train() steps per method (0: skip)")
    ap.add_argument("--max-new-tokens", type=int, default=128, help="sampled tokens per assistant turn")
    ap.add_argument("--max-turns", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3, help="timed forward+backward iterations per variant")
    ap.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"],
                    help="weights; auto: bfloat16 on CUDA, float32 on CPU")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--micro-batches", type=int, nargs="+", default=[1, 2, 4],
                    help="micro-batch counts for the peak-memory phase (0 values: skip it)")
    ap.add_argument("--deadline", type=float, default=400.0,
                    help="seconds since start after which the real-steps phase is skipped (gpu_check.sh stops "
                         "the script at 480 s)")
    return ap.parse_args(argv)


class Report:
    """Collects results, prints as it goes, and rewrites $OUT/gpu_step.json after each phase."""

    def __init__(self):
        self.data: dict = {}
        out = os.environ.get("OUT")
        self.path = os.path.join(out, "gpu_step.json") if out else None

    def flush(self):
        if self.path:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(self.path, "w") as f:
                json.dump(self.data, f, indent=2, default=str)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def gib(n_bytes):
    return round(n_bytes / 2**30, 3)


def build_model(args, tokenizer, device, dtype):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    shape = TINY if args.tiny else QWEN3_06B
    if shape["vocab_size"] < len(tokenizer):
        raise SystemExit(f"model vocab {shape['vocab_size']} < tokenizer vocab {len(tokenizer)}")
    config = Qwen3Config(**shape, tie_word_embeddings=True, rope_theta=1e6, max_position_embeddings=40960,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=None)
    torch.manual_seed(args.seed)
    with torch.device(device):  # random init directly on the GPU: seconds instead of a minute on the CPU
        model = Qwen3ForCausalLM(config)
    model = model.to(dtype)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def config_for(method, args, device, dtype, tag):
    from pact_cotrain.config import load_config

    # Room for environment observations between turns (they count towards the completion budget).
    max_completion = args.max_turns * args.max_new_tokens + (args.max_turns - 1) * 512
    overrides = [
        "train.report_to=[]", "train.disable_tqdm=true", "train.save_steps=0",
        f"output_dir=/tmp/pact-gpu-step/{tag}-{method}", "data.source=toolworld", "data.n_train=64",
        f"train.prompts_per_step={args.prompts}", f"train.k={args.k}", f"train.max_steps={max(args.steps, 1)}",
        f"sampling.max_turns={args.max_turns}", f"sampling.max_new_tokens_per_turn={args.max_new_tokens}",
        f"sampling.max_completion_tokens={max_completion}", f"seed={args.seed}",
    ]
    if device.type == "cuda":
        overrides += [f"dtype={str(dtype).removeprefix('torch.')}", "train.mixed_precision=bf16"]
    if method == "pact":
        overrides.append("method.anchor_q=0.0")
    return load_config(method, overrides)


def token_counts(batch, k, sft: bool):
    """(floor, padded): the floor counts each distinct context once plus every completion / SFT target
    token (what shared-prefix packing computes, padding aside); padded is rows x longest row of the
    packed forward pass (`packed_completion_logps`: one segment per prompt group and per SFT trace,
    short segments sharing a row, `pack_rows`)."""
    from pact_cotrain.training.scoring import pack_rows

    rows = []
    n = len(batch["completions"])
    for g in range(0, n, k):
        members = range(g, g + k)
        # anchor True: prompt-only context (GRPO); False: trace-conditioned (PACT's L_TC)
        ctx = batch["prompt_contexts"][g] if bool(batch["anchor"][g]) else batch["trace_contexts"][g]
        rows.append(len(ctx) + sum(len(batch["completions"][i]) for i in members))
    if sft:
        rows += [len(c) + len(t) for c, t in zip(batch.get("sft_contexts", []), batch.get("sft_targets", []))]
    return sum(rows), len(pack_rows(rows)) * max(rows)


def enable_checkpointing_like_train(trainer) -> bool:
    """Turn on activation checkpointing as `Trainer.train()` does (TRL's GRPOConfig defaults it on), so
    the optimisation phase timed outside train() runs the same forward/backward as the real steps."""
    a = trainer.args
    if not (getattr(a, "activation_checkpointing", False) or a.gradient_checkpointing):
        return False
    kwargs = dict(getattr(a, "activation_checkpointing_kwargs", None) or a.gradient_checkpointing_kwargs or {})
    kwargs.pop("every_n_layers", None), kwargs.pop("offload", None)
    model = trainer.model
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs or None)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs or None)
    return True


def reset_for_peak(model, device) -> None:
    """No gradients held, caches freed and the peak counter reset: a measurement starts from here."""
    model.zero_grad(set_to_none=True)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    sync(device)


def time_variant(name, trainer, batch, repeats, device):
    """One warm-up, then `repeats` timed forward+backward passes of `trainer.compute_loss` on `batch`."""
    model = trainer.model

    def step():
        model.zero_grad(set_to_none=True)
        with trainer.accelerator.autocast():  # what train() wraps the forward in (bf16 on the GPU)
            loss = trainer.compute_loss(model, batch)
        loss.backward()

    model.train()
    reset_for_peak(model, device)
    step()  # warm-up
    sync(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - started)
    peak = gib(torch.cuda.max_memory_allocated()) if device.type == "cuda" else None
    model.zero_grad(set_to_none=True)
    trainer._metrics["train"].clear()  # keep these calls out of any later train() logs
    return {"seconds_min": min(times), "seconds_mean": statistics.mean(times), "seconds_all": times,
            "peak_memory_gib": peak}


def budget_for(items, n: int) -> int:
    """The smallest `micro_batch_tokens` that packs `items` into at most n parts: from ceil(tokens / n)
    (next-fit packing rarely fills every part, so that alone often makes n + 1) up to the whole step."""
    import math

    from pact_cotrain.training import microbatch

    total = microbatch.forward_tokens(items)
    lo, hi = max(math.ceil(total / n), 1), max(total, 1)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(microbatch.pack_by_budget(items, mid)) <= n:
            hi = mid
        else:
            lo = mid + 1
    return lo


def micro_batch_peaks(trainer, batch, counts, device) -> dict:
    """Peak memory and seconds of PACT's forward+backward on `batch` through the trainer's micro-batched
    `training_step` (exact gradient accumulation), split into n parts for each n in `counts`
    (`micro_batch_tokens` = `budget_for`: about the step's tokens / n). The peak holds the weights,
    gradients and activations, what micro-batching bounds; not the optimiser state nor the rollouts'
    KV cache (the rollout phase reports its own peak). `_prepare_inputs` is bypassed so the step does not
    roll out again."""
    from pact_cotrain.training import microbatch

    model = trainer.model
    plan = batch["plan"]
    rows = trainer._scoring_rows(batch, plan)
    items = microbatch.rollout_pieces(batch, trainer.num_generations, *rows) + microbatch.sft_pieces(batch)
    tokens = microbatch.forward_tokens(items)
    trainer._prepare_inputs = lambda inputs: inputs  # the instance's: `batch` is already built
    if not hasattr(trainer, "current_gradient_accumulation_steps"):  # set by Trainer's loop, read by TRL's step
        trainer.current_gradient_accumulation_steps = 1
    out = {"step_forward_tokens": tokens, "by_count": {}}
    try:
        for n in counts:
            budget = budget_for(items, n)
            trainer.micro_batch_tokens = budget
            reset_for_peak(model, device)
            started = time.perf_counter()
            try:
                with trainer.accelerator.autocast():
                    trainer.training_step(model, batch)
            except torch.OutOfMemoryError as err:
                out["by_count"][n] = {"budget": budget, "error": f"out of memory: {err}"[:300]}
                print(f"PACT step at {n} micro-batch(es) (micro_batch_tokens={budget}): OUT OF MEMORY")
                continue
            finally:
                model.zero_grad(set_to_none=True)
            sync(device)
            seconds = time.perf_counter() - started
            parts = int(trainer._metrics["train"]["micro_batches"][-1])
            peak = gib(torch.cuda.max_memory_allocated()) if device.type == "cuda" else None
            out["by_count"][n] = {"budget": budget, "parts": parts, "seconds": seconds, "peak_memory_gib": peak}
            print(f"PACT step at {n} micro-batch(es): micro_batch_tokens={budget} of {tokens} tokens -> {parts} "
                  f"part(s), {seconds:.3f} s fwd+bwd" + (f", peak {peak} GiB" if peak is not None else
                                                        " (peak memory: GPU only)"))
    finally:
        del trainer._prepare_inputs  # back to the class's method
        trainer.micro_batch_tokens = None
        trainer._metrics["train"].clear()
    return out


class StepTimer:
    """Wall time of each optimiser step (rollout + forward/backward + optimiser), GPU synchronised."""

    def __init__(self, device):
        from transformers import TrainerCallback

        timer = self

        class _Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                sync(device)
                timer.started = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                sync(device)
                timer.walls.append(time.perf_counter() - timer.started)

        self.walls: list[float] = []
        self.started = 0.0
        self.callback = _Callback()


def real_steps(method, args, tokenizer, device, dtype):
    from pact_cotrain.recipes.train import build_trainer

    cfg = config_for(method, args, device, dtype, "train")
    model = build_model(args, tokenizer, device, dtype)
    trainer = build_trainer(cfg, model=model, tokenizer=tokenizer)
    timer = StepTimer(device)
    trainer.add_callback(timer.callback)
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # the per-step log dicts: kept in log_history, not printed
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    trainer.train()
    sync(device)
    total = time.perf_counter() - started
    keys = ("loss", "step_time", "rollout_seconds", "rollout_tokens", "rollout_tokens_per_second",
            "forward_tokens_per_second", "reward")
    logs = [{k: h[k] for k in keys if k in h} | {"step": h.get("step")}
            for h in trainer.state.log_history if "loss" in h]
    later = timer.walls[1:] or timer.walls
    result = {"train_seconds": total, "step_wall_seconds": timer.walls,
              "mean_step_wall_after_first": statistics.mean(later) if later else None,
              "peak_memory_gib": gib(torch.cuda.max_memory_allocated()) if device.type == "cuda" else None,
              "logs": logs}
    del trainer, model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main(argv=None):
    args = parse_args(argv)
    report = Report()
    try:
        return run(args, report)
    finally:  # whatever ran, even after an error: the summary lines and the JSON
        summarise(report.data)
        report.flush()
        if report.path:
            print(f"wrote {report.path}")


def run(args, report) -> int:
    started_at = time.perf_counter()
    import transformers

    from pact_cotrain.recipes.train import build_trainer
    from pact_cotrain.testing import tiny_tokenizer
    from pact_cotrain.training.methods import plan_step

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype if args.dtype != "auto" else
                    ("bfloat16" if device.type == "cuda" else "float32"))
    rep = report.data
    rep["args"] = vars(args)

    # ---------------------------------------------------------------- environment and model
    tokenizer = tiny_tokenizer()
    model = build_model(args, tokenizer, device, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    rep["env"] = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "cuda": torch.version.cuda, "threads": torch.get_num_threads(),
    }
    try:
        import trl

        rep["env"]["trl"] = trl.__version__
    except ImportError:
        pass
    rep["model"] = {"shape": "tiny" if args.tiny else "Qwen3-0.6B", "params": n_params, "dtype": str(dtype),
                    "vocab": model.config.vocab_size, "tokenizer_vocab": len(tokenizer),
                    "rope": getattr(model.config, "rope_parameters", None) or getattr(model.config, "rope_theta", None),
                    "attn_implementation": getattr(model.config, "_attn_implementation", None)}
    env = rep["env"]
    print(f"device: {env['device']}  python {env['python']}  torch {env['torch']} (cuda {env['cuda']})  "
          f"transformers {env['transformers']}  trl {env.get('trl')}")
    print(f"model: {rep['model']['shape']}, {n_params / 1e6:.1f}M params, {dtype}, vocab {model.config.vocab_size} "
          f"(tokenizer {len(tokenizer)}), attention {rep['model']['attn_implementation']}, "
          f"rope {rep['model']['rope']}")
    print(f"batch: {args.prompts} prompts x k={args.k}, max {args.max_turns} turns x {args.max_new_tokens} new tokens")
    report.flush()

    # ---------------------------------------------------------------- one rollout batch
    pact = build_trainer(config_for("pact", args, device, dtype, "cost"), model=model, tokenizer=tokenizer)
    grpo = build_trainer(config_for("grpo", args, device, dtype, "cost"), model=model, tokenizer=tokenizer)
    assert pact.model is grpo.model, "both trainers must score with the same weights"
    rep["model"]["activation_checkpointing"] = enable_checkpointing_like_train(pact)
    print(f"activation checkpointing in the timed fwd+bwd (as in train()): {rep['model']['activation_checkpointing']}")
    with torch.no_grad():  # warm-up: CUDA context, kernels, allocator
        warm = torch.tensor([tokenizer.encode("warm up")], device=next(model.parameters()).device)
        model.generate(input_ids=warm, attention_mask=torch.ones_like(warm), max_new_tokens=4, do_sample=True,
                       pad_token_id=tokenizer.pad_token_id)
    rows = [{"task_index": i // args.k} for i in range(args.prompts * args.k)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    started = time.perf_counter()
    batch = pact._build_batch(rows)  # rollouts once, shared by both variants
    sync(device)
    t_rollout = time.perf_counter() - started
    episodes = batch["episodes"]
    generated = sum(ep.n_generated for ep in episodes)
    rep["rollout"] = {
        "seconds": t_rollout, "engine_seconds": batch["rollout_seconds"], "episodes": len(episodes),
        "generated_tokens": generated, "completion_tokens": sum(len(ep.completion_ids) for ep in episodes),
        "generated_tokens_per_second": generated / t_rollout,
        "assistant_turns": sum(len(ep.turn_spans) for ep in episodes),
        "prompt_tokens_mean": statistics.mean(len(ep.prompt_ids) for ep in episodes),
        # The in-code BPE knows little English: contexts take several times the tokens a real Qwen3
        # tokenizer would (about 4 characters a token), which weighs contexts above completions.
        "prompt_chars_per_token": len(tokenizer.decode(episodes[0].prompt_ids)) / len(episodes[0].prompt_ids),
        "stop_reasons": dict(collections.Counter(ep.stop_reason for ep in episodes)),
        "peak_memory_gib": gib(torch.cuda.max_memory_allocated()) if device.type == "cuda" else None,
    }
    r = rep["rollout"]
    print(f"rollouts: {t_rollout:.2f} s, {generated} sampled tokens ({r['completion_tokens']} with environment "
          f"tokens), {r['generated_tokens_per_second']:.0f} sampled tok/s, {r['assistant_turns']} assistant turns "
          f"over {len(episodes)} episodes, stop reasons {r['stop_reasons']}, prompt {r['prompt_tokens_mean']:.0f} "
          f"tokens on average ({r['prompt_chars_per_token']:.2f} characters a token)" + (f", peak {r['peak_memory_gib']} GiB" if r["peak_memory_gib"] is not None else ""))
    report.flush()

    # ---------------------------------------------------------------- optimisation phase, same batch
    grpo_plan = plan_step(grpo.method, 0, max(args.steps, 1))
    grpo_batch = {**batch, "plan": grpo_plan, "anchor": torch.ones_like(batch["anchor"])}
    for key in ("sft_contexts", "sft_targets", "sft_reasoning_mask", "sft_toolcall_mask", "sft_answer_mask"):
        grpo_batch.pop(key, None)  # GRPO has no SFT term (its plan's sft_coef is 0 anyway)
    if batch["plan"].anchor_q != 0.0 or bool(batch["anchor"].any()):
        raise SystemExit(f"PACT batch should be fully trace-conditioned, got plan {batch['plan']}")
    rep["optimisation"] = {}
    for name, trainer, b, sft in (("grpo", grpo, grpo_batch, False), ("pact", pact, batch, True)):
        floor, padded = token_counts(b, args.k, sft)
        try:
            res = time_variant(name, trainer, b, args.repeats, device)
        except torch.OutOfMemoryError as err:  # record it and go on: the other variant may fit
            trainer.model.zero_grad(set_to_none=True)
            gc.collect()
            torch.cuda.empty_cache()
            rep["optimisation"][name] = {"error": f"out of memory: {err}"[:300], "tokens": floor, "padded_tokens": padded}
            print(f"{name.upper():4s} optimisation: OUT OF MEMORY for {floor} tokens ({padded} padded)")
            report.flush()
            continue
        res |= {"tokens": floor, "padded_tokens": padded, "tokens_per_second": floor / res["seconds_min"],
                "sft_target_tokens": sum(len(t) for t in b.get("sft_targets", [])) if sft else 0}
        rep["optimisation"][name] = res
        print(f"{name.upper():4s} optimisation (fwd+bwd): {res['seconds_min']:.3f} s min, {res['seconds_mean']:.3f} s mean "
              f"over {args.repeats}; {floor} tokens ({padded} padded), {res['tokens_per_second']:.0f} tok/s"
              + (f", peak {res['peak_memory_gib']} GiB" if res["peak_memory_gib"] is not None else ""))
        report.flush()
    g, p = rep["optimisation"]["grpo"], rep["optimisation"]["pact"]
    ratios = rep["ratios"] = {"optimisation_tokens_pact_over_grpo": p["tokens"] / g["tokens"]}
    if "seconds_min" in g and "seconds_min" in p:
        ratios["optimisation_time_pact_over_grpo"] = p["seconds_min"] / g["seconds_min"]
        ratios["whole_step_pact_over_grpo"] = (t_rollout + p["seconds_min"]) / (t_rollout + g["seconds_min"])
        print(f"PACT / GRPO optimisation phase: {ratios['optimisation_time_pact_over_grpo']:.2f}x time, "
              f"{ratios['optimisation_tokens_pact_over_grpo']:.2f}x tokens")
        print(f"PACT / GRPO whole step = ({t_rollout:.2f} + {p['seconds_min']:.3f}) / ({t_rollout:.2f} + "
              f"{g['seconds_min']:.3f}) = {ratios['whole_step_pact_over_grpo']:.3f}x")
    report.flush()

    # ---------------------------------------------------------------- peak memory at 1, 2, 4 micro-batches
    counts = [n for n in args.micro_batches if n > 0]
    if counts:
        rep["micro_batches"] = micro_batch_peaks(pact, batch, counts, device)
        report.flush()
    del pact, grpo, batch, grpo_batch, model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # ---------------------------------------------------------------- real training steps
    if args.steps > 0:
        rep["train_steps"] = {}
        # a step ~ the rollout + PACT's fwd+bwd above (x2 for trainer set-up and logging), both methods
        p_seconds = rep["optimisation"]["pact"].get("seconds_min", t_rollout)
        estimate = 2 * 2 * args.steps * (t_rollout + p_seconds)
        for method in ("grpo", "pact"):
            elapsed = time.perf_counter() - started_at
            if elapsed + estimate / 2 > args.deadline:
                rep["train_steps"][method] = {"skipped": f"{elapsed:.0f} s elapsed + ~{estimate / 2:.0f} s > "
                                                         f"--deadline {args.deadline:.0f} s"}
                print(f"{method.upper():4s} train(): skipped ({rep['train_steps'][method]['skipped']})")
                continue
            try:
                res = real_steps(method, args, tokenizer, device, dtype)
            except torch.OutOfMemoryError as err:
                gc.collect()
                torch.cuda.empty_cache()
                rep["train_steps"][method] = {"error": f"out of memory: {err}"[:300]}
                print(f"{method.upper():4s} train(): OUT OF MEMORY")
                report.flush()
                continue
            rep["train_steps"][method] = res
            walls = ", ".join(f"{w:.2f}" for w in res["step_wall_seconds"])
            logged = ", ".join(f"{h.get('step_time', float('nan')):.2f}/{h.get('rollout_seconds', float('nan')):.2f}"
                               for h in res["logs"])
            print(f"{method.upper():4s} train(): {len(res['step_wall_seconds'])} steps in {res['train_seconds']:.2f} s; "
                  f"step wall [{walls}] s, mean after the first {res['mean_step_wall_after_first']:.2f} s; "
                  f"logged step_time/rollout_seconds [{logged}]"
                  + (f"; peak {res['peak_memory_gib']} GiB" if res["peak_memory_gib"] is not None else ""))
            report.flush()
        tg, tp = rep["train_steps"].get("grpo", {}), rep["train_steps"].get("pact", {})
        if tg.get("mean_step_wall_after_first") and tp.get("mean_step_wall_after_first"):
            ratios["train_step_wall_pact_over_grpo"] = tp["mean_step_wall_after_first"] / tg["mean_step_wall_after_first"]
            print(f"PACT / GRPO real step wall (after the first): {ratios['train_step_wall_pact_over_grpo']:.2f}x "
                  "(rollouts differ between the two runs: their lengths vary)")
    return 0


def summarise(rep: dict) -> None:
    """The numbers this check is for, one `name: value` line each (n/a where a phase did not run)."""
    ratios = rep.get("ratios", {})
    summary = {"rollout_tokens_per_second": rep.get("rollout", {}).get("generated_tokens_per_second")}
    for n, res in rep.get("micro_batches", {}).get("by_count", {}).items():
        summary[f"pact_step_peak_memory_gib_{n}_micro_batch{'es' if n != 1 else ''}"] = res.get("peak_memory_gib")
    summary["pact_over_grpo_step_time_same_batch"] = ratios.get("whole_step_pact_over_grpo")
    summary["pact_over_grpo_optimisation_time"] = ratios.get("optimisation_time_pact_over_grpo")
    summary["pact_over_grpo_train_step_wall"] = ratios.get("train_step_wall_pact_over_grpo")
    rep["summary"] = summary
    print("== summary")
    for name, value in summary.items():
        shown = "n/a" if value is None else (f"{value:.3f}" if isinstance(value, float) else value)
        print(f"{name}: {shown}")


if __name__ == "__main__":
    sys.exit(main())
