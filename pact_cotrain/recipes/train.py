"""`pact train`: a YAML config (plus key=value overrides) -> a PACTTrainer run.

Configs are data: `configs/base.yaml` holds the defaults, a method file (e.g. `configs/pact.yaml`)
overrides some of them, and the command line overrides any key with dotted paths.
"""

from __future__ import annotations

import os
import sys

import torch

from pact_cotrain.config import load_config
from pact_cotrain.data.trace_format import Task
from pact_cotrain.errors import UserError
from pact_cotrain.training.methods import MethodConfig


def load_train_tasks(data: dict, default_tools=None) -> list[Task]:
    """The training rows `data` names: toolworld's generated tasks, or `data.path` (a JSONL or parquet file,
    a dataset folder or a dataset id: data/sources.py). `default_tools(row)` gives the tools of a row
    without a `tools` column (a user's tools, environment or MCP servers)."""
    from pact_cotrain.data.sources import load_task_rows
    from pact_cotrain.training.checkpoints import RunError

    if data["source"] == "toolworld":
        from pact_cotrain.envs.toolworld import generate_tasks

        tasks = generate_tasks(data["n_train"], seed=data.get("toolworld_seed", 0), split=data.get("split", "train"))
    elif data["source"] == "file":  # a missing file (e.g. a paper recipe's trace file not made yet): one line
        tasks = load_task_rows(data.get("path"), split=data.get("split") or "train", default_tools=default_tools)
    else:
        raise ValueError(f"data.source must be toolworld or file, got {data['source']!r}")
    if not tasks:  # training on nothing would "succeed" with the untrained model as final/
        raise RunError(f"no training tasks: data {data.get('path') or data['source']} left 0 tasks")
    return tasks


def check_executable_tools(tasks: list[Task], method: MethodConfig) -> None:
    """A rollout method needs an environment that runs each task's tools. A task runs in the environment
    its `benchmark` field names, toolworld by default, and toolworld executes only the tables a generated
    task carries; without them every call of a converted dataset's row would fail and RL would train on
    error observations. Refused before the model loads; SFT reads only the trace and needs no environment.
    Rows run by a user's own tools (training/api.py `check_tasks`) are not passed here: they need no benchmark."""
    if method.name == "sft":
        return
    stranded = [t.id for t in tasks
                if t.metadata.get("benchmark", "toolworld") == "toolworld" and not t.metadata.get("toolworld_tables")]
    if stranded:
        raise UserError(f"{len(stranded)} of {len(tasks)} training tasks (first: {stranded[0]}) have tools no environment "
                        f"can run: a row runs in the environment its `benchmark` field names (toolworld by default, "
                        f"which runs only generated toolworld tasks; ftrl runs FTRL's tool code). method.name="
                        f"{method.name} rolls out, so its tools must execute: give them (env=MODULE:ATTR, tools=MODULE:ATTR or "
                        f"mcp_servers), or train such rows with --config sft")


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


def _checkpointing_arg(config_cls, enabled: bool) -> dict:
    """Activation checkpointing under the name the installed transformers takes: `activation_checkpointing`
    (5.2x; `gradient_checkpointing` is its deprecated alias and warns), else `gradient_checkpointing`."""
    from dataclasses import fields

    name = "activation_checkpointing" if any(f.name == "activation_checkpointing" for f in fields(config_cls)) \
        else "gradient_checkpointing"
    return {name: enabled}


def user_code(cfg: dict) -> dict:
    """The config's own-agent keys resolved (MODULE:ATTR with the current directory on the import path),
    before anything loads: tools, environment_factory, reward_funcs, mcp_servers."""
    from pact_cotrain.training.api import resolve_reward_funcs
    from pact_cotrain.user_code import resolve, resolve_list

    return {"tools": resolve_list(cfg.get("tools"), "tools") or None,
            "environment_factory": resolve(cfg.get("env"), "env"),
            "reward_funcs": resolve_reward_funcs(cfg.get("reward_funcs")),
            "mcp_servers": cfg.get("mcp_servers") or None}


