"""The demo: SmolLM2-135M-Instruct, evaluated on held-out toolworld tasks, trained with PACT on
toolworld train tasks for a CPU-sized budget, evaluated again; writes runs/demo/report.md and a PNG
of the training curves."""

from __future__ import annotations

import json
import os
import time

from transformers import TrainerCallback

from pact_cotrain.envs.toolworld import generate_tasks
from pact_cotrain.eval.toolworld_eval import evaluate_toolworld
from pact_cotrain.models import prepare_model
from pact_cotrain.recipes.common import load_model_and_tokenizer
from pact_cotrain.recipes.train import build_trainer, load_config
from pact_cotrain.reporting import plot_training_curves, write_demo_report


class TimeBudget(TrainerCallback):
    """Stops training once the wall-clock budget is spent (the report says so)."""

    def __init__(self, seconds: float):
        self.seconds, self.started, self.stopped_early = seconds, None, False

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.time()

    def on_step_end(self, args, state, control, **kwargs):
        if time.time() - self.started > self.seconds and state.global_step < state.max_steps:
            control.should_training_stop = True
            self.stopped_early = True


def run_demo(out_dir: str = "runs/demo", minutes: float = 20.0, config: str = "demo", overrides=(),
             n_eval: int = 16) -> int:
    os.makedirs(out_dir, exist_ok=True)
    started = time.time()
    prepare_model("smollm2-135m-instruct")
    cfg = load_config(config, [f"output_dir={out_dir}", *overrides])
    model, tokenizer = load_model_and_tokenizer(cfg["model"], cfg.get("dtype", "float32"))
    eval_tasks = generate_tasks(n_eval, seed=cfg["seed"] + 1000, split="test")

    t0 = time.time()
    before = evaluate_toolworld(model, tokenizer, eval_tasks, episodes_out=f"{out_dir}/episodes_before.jsonl")
    before["seconds"] = time.time() - t0
    print("before:", json.dumps(before))

    trainer = build_trainer(cfg, model=model, tokenizer=tokenizer)
    budget = TimeBudget(minutes * 60)
    trainer.add_callback(budget)
    t0 = time.time()
    trainer.train()
    train_seconds = time.time() - t0

    t0 = time.time()
    after = evaluate_toolworld(model, tokenizer, eval_tasks, episodes_out=f"{out_dir}/episodes_after.jsonl")
    after["seconds"] = time.time() - t0
    print("after:", json.dumps(after))

    history = trainer.state.log_history
    with open(f"{out_dir}/log_history.json", "w") as handle:
        json.dump(history, handle, indent=1)
    plot_training_curves(history, f"{out_dir}/training_curves.png", title="PACT on toolworld (SmolLM2-135M)")
    write_demo_report(f"{out_dir}/report.md", cfg=cfg, before=before, after=after, history=history,
                      steps_done=trainer.state.global_step, train_seconds=train_seconds,
                      total_seconds=time.time() - started, stopped_early=budget.stopped_early, n_eval=n_eval)
    print(f"wrote {out_dir}/report.md and {out_dir}/training_curves.png")
    return 0
