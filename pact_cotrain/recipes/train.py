"""`pact train`: a YAML config (plus key=value overrides) -> a PACTTrainer run.

Configs are data: `configs/base.yaml` holds the defaults, a method file (e.g. `configs/pact.yaml`)
overrides some of them, and the command line overrides any key with dotted paths.
"""

from __future__ import annotations

import copy
import glob
import os
from importlib import resources
from pathlib import Path

import torch
import yaml

from pact_cotrain.data.trace_format import Task, load_tasks
from pact_cotrain.rewards.episode import EpisodeReward
from pact_cotrain.rollout.engine import SamplingConfig
from pact_cotrain.training.methods import MethodConfig


def _builtin(name: str) -> str:
    return resources.files("pact_cotrain").joinpath(f"configs/{name}.yaml").read_text()


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (over or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(config: str, overrides: list[str] = ()) -> dict:
    """Base defaults <- the config file (path or built-in name) <- `a.b=value` overrides (YAML values)."""
    cfg = yaml.safe_load(_builtin("base"))
    text = Path(config).read_text() if os.path.exists(config) else _builtin(config)
    cfg = _merge(cfg, yaml.safe_load(text) or {})
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        node = cfg
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return cfg


def load_train_tasks(data: dict) -> list[Task]:
    if data["source"] == "toolworld":
        from pact_cotrain.envs.toolworld import generate_tasks

        return generate_tasks(data["n_train"], seed=data.get("toolworld_seed", 0), split=data.get("split", "train"))
    if data["source"] == "file":
        return load_tasks(data["path"])
    raise ValueError(f"data.source must be toolworld or file, got {data['source']!r}")


def env_factory_for(tasks: list[Task], max_steps: int):
    """Each task's benchmark picks its environment (toolworld in process; FTRL's tool code in the sandbox)."""
    from pact_cotrain.envs.toolworld import ToolworldEnv

    def make(task: Task):
        bench = task.metadata.get("benchmark", "toolworld")
        if bench == "toolworld":
            return ToolworldEnv(max_steps=max_steps)
        if bench == "ftrl":
            from pact_cotrain.envs.ftrl import FtrlEnv

            return FtrlEnv(max_steps=max_steps)
        raise ValueError(f"task {task.id}: no training environment for benchmark {bench!r} yet")

    return make


def build_trainer(cfg: dict, model=None, tokenizer=None, tasks: list[Task] | None = None):
    from datasets import Dataset
    from trl import GRPOConfig

    from pact_cotrain.training.trainer import PACTTrainer

    if model is None:
        from pact_cotrain.recipes.common import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(cfg["model"], cfg.get("dtype", "float32"))
    tasks = tasks if tasks is not None else load_train_tasks(cfg["data"])
    method = MethodConfig(**cfg["method"])
    sampling = SamplingConfig(**cfg["sampling"])
    train = cfg["train"]
    k = train["k"]
    args = GRPOConfig(
        output_dir=cfg["output_dir"],
        seed=cfg.get("seed", 0),
        data_seed=cfg.get("seed", 0),
        max_steps=train["max_steps"],
        per_device_train_batch_size=train["prompts_per_step"] * k,
        num_generations=k,
        steps_per_generation=1,
        gradient_accumulation_steps=1,
        num_iterations=train.get("num_iterations", 1),
        learning_rate=float(train["learning_rate"]),
        lr_scheduler_type=train.get("lr_scheduler_type", "constant"),
        warmup_steps=train.get("warmup_steps", 0),
        max_grad_norm=train.get("max_grad_norm", 1.0),
        gradient_checkpointing=train.get("gradient_checkpointing", True),  # TRL's default; recompute costs time
        logging_steps=train.get("logging_steps", 1),
        save_strategy="steps" if train.get("save_steps") else "no",
        save_steps=train.get("save_steps") or 500,
        report_to=train.get("report_to") or [],
        beta=0.0,
        epsilon=method.eps_low,
        epsilon_high=method.eps_high,
        temperature=sampling.temperature,
        max_completion_length=sampling.max_completion_tokens,
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
        # bf16 autocast over fp32 weights: on by `train.mixed_precision: bf16` (GPU or CPU; about
        # 1.6x faster fwd+bwd on this CPU), or on a GPU when the weights themselves are bf16.
        bf16=train.get("mixed_precision") == "bf16" or (torch.cuda.is_available() and cfg.get("dtype") == "bfloat16"),
        disable_tqdm=train.get("disable_tqdm", False),
    )
    dataset = Dataset.from_dict({"prompt": [t.id for t in tasks], "task_index": list(range(len(tasks)))})
    peft_config = None
    if train.get("lora"):
        from peft import LoraConfig

        lora = train["lora"]
        peft_config = LoraConfig(r=lora.get("r", 16), lora_alpha=lora.get("alpha", 32),
                                 target_modules=lora.get("target_modules", "all-linear"), task_type="CAUSAL_LM")
    trainer = PACTTrainer(model=model, args=args, tasks=tasks, train_dataset=dataset, processing_class=tokenizer,
                          env_factory=env_factory_for(tasks, sampling.max_turns), method=method, sampling=sampling,
                          reward=EpisodeReward(method.reward), peft_config=peft_config,
                          rollout_dtype=train.get("rollout_dtype"), rollout_backend=train.get("rollout_backend", "hf"),
                          vllm_kwargs=train.get("vllm"), forward_per_group=train.get("forward_per_group"))
    if not args.disable_tqdm and train.get("progress", "rich") == "rich":
        from transformers.trainer_callback import ProgressCallback
        from trl.trainer.callbacks import RichProgressCallback

        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(RichProgressCallback())
    return trainer


def latest_checkpoint(output_dir: str) -> str | None:
    found = sorted(glob.glob(os.path.join(output_dir, "checkpoint-*")), key=lambda p: int(p.rsplit("-", 1)[1]))
    return found[-1] if found else None


def run_train(config: str, overrides: list[str] = (), resume: str | None = None, **build_kwargs) -> int:
    cfg = load_config(config, list(overrides))
    checkpoint = None
    if resume:
        checkpoint = latest_checkpoint(cfg["output_dir"]) if resume == "latest" else resume
        if checkpoint is None:
            raise FileNotFoundError(f"--resume: no checkpoint-* directory in {cfg['output_dir']}")
    trainer = build_trainer(cfg, **build_kwargs)
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(os.path.join(cfg["output_dir"], "final"))
    return 0