def pact_config(cfg: dict, has_reward_funcs: bool = False):
    """The PACTConfig (TRL's GRPOConfig plus PACT's fields) a config describes."""
    from pact_cotrain.training import precision
    from pact_cotrain.training.api import PACTConfig

    train, sampling, method = cfg["train"], cfg["sampling"], dict(cfg["method"])
    if sampling.get("greedy"):  # K identical rollouts per prompt: every group advantage is 0
        print("warning: sampling.greedy=true: the K rollouts of a prompt are identical, so RL has no signal",
              file=sys.stderr)
    fast_bf16 = precision.bf16_is_fast()
    mixed_precision = precision.resolve_mixed_precision(train.get("mixed_precision"), fast_bf16)
    rollout_dtype = precision.resolve_rollout_dtype(train.get("rollout_dtype"), fast_bf16)
    precision.warn_if_slow_bf16(mixed_precision, rollout_dtype, fast_bf16)
    name, reward, anchor_q = method.pop("name"), method.pop("reward", None), method.pop("anchor_q", None)
    defaults = MethodConfig()
    eps_low, eps_high = method.pop("eps_low", defaults.eps_low), method.pop("eps_high", defaults.eps_high)
    beta = method.pop("beta", defaults.beta)  # TRL's beta: > 0 makes TRL build `ref_model`, the KL reference
    k = train["k"]
    return PACTConfig(
        output_dir=cfg["output_dir"],
        seed=cfg.get("seed", 0),
        data_seed=cfg.get("seed", 0),
        max_steps=train["max_steps"],
        prompts_per_step=train["prompts_per_step"],
        num_generations=k,
        steps_per_generation=1,
        gradient_accumulation_steps=1,
        num_iterations=train.get("num_iterations", 1),
        learning_rate=float(train["learning_rate"]),
        lr_scheduler_type=train.get("lr_scheduler_type", "constant"),
        warmup_steps=train.get("warmup_steps", 0),
        max_grad_norm=train.get("max_grad_norm", 1.0),
        **_checkpointing_arg(PACTConfig, train.get("gradient_checkpointing", True)),  # TRL's default; recompute costs time
        logging_steps=train.get("logging_steps", 1),
        save_strategy="steps" if train.get("save_steps") else "no",
        save_steps=train.get("save_steps") or 500,
        save_total_limit=train.get("save_total_limit"),
        report_to=train.get("report_to") or [],
        beta=beta,
        epsilon=eps_low,
        epsilon_high=eps_high,
        temperature=sampling["temperature"],
        top_p=sampling.get("top_p", 1.0),
        max_completion_length=sampling["max_completion_tokens"],
        max_tool_calling_iterations=sampling["max_turns"] - 1,  # assistant turns = 1 + tool rounds
        max_new_tokens_per_turn=sampling["max_new_tokens_per_turn"],
        greedy_rollouts=bool(sampling.get("greedy")),
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
        # bf16 autocast over fp32 weights: on by `train.mixed_precision: bf16` (or auto where bf16 is
        # native: training/precision.py), or on a GPU when the weights themselves are bf16.
        bf16=mixed_precision == "bf16" or (torch.cuda.is_available() and cfg.get("dtype") == "bfloat16"),
        disable_tqdm=train.get("disable_tqdm", False),
        method=name,
        reward=None if has_reward_funcs else reward,
        anchor_q=anchor_q,
        method_overrides=method,
        reward_weights=cfg.get("reward_weights"),
        mcp_servers=cfg.get("mcp_servers") or None,
        tool_timeout_s=cfg.get("tool_timeout_s", 30.0),
        max_tool_output_chars=cfg.get("max_tool_output_chars", 16384),
        tool_sandbox=cfg.get("tool_sandbox", False),
        rollout_backend=train.get("rollout_backend", "hf"),
        rollout_dtype=rollout_dtype,
        rollout_vllm_kwargs=train.get("vllm"),
        rollout_batch_size=sampling.get("generation_batch_size"),
        micro_batch_tokens=train.get("micro_batch_tokens"),
        forward_per_group=train.get("forward_per_group"),
        context_kl_steps=train.get("context_kl_steps", 10),
    )


