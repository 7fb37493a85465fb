"""`pact data traces collect`: expert traces from a teacher, a thin layer over
`pact_cotrain.data.trace_collection.collect_traces`.

    pact data traces collect --tasks tasks.jsonl --env my_agent:Env --teacher-url http://127.0.0.1:8000/v1 \
        --teacher-model Qwen/Qwen3-8B --samples 4 --min-reward 1 --out traces.jsonl

The environment is the one training will use: `--env MODULE:ATTR` (a TRL-style environment factory),
`--tools MODULE:ATTR` (a list of functions), `--config F` (its `env`, `tools` and `mcp_servers` keys), or,
with none of them, the environment each row's `benchmark` field names (toolworld by default).
"""

from __future__ import annotations

from pact_cotrain.errors import UserError


def environment_factory(tasks, env: str | None, tools: str | None, config: str | None, max_turns: int):
    """The environment factory the tasks run in (see the module docstring)."""
    if env or tools or config:
        from pact_cotrain.envs.user_env import user_env_factory
        from pact_cotrain.user_code import resolve_object

        spec: dict = {}
        if config:
            from pact_cotrain.config import load_config

            cfg = load_config(config)
            spec = {"environment_factory": resolve_object(cfg["env"]) if cfg.get("env") else None,
                    "tools": resolve_object(cfg["tools"]) if cfg.get("tools") else None,
                    "mcp_servers": cfg.get("mcp_servers") or None}
        if env:
            spec["environment_factory"] = resolve_object(env)
        if tools:
            spec["tools"] = resolve_object(tools)
        return user_env_factory(max_steps=max_turns, **spec)
    from pact_cotrain.recipes.train import check_executable_tools, env_factory_for
    from pact_cotrain.training.methods import MethodConfig

    check_executable_tools(tasks, MethodConfig(name="grpo"))  # rows no built-in environment can run: one line
    return env_factory_for(tasks, max_turns)


def run_collect(args) -> int:
    from pact_cotrain.data.trace_collection import LocalTeacher, OpenAITeacher, collect_traces
    from pact_cotrain.data.trace_format import load_tasks

    if not args.tasks or not args.out:
        raise UserError("pact data traces collect needs --tasks FILE and --out FILE")
    if bool(args.teacher) == bool(args.teacher_url):
        raise UserError("give one teacher: --teacher MODEL (a local model) or --teacher-url URL --teacher-model NAME")
    if args.teacher_url and not args.teacher_model:
        raise UserError("--teacher-url needs --teacher-model NAME (the model the endpoint serves)")
    tasks = load_tasks(args.tasks)
    factory = environment_factory(tasks, args.env, args.tools, args.config, args.max_turns)
    if args.teacher_url:  # checks the endpoint before any task: one line when it cannot be reached
        teacher = OpenAITeacher(args.teacher_url, args.teacher_model, max_turns=args.max_turns,
                                max_tokens=args.max_new_tokens, temperature=args.temperature,
                                max_retries=args.max_retries)
    else:
        from pact_cotrain.recipes.common import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(args.teacher, "float32")
        teacher = LocalTeacher(model, tokenizer, max_turns=args.max_turns, max_new_tokens_per_turn=args.max_new_tokens,
                               temperature=args.temperature, seed=args.seed)
    collect_traces(tasks, factory, teacher, args.out, samples=args.samples, min_reward=args.min_reward,
                   concurrency=args.concurrency)
    return 0
