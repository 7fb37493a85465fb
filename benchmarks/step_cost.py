"""Step cost of PACT and OPSD vs GRPO on the SAME rollouts, and shared-prefix packing vs padding.

One batch of rollouts is generated once (timed: every method rolls out the same way, prompt-only);
then, side by side in this process, forward+backward is timed for: GRPO (prompt-only pass), PACT
with every prompt trace-conditioned plus the SFT term, and OPSD (its teacher's no-gradient pass on
[x; h], then the student's prompt-only pass with gradient), each under both scoring layouts (one batched
forward, or one forward per shared-prefix group), and the same PACT rows scored with plain
left/right padding instead of shared-prefix packing. Prints seconds, tokens processed and ratios,
for the optimisation phase alone and for the whole step (rollouts + optimisation).

    python benchmarks/step_cost.py --prompts 2 --k 4 --repeats 2 [--model runs/cpu-study/warmup/final] [key=value ...]
    .venv-vllm/bin/vllm-python benchmarks/step_cost.py ... train.rollout_backend=vllm train.rollout_dtype=bfloat16
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from pact_cotrain.config import load_config
from pact_cotrain.recipes.train import build_trainer
from pact_cotrain.training.scoring import completion_logps


def timed_interleaved(variants: dict, repeats: int) -> dict:
    """Best of `repeats` seconds per variant, running every variant once per round, so that a slow
    spell of the machine (another process's burst) hits all variants rather than the first ones."""
    best = {name: float("inf") for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            started = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--model", default="smollm2-135m-instruct", help="e.g. a warm-up checkpoint that calls tools")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. train.mixed_precision=bf16 "
                                                 "train.rollout_backend=vllm (run that one in .venv-vllm)")
    args = ap.parse_args()
    cfg = load_config("demo", [f"model={args.model}", f"train.prompts_per_step={args.prompts}", f"train.k={args.k}", "train.report_to=[]",
                               "output_dir=/tmp/pact-step-cost", "method.anchor_q=0.0", *args.overrides])
    trainer = build_trainer(cfg)
    trainer.model.train()
    if trainer.args.gradient_checkpointing:  # Trainer.train() turns it on; these steps bypass train()
        trainer.model.gradient_checkpointing_enable(trainer.args.gradient_checkpointing_kwargs)
    rows = [{"task_index": i // args.k} for i in range(args.prompts * args.k)]
    if trainer.rollout_backend == "vllm":
        trainer._build_batch(rows)  # untimed: builds the engine and warms it up
    batch = trainer._build_batch(rows)  # rollouts once, shared by every variant below
    t_rollout = batch["rollout_seconds"]
    pact_plan = batch["plan"]
    grpo_batch = {**batch, "plan": dataclasses.replace(pact_plan, anchor_q=1.0, sft_coef=0.0),
                  "anchor": torch.ones_like(batch["anchor"])}

    opsd_batch = {**batch, "plan": dataclasses.replace(pact_plan, anchor_q=1.0, sft_coef=0.0, opsd=True),
                  "anchor": torch.ones_like(batch["anchor"])}
    opsd_batch.pop("sft_targets", None)

    def step(b):
        trainer.model.zero_grad(set_to_none=True)
        trainer.compute_loss(trainer.model, b).backward()

    def padded_pact():
        trainer.model.zero_grad(set_to_none=True)
        logp, mask, _ = completion_logps(trainer.model, batch["trace_contexts"] + batch["sft_contexts"],
                                         batch["completions"] + batch["sft_targets"], trainer.pad_id)
        (logp * mask).sum().backward()

    gen = sum(len(c) for c in batch["completions"])
    sft = sum(len(t) for t in batch["sft_targets"])
    # Token floors: each distinct context once, plus every completion / target token.
    floor_grpo = sum(len(batch["prompt_contexts"][i]) for i in range(0, len(rows), args.k)) + gen
    floor_pact = sum(len(batch["trace_contexts"][i]) for i in range(0, len(rows), args.k)) + gen + \
        sum(len(c) + len(t) for c, t in zip(batch["sft_contexts"], batch["sft_targets"]))
    padded_tokens = (len(rows) + len(batch["sft_targets"])) * (
        max(map(len, batch["trace_contexts"] + batch["sft_contexts"]))
        + max(map(len, batch["completions"] + batch["sft_targets"])))
    # OPSD: the teacher's [x; h] pass without gradient, then the student's prompt-only pass with it
    floor_opsd = sum(len(batch["trace_contexts"][i]) for i in range(0, len(rows), args.k)) + floor_grpo + gen

    def with_layout(per_group, b):  # the two scoring layouts (`train.forward_per_group`)
        def run():
            trainer.forward_per_group = per_group
            if b["plan"].opsd:  # what `_rl_batch` adds for OPSD: the teacher's log-probs
                b["teacher_logp"] = trainer._old_logps(b, "trace")
            step(b)
        return run

    times = timed_interleaved({("grpo", False): with_layout(False, grpo_batch), ("pact", False): with_layout(False, batch),
                               ("opsd", False): with_layout(False, opsd_batch),
                               ("grpo", True): with_layout(True, grpo_batch), ("pact", True): with_layout(True, batch),
                               ("opsd", True): with_layout(True, opsd_batch),
                               "padded": padded_pact}, args.repeats)
    t_padded = times["padded"]
    print(f"threads={torch.get_num_threads()} prompts={args.prompts} k={args.k} rollout tokens={gen} sft target tokens={sft}")
    print(f"token floor: GRPO {floor_grpo} (prompt-only contexts), PACT {floor_pact} (trace contexts + SFT) = "
          f"{floor_pact / floor_grpo:.2f}x")
    print(f"token floor: OPSD {floor_opsd} (trace contexts + rollouts without gradient, then GRPO's with it) = "
          f"{floor_opsd / floor_grpo:.2f}x GRPO's")
    for per_group, name in ((False, "one batched forward (rows)"), (True, "one forward per group")):
        t_grpo, t_pact, t_opsd = times["grpo", per_group], times["pact", per_group], times["opsd", per_group]
        print(f"{name:>27}: GRPO {t_grpo:7.2f} s, PACT {t_pact:7.2f} s, PACT / GRPO = {t_pact / t_grpo:.2f}x time "
              f"= {t_pact / t_grpo / (floor_pact / floor_grpo):.2f}x the token floor; OPSD {t_opsd:7.2f} s, "
              f"OPSD / GRPO = {t_opsd / t_grpo:.2f}x")
    print(f"PACT, rows / per group = {times['pact', False] / times['pact', True]:.2f}x; "
          f"GRPO, rows / per group = {times['grpo', False] / times['grpo', True]:.2f}x")
    t_pact = min(times["pact", False], times["pact", True])
    t_grpo = min(times["grpo", False], times["grpo", True])
    print(f"PACT rows with plain padding instead of packing: {t_padded:7.2f} s for {padded_tokens} padded tokens; "
          f"padded / best packed = {t_padded / t_pact:.2f}x")
    print(f"rollouts (the same for both methods): {t_rollout:7.2f} s, {gen} completion tokens "
          f"({sum(len(ep.turn_spans) for ep in batch['episodes'])} assistant turns)")
    print(f"whole step PACT / GRPO, each with its faster layout = ({t_rollout:.2f} + {t_pact:.2f}) / ({t_rollout:.2f} + {t_grpo:.2f}) = "
          f"{(t_rollout + t_pact) / (t_rollout + t_grpo):.2f}x")
    t_opsd = min(times["opsd", False], times["opsd", True])
    print(f"whole step OPSD / GRPO, each with its faster layout = ({t_rollout:.2f} + {t_opsd:.2f}) / ({t_rollout:.2f} + {t_grpo:.2f}) = "
          f"{(t_rollout + t_opsd) / (t_rollout + t_grpo):.2f}x")


if __name__ == "__main__":
    main()