def build_trainer(cfg: dict, model=None, tokenizer=None, tasks: list[Task] | None = None):
    """A config -> the public PACTTrainer (training/api.py): its PACTConfig, rows and own-agent keys, with
    every check that needs no model (data, traces, tools, attention) done before the model loads."""
    from pact_cotrain.training.api import check_tasks, default_tools_for, user_factory
    from pact_cotrain.training.trainer import PACTTrainer

    if cfg.get("phases"):  # one trainer per phase: recipes/phased.py (run_train dispatches there)
        raise ValueError("a config with `phases:` is run by recipes.phased.run_phased, not one trainer")
    from pact_cotrain.training import step_prompts

    # one process's share of train.global_prompts_per_step (refused when it does not divide), before the model loads
    step_prompts.resolve(cfg, step_prompts.launched_processes())
    own = user_code(cfg)  # a MODULE:ATTR that does not import fails first
    args = pact_config(cfg, has_reward_funcs=bool(own["reward_funcs"]))
    factory = user_factory(args, own["tools"], own["environment_factory"], own["mcp_servers"])
    # bad data fails before the model loads
    tasks = tasks if tasks is not None else load_train_tasks(cfg["data"], default_tools_for(factory))
    data = cfg["data"]
    # Untraced rows: fine for grpo / pact; refused here for the methods and rewards that read the trace.
    check_tasks(tasks, MethodConfig(**cfg["method"]), bool(own["reward_funcs"]), factory,
                data["path"] if data["source"] == "file" else f"data.source={data['source']}")
    from pact_cotrain.training.step_fill import check_tasks_fill_a_step

    source = data["path"] if data["source"] == "file" else f"data.source={data['source']} (data.n_train={data['n_train']})"
    check_tasks_fill_a_step(len(tasks), cfg["train"]["prompts_per_step"], source)  # 0 steps: before the model loads
    attention = cfg["train"].get("attn_implementation")
    if attention:  # refused before the model loads; the trainer checks the default it ends up with
        from pact_cotrain.training.scoring import check_custom_mask_support

        check_custom_mask_support(attention)
    if model is None:
        from pact_cotrain.recipes.common import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(cfg["model"], cfg.get("dtype", "float32"), attention)
    elif attention:
        model.set_attn_implementation(attention)
    from pact_cotrain.training.prompt_limits import check_prompt_lengths

    tasks = check_prompt_lengths(tasks, tokenizer, model, cfg)  # overlong prompts: before training
    check_tasks_fill_a_step(len(tasks), cfg["train"]["prompts_per_step"], f"{source} after dropping overlong prompts")
    train = cfg["train"]
    peft_config = None
    if train.get("lora"):
        from peft import LoraConfig

        lora = train["lora"]
        peft_config = LoraConfig(r=lora.get("r", 16), lora_alpha=lora.get("alpha", 32),
                                 target_modules=lora.get("target_modules", "all-linear"), task_type="CAUSAL_LM")
    from pact_cotrain.rollout.vllm_defaults import colocate_engine_kwargs
    from pact_cotrain.training.prompt_limits import prompt_budget

    if args.rollout_backend == "vllm":  # colocate defaults that fit beside training (vllm_defaults.py)
        args.rollout_vllm_kwargs = colocate_engine_kwargs(train.get("vllm"), prompt_budget(cfg, model),
                                                          int(cfg["sampling"]["max_completion_tokens"]),
                                                          torch.cuda.is_available())
        args.rollout_batch_size = None  # vLLM schedules its own batch: it gets all of a process's rollouts
    trainer = PACTTrainer(model=model, args=args, train_dataset=tasks, processing_class=tokenizer,
                          reward_funcs=own["reward_funcs"], environment_factory=factory, peft_config=peft_config)
    k = train["k"]
    from transformers.trainer_callback import ProgressCallback

    from pact_cotrain.progress import choose_mode, plain_training_callback

    if choose_mode(sys.stderr) == "plain":  # a log file: plain lines every 30 s instead of a bar
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(plain_training_callback())
    elif not args.disable_tqdm and train.get("progress", "rich") == "rich":
        from trl.trainer.callbacks import RichProgressCallback

        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(RichProgressCallback())
    from pact_cotrain.training.fingerprint import run_fingerprint

    trainer.run_fingerprint = run_fingerprint(cfg)  # recorded in each checkpoint; --resume compares it
    n = trainer.accelerator.num_processes
    if n * train["prompts_per_step"] != train["global_prompts_per_step"]:  # WORLD_SIZE was not accelerate's count
        raise RuntimeError(f"{n} processes, but the step was sized for {step_prompts.launched_processes()} (WORLD_SIZE)")
    if trainer.accelerator.is_main_process:  # the run's first line: the step's prompts, global and per process
        rollouts = None if cfg["method"]["name"] == "sft" else k  # SFT rolls nothing out
        print(f"step: {step_prompts.describe(n, train['prompts_per_step'], rollouts)}", file=sys.stderr, flush=True)
    return trainer


