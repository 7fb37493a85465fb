"""The demo: SmolLM2-135M-Instruct on toolworld, a fixed number of steps, a model kept at the end.

1. evaluate the base model on held-out toolworld test tasks (greedy);
2. a short SFT format warm-up on toolworld's `warmup` split (configs/demo_warmup.yaml), so rollouts
   can earn reward and PACT's RL term has something to act on; evaluate again, so that the report
   separates what the warm-up taught from what PACT added;
3. PACT on toolworld train tasks for `train.max_steps` steps (configs/demo.yaml), no time budget;
4. evaluate again, save `<out>/final` (model and tokenizer), write report.md and training_curves.png.
"""

from __future__ import annotations

import json
import os
import time

from pact_cotrain.envs.toolworld import generate_tasks
from pact_cotrain.eval.toolworld_eval import evaluate_toolworld
from pact_cotrain.reporting import plot_training_curves, write_demo_report


def _train(cfg, model, tokenizer):
    """build_trainer's progress: a bar with an ETA on a terminal, a line at least every 30 s in a log."""
    from pact_cotrain.recipes.train import build_trainer

    trainer = build_trainer(cfg, model=model, tokenizer=tokenizer)
    started = time.time()
    trainer.train()
    return trainer, time.time() - started


def _evaluate(model, tokenizer, tasks, path, label):
    started = time.time()
    result = evaluate_toolworld(model, tokenizer, tasks, episodes_out=path, progress=label)
    result["seconds"] = time.time() - started
    return result


def _per_task(path: str, key: str) -> list[float]:
    with open(path) as handle:
        return [json.loads(line)["metrics"][key] for line in handle if line.strip()]


def run_demo(out_dir: str = "runs/demo", config: str = "demo", warmup_config: str | None = "demo_warmup",
             overrides=(), warmup_overrides=(), n_eval: int = 32, model=None, tokenizer=None) -> int:
    """`model`/`tokenizer` (tests) replace SmolLM2; `warmup_config=None` skips the warm-up."""
    from pact_cotrain.config import load_config

    os.makedirs(out_dir, exist_ok=True)
    started = time.time()
    cfg = load_config(config, [f"output_dir={out_dir}", *overrides])
    if model is None:
        from pact_cotrain.models import prepare_model
        from pact_cotrain.recipes.common import load_model_and_tokenizer

        prepare_model("smollm2-135m-instruct")
        model, tokenizer = load_model_and_tokenizer(cfg["model"], cfg.get("dtype", "float32"))
    eval_tasks = generate_tasks(n_eval, seed=cfg["seed"] + 1000, split="test")
    print(f"evaluating the base model on {n_eval} held-out toolworld tasks", flush=True)
    before = _evaluate(model, tokenizer, eval_tasks, f"{out_dir}/episodes_before.jsonl", "eval base model")
    print("before:", json.dumps(before), flush=True)

    warmup = None
    if warmup_config:
        wcfg = load_config(warmup_config, [f"output_dir={out_dir}/warmup", *warmup_overrides])
        print(f"format warm-up: {wcfg['train']['max_steps']} SFT steps on toolworld's warm-up split", flush=True)
        wtrainer, wseconds = _train(wcfg, model, tokenizer)
        warmup = {"steps": wtrainer.state.global_step, "planned": wcfg["train"]["max_steps"], "seconds": wseconds}
        warmup["eval"] = _evaluate(model, tokenizer, eval_tasks, f"{out_dir}/episodes_warmup.jsonl", "eval warmed-up model")
        print("after warm-up:", json.dumps(warmup["eval"]), flush=True)

    print(f"PACT: {cfg['train']['max_steps']} steps", flush=True)
    trainer, train_seconds = _train(cfg, model, tokenizer)
    model = trainer.model

    after = _evaluate(model, tokenizer, eval_tasks, f"{out_dir}/episodes_after.jsonl", "eval trained model")
    print("after:", json.dumps(after), flush=True)
    final = os.path.join(out_dir, "final")
    model.save_pretrained(final)
    tokenizer.save_pretrained(final)

    history = trainer.state.log_history
    with open(f"{out_dir}/log_history.json", "w") as handle:
        json.dump(history, handle, indent=1)
    plot_training_curves(history, f"{out_dir}/training_curves.png", title="PACT on toolworld (SmolLM2-135M)")
    write_demo_report(f"{out_dir}/report.md", cfg=cfg, before=before, after=after, history=history,
                      steps_planned=cfg["train"]["max_steps"], steps_done=trainer.state.global_step,
                      train_seconds=train_seconds, total_seconds=time.time() - started, n_eval=n_eval,
                      warmup=warmup, model_dir=final,
                      per_task_f1={when: _per_task(f"{out_dir}/episodes_{when}.jsonl", "solve_f1")
                                   for when in ("before", "warmup", "after") if os.path.exists(f"{out_dir}/episodes_{when}.jsonl")})
    print(f"wrote {out_dir}/report.md and {out_dir}/training_curves.png; model in {final}", flush=True)
    return 0
