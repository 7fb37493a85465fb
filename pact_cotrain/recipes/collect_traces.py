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


def teacher_setting(args):
    """(tasks, environment factory, reward) for the flags: the user's own agent (`--env`, `--tools`,
    `--config`: `recipes/own_agent.py`, rows read by `data/sources.py`, the config's `reward_funcs` when it
    has some) or, with none of them, the built-in environment of each row's `benchmark`."""
    if args.env or args.tools or args.config:
        from pact_cotrain.recipes.own_agent import own_agent

        agent = own_agent(args.config, [f"sampling.max_turns={args.max_turns}"], env=args.env, tools=args.tools)
        tasks = agent.load_tasks(args.tasks, split=None)
        reward = agent.reward() if agent.reward_funcs else None
        return tasks, agent.factory, reward
    from pact_cotrain.data.sources import load_task_rows
    from pact_cotrain.recipes.train import check_executable_tools, env_factory_for
    from pact_cotrain.training.methods import MethodConfig

    tasks = load_task_rows(args.tasks, split=None)
    check_executable_tools(tasks, MethodConfig(name="grpo"))  # rows no built-in environment can run: one line
    return tasks, env_factory_for(tasks, args.max_turns), None


def run_collect(args) -> int:
    from pact_cotrain.data.trace_collection import LocalTeacher, OpenAITeacher, collect_traces

    if not args.tasks or not args.out:
        raise UserError("pact data traces collect needs --tasks FILE and --out FILE")
    if bool(args.teacher) == bool(args.teacher_url):
        raise UserError("give one teacher: --teacher MODEL (a local model) or --teacher-url URL --teacher-model NAME")
    if args.teacher_url and not args.teacher_model:
        raise UserError("--teacher-url needs --teacher-model NAME (the model the endpoint serves)")
    tasks, factory, reward = teacher_setting(args)
    if args.teacher_url:  # checks the endpoint before any task: one line when it cannot be reached
        teacher = OpenAITeacher(args.teacher_url, args.teacher_model, max_turns=args.max_turns,
                                max_tokens=args.max_new_tokens, temperature=args.temperature,
                                max_retries=args.max_retries, reward=reward)
    else:
        from pact_cotrain.recipes.common import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(args.teacher, "float32")
        teacher = LocalTeacher(model, tokenizer, max_turns=args.max_turns, max_new_tokens_per_turn=args.max_new_tokens,
                               temperature=args.temperature, seed=args.seed, reward=reward)
    collect_traces(tasks, factory, teacher, args.out, samples=args.samples, min_reward=args.min_reward,
                   concurrency=args.concurrency)
    return 0