def latest_checkpoint(output_dir: str) -> str | None:
    """The newest complete `checkpoint-N` (incomplete ones and stray names like checkpoint-6.bak skipped)."""
    from pact_cotrain.training.checkpoints import latest_complete

    return latest_complete(output_dir)


def run_train(config: str, overrides: list[str] = (), resume: str | None = None, overwrite: bool = False,
              resume_anyway: bool = False, **build_kwargs) -> int:
    from pact_cotrain.recipes.phased import is_phased, run_phased

    if is_phased(config):  # a `phases:` list: each phase from the previous one's checkpoint
        if resume:
            raise ValueError(f"--resume is not supported for the phased config {config}")
        run_phased(config, list(overrides), **build_kwargs)
        return 0
    from pact_cotrain.training.resume import resume_checkpoint
    from pact_cotrain.training.run_dir import check_writable, claim, run_lock

    cfg = load_config(config, list(overrides))
    out = cfg["output_dir"]
    check_writable(out)  # before any step, not when writing final/
    with run_lock(out):
        claim(out, resume=bool(resume), overwrite=overwrite)
        checkpoint = None
        if resume:
            finished = _finished_step(out)
            if finished is not None and finished >= cfg["train"]["max_steps"]:
                print(f"{out} is finished (step {finished} of {cfg['train']['max_steps']}, final/ complete); "
                      f"nothing to resume")
                return 0
            from pact_cotrain.training import step_prompts

            # the fingerprint compares the step as build_trainer sizes it (global_prompts_per_step resolved)
            step_prompts.resolve(cfg, step_prompts.launched_processes())
            checkpoint = resume_checkpoint(out, resume, cfg, anyway=resume_anyway)  # complete, loadable, same run
            step = _global_step(checkpoint)
            if step >= cfg["train"]["max_steps"]:  # trained to the end; only final/ was not written
                print(f"resuming from {checkpoint}: already at step {step}; writing final/ from it")
                save_final_from_checkpoint(checkpoint, os.path.join(out, "final"))
                return 0
            print(f"resuming from {checkpoint} (step {step})", flush=True)
        trainer = build_trainer(cfg, **build_kwargs)
        trainer.train(resume_from_checkpoint=checkpoint)
        save_final(trainer, os.path.join(out, "final"))
    return 0


def _global_step(checkpoint: str) -> int:
    import json

    with open(os.path.join(checkpoint, "trainer_state.json")) as handle:
        return int(json.load(handle)["global_step"])


def _finished_step(output_dir: str) -> int | None:
    """global_step of a complete final/ (None when final/ is absent or incomplete)."""
    from pact_cotrain.training.checkpoints import missing_files

    final = os.path.join(output_dir, "final")
    if missing_files(final, with_state=False) or not os.path.isfile(os.path.join(final, "trainer_state.json")):
        return None
    return _global_step(final)


def save_final(trainer, path: str) -> None:
    """The trained model (and its trainer_state.json, which says it is finished) as `path`, atomically."""
    import shutil

    from pact_cotrain.training.checkpoints import atomic_write_dir, save_failure

    scratch = os.path.join(os.path.dirname(os.path.abspath(path)), ".staging-final.root")
    try:
        trainer.save_model(scratch)  # every process takes part (sharded weights); the main one writes
    except Exception as exc:
        shutil.rmtree(scratch, ignore_errors=True)
        error = save_failure(exc, "final", os.path.dirname(os.path.abspath(path)))
        if error is not None:
            raise error from exc
        raise
    if trainer.accelerator.is_main_process:
        trainer.state.save_to_json(os.path.join(scratch, "trainer_state.json"))
        atomic_write_dir(path, lambda staging: os.replace(scratch, staging))
    trainer.accelerator.wait_for_everyone()


def save_final_from_checkpoint(checkpoint: str, path: str) -> None:
    import shutil

    from pact_cotrain.training.checkpoints import atomic_write_dir

    state = shutil.ignore_patterns("optimizer.pt", "scheduler.pt", "rng_state*", "sampler_state.pt", "scaler.pt")
    atomic_write_dir(path, lambda staging: shutil.copytree(checkpoint, staging, ignore=state))
