"""Phased training: a config whose `phases:` list names train configs run one after another, each
phase starting from the previous phase's final checkpoint (e.g. SFT, then RL from the SFT model).

    output_dir: runs/sft_then_matchtir
    phases:
      - {name: sft, config: sft, stop: {epochs: 1}}     # stopping rule: passes over the expert traces
      - {name: rl, config: matchtir}                    # runs train.max_steps steps

Every phase gets the command-line overrides (so a study's shared budget applies to each), then its
own `overrides:`. Stopping rules: `stop: {epochs: E}` sets the phase's `train.max_steps` to
ceil(E * N / (prompts_per_step * P)), N = the tasks with an expert trace (one epoch = every trace once),
P = the processes (each takes prompts_per_step prompts a step);
`stop: {steps: S}` sets it to S; no `stop:` keeps `train.max_steps`. Phase i writes
`<output_dir>/phase<i>_<name>/final`; the last phase's model is also saved to `<output_dir>/final`.
`<output_dir>/phases.json` holds each phase's compute and the total (`compute_summary`), which is
what a matched-compute comparison must count: both phases, not only the RL one.

`train_phase(cfg) -> trainer` trains one phase and writes `<phase output_dir>/final`; `pact study` passes
`train_or_resume`, so a killed run resumes: a finished phase is taken from its last checkpoint, an
unfinished one resumes from its newest.
"""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path


STOP_RULES = ("epochs", "steps")


def read_raw(config: str) -> dict:
    """The config file as written (no base defaults merged)."""
    from pact_cotrain.config import config_text, config_where, parse_yaml

    text = config_text(config)  # a path or a built-in; an unknown name is a one-line UserError
    return parse_yaml(text, config_where(config)) or {}  # bad YAML: one line with the file and line


def is_phased(config: str) -> bool:
    return "phases" in read_raw(config)


def compute_summary(log_history: list[dict]) -> dict:
    """Compute of a run from its per-step logs (`train.logging_steps=1`, the default): optimiser
    steps, steps that generated rollouts, sampled rollout tokens, supervised SFT tokens and the tokens
    the training forward passes processed (contexts included; 0 in logs older than that metric). A step
    without rollouts (SFT, or a CHORD step with RL weight 0) counts 0 rollout tokens."""
    steps = [h for h in log_history if "loss" in h]
    return {
        "steps": len(steps),
        "rollout_steps": sum(1 for h in steps if "rollout_tokens" in h),
        "rollout_tokens": int(sum(h.get("rollout_tokens", 0.0) for h in steps)),
        "sft_tokens": int(sum(h.get("sft/n_supervised", 0.0) for h in steps)),
        "forward_tokens": int(sum(h.get("forward_tokens", 0.0) for h in steps)),
    }


def add_summaries(parts: list[dict]) -> dict:
    return {key: sum(p[key] for p in parts) for key in parts[0]} if parts else compute_summary([])


def _stop_steps(phase: dict, cfg: dict, where: str, n_processes: int = 1) -> int | None:
    from pact_cotrain.recipes.train import load_train_tasks

    stop = phase.get("stop") or {}
    unknown = set(stop) - set(STOP_RULES)
    if unknown or len(stop) > 1:
        raise ValueError(f"{where}: stop: use one of {STOP_RULES}, got {sorted(stop)}")
    if "steps" in stop:
        return int(stop["steps"])
    if "epochs" in stop:
        n_traces = sum(1 for t in load_train_tasks(cfg["data"]) if t.trace)
        if n_traces == 0:
            raise ValueError(f"{where}: stop: epochs needs tasks with an expert trace, the data has none")
        return math.ceil(float(stop["epochs"]) * n_traces / (cfg["train"]["prompts_per_step"] * n_processes))
    return None


def train_phase_from_scratch(cfg: dict, model=None, tokenizer=None):
    from pact_cotrain.recipes.train import build_trainer

    trainer = build_trainer(cfg, model=model, tokenizer=tokenizer)
    trainer.train()
    trainer.save_model(str(Path(cfg["output_dir"]) / "final"))
    return trainer


def run_phased(config: str, overrides: list[str] = (), model=None, tokenizer=None, train_phase=None):
    """Run every phase of `config`; returns (last trainer, concatenated log history, phases.json dict).
    `model`/`tokenizer` (tests): phase 0 starts from them and later phases continue with the same
    in-memory model; otherwise phase i > 0 loads phase i-1's saved final checkpoint.
    `train_phase(cfg)`: trains a phase and saves its final/ (default: from scratch)."""
    from accelerate import PartialState

    from pact_cotrain.config import load_config
    from pact_cotrain.recipes.train import save_final_from_checkpoint
    from pact_cotrain.training import step_prompts

    if train_phase is None:
        train_phase = partial(train_phase_from_scratch, model=model, tokenizer=tokenizer)

    raw = read_raw(config)
    phases = raw.get("phases")
    if not isinstance(phases, list) or not phases:
        raise ValueError(f"{config}: phases: expected a non-empty list of {{name, config, stop}}")
    top = load_config(config, list(overrides))
    out = Path(top["output_dir"])
    history: list[dict] = []
    report: dict = {"config": config, "phases": []}
    previous, trainer = None, None
    for i, phase in enumerate(phases):
        where = f"{config}: phases[{i}]"
        if not isinstance(phase, dict) or "config" not in phase:
            raise ValueError(f"{where}: expected a mapping with a `config` key")
        name = phase.get("name", f"phase{i}")
        phase_dir = out / f"phase{i}_{name}"
        extra = list(overrides) + [f"{k}={json.dumps(v)}" for k, v in (phase.get("overrides") or {}).items()]
        extra.append(f"output_dir={phase_dir}")
        if previous is not None and model is None:
            extra.append(f"model={previous}")
        cfg = load_config(phase["config"], extra)
        step_prompts.resolve(cfg, PartialState().num_processes)  # each process's share of a global count
        steps = _stop_steps(phase, cfg, where, PartialState().num_processes)
        if steps is not None:
            cfg["train"]["max_steps"] = steps
        trainer = train_phase(cfg)
        previous = str(phase_dir / "final")
        offset = history[-1]["step"] if history and "step" in history[-1] else 0
        logs = [dict(h, step=h.get("step", 0) + offset, phase=name) for h in trainer.state.log_history]
        history += logs
        report["phases"].append({"name": name, "config": phase["config"], "stop": phase.get("stop"),
                                 "checkpoint": previous, "compute": compute_summary(logs)})
        if i < len(phases) - 1:
            trainer.close_rollout_engine()
        print(f"phase {i} ({name}): {report['phases'][-1]['compute']}", flush=True)
    report["total"] = add_summaries([p["compute"] for p in report["phases"]])
    # the last phase's saved weights, not the trainer's model: a phase finished before a kill is not
    # trained again, so its resumed trainer holds the phase's starting weights
    if PartialState().is_main_process:
        save_final_from_checkpoint(previous, str(out / "final"))
        (out / "phases.json").write_text(json.dumps(report, indent=1))
    PartialState().wait_for_everyone()
    return trainer, history, report
