"""The `pact` command. Each subcommand parses its arguments here and calls a recipe or component."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _models_prepare(args) -> int:
    from pact_cotrain.models import prepare_model

    prepare_model(args.name)
    return 0


def _models_path(args) -> int:
    from pact_cotrain.models import is_prepared, model_dir

    if not is_prepared(args.name):
        print(f"{args.name} is not prepared; run `pact models prepare {args.name}`", file=sys.stderr)
        return 1
    print(model_dir(args.name))
    return 0


def _data_validate(args) -> int:
    from pact_cotrain.data.validate import validate_file

    try:
        report = validate_file(args.file, max_errors=args.max_errors, max_row_bytes=args.max_row_bytes)
    except OSError as exc:
        print(f"error: {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    for line in report.warning_lines() + report.error_lines():
        print(line, file=sys.stderr)
    print(report.summary())
    return 0 if report.ok else 1


def _data_convert(args) -> int:
    from pact_cotrain.data.convert import ConvertError, convert_file, parse_maps

    try:
        result = convert_file(args.input, args.out, args.format, parse_maps(args.map))
    except ConvertError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(result.summary())
    return 0


def _data_toolworld(args) -> int:
    from pact_cotrain.data.trace_format import write_tasks
    from pact_cotrain.envs.toolworld import generate_tasks

    tasks = generate_tasks(args.n, seed=args.seed, split=args.split)
    write_tasks(args.out, tasks)
    print(f"wrote {len(tasks)} toolworld {args.split} tasks to {args.out}")
    return 0


def _data_traces(args) -> int:
    if args.bench == "collect":
        from pact_cotrain.recipes.collect_traces import run_collect

        return run_collect(args)
    from pact_cotrain.recipes.traces import run_traces

    run_traces(args.bench, args.out, path=args.data)
    return 0


def _own_agent_flags(args) -> dict | None:
    """The own-agent flags given (--config, --env, --tools, --reward-funcs), or None when none is."""
    if not (args.config or args.env or args.tools or getattr(args, "reward_funcs", None)):
        return None
    reward_funcs = getattr(args, "reward_funcs", None)
    return {"config": args.config, "env": args.env, "tools": args.tools,
            "reward_funcs": [f for f in reward_funcs.split(",") if f] if reward_funcs else None}


def _tools_call(args) -> int:
    from pact_cotrain.recipes import tools_call

    own = _own_agent_flags(args)
    if own is not None:
        return tools_call.run_own_tools_call(own, args.id, args.tool, args.args)
    if not args.bench or not args.id:
        from pact_cotrain.errors import UserError

        raise UserError("pact tools call needs --bench BENCH --id ROW, or --config F (or --env / --tools MODULE:ATTR)")
    return tools_call.run_tools_call(args.bench, args.data, args.id, args.tool, args.args)


def _tools_list(args) -> int:
    from pact_cotrain.recipes import tools_call

    own = _own_agent_flags(args)
    if own is not None:
        return tools_call.run_own_tools_list(own, args.id)
    if not args.bench or not args.id:
        from pact_cotrain.errors import UserError

        raise UserError("pact tools list needs --bench BENCH --id ROW, or --config F (or --env / --tools MODULE:ATTR)")
    return tools_call.run_tools_list(args.bench, args.data, args.id)


def _rollout(args) -> int:
    from pact_cotrain.recipes.rollout_smoke import run_rollout_smoke

    run_rollout_smoke(model=args.model, n_tasks=args.tasks, k=args.k, seed=args.seed,
                      max_new_tokens=args.max_new_tokens, temperature=args.temperature, show=args.show)
    return 0


def _train(args) -> int:
    from pact_cotrain.recipes.train import run_train

    from pact_cotrain.data.trace_format import TraceFormatError
    from pact_cotrain.errors import UserError

    try:
        return run_train(args.config, args.overrides, resume=args.resume, overwrite=args.overwrite,
                         resume_anyway=args.resume_anyway)
    except (UserError, TraceFormatError) as exc:  # ordinary mistakes and conditions: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)  # a run stopped by a signal: 128 + its number


def _study(args) -> int:
    from pact_cotrain.study.runner import run_one, run_study

    if args.action == "screen":
        from pact_cotrain.errors import UserError
        from pact_cotrain.study.screen import run_screen

        if not args.model or not args.out:
            raise UserError("pact study screen needs --model CKPT (the warm-up checkpoint) and --out FILE")
        run_screen(args.config, args.model, args.out, pool=args.pool, eval_set=args.eval_set)
        return 0
    args.out = args.out or "runs/cpu-study"
    if args.run_one:
        return run_one(args.config, args.out, args.run_one)
    jobs = None
    if args.jobs:
        try:
            jobs = [(job.split(":")[0], int(job.split(":")[1])) for job in args.jobs.split(",")]
        except (IndexError, ValueError):
            from pact_cotrain.errors import UserError

            raise UserError(f"--jobs {args.jobs!r}: a comma list of METHOD:SEED, e.g. pact:1,grpo:0") from None
    code = run_study(args.config, args.out, only=args.only.split(",") if args.only else None,
                     seeds=[int(s) for s in args.seeds.split(",")] if args.seeds else None,
                     workers=args.workers, report_only=args.report, force_caps=args.force_caps, jobs=jobs)
    if args.export:
        from pathlib import Path

        from pact_cotrain.study.export import export_study

        runs = export_study(Path(args.out), Path(args.export))
        print(f"exported the report and {runs} finished runs' outputs to {args.export}")
    return code


def _demo(args) -> int:
    from pact_cotrain.recipes.demo import run_demo

    return run_demo(out_dir=args.out)


def _eval(args) -> int:
    from pact_cotrain.eval.runner import compare_runs, run_eval

    if args.compare:
        print(compare_runs(args.compare))
        return 0
    own = None
    flags = _own_agent_flags(args)
    if args.tasks or flags is not None:  # a user's own task set, in their own environment
        from pact_cotrain.errors import UserError
        from pact_cotrain.recipes.own_agent import own_agent

        if not args.tasks:
            raise UserError("--config / --env / --tools / --reward-funcs evaluate your own tasks: add --tasks FILE")
        flags = flags or {"config": None, "env": None, "tools": None, "reward_funcs": None}
        # Your own tasks have no official protocol to lower: --max-turns is their turn limit (the config's
        # sampling.max_turns otherwise), enforced by the environment too.
        overrides = [] if args.max_turns is None else [f"sampling.max_turns={args.max_turns}"]
        agent = own_agent(flags.pop("config"), overrides, **flags)
        bench = agent.benchmark(args.tasks)
        own = {bench.name: bench}
    if args.benchmarks is None:
        args.benchmarks = "" if own else "toolworld"
    data = {}
    for item in args.data:
        name, _, path = item.partition("=")
        if not path:
            print(f"error: --data expects BENCH=PATH, got {item!r}", file=sys.stderr)
            return 2
        data[name] = path
    run_eval(args.model, [b for b in args.benchmarks.split(",") if b], data=data, limit=args.limit,
             out_dir=args.out, batch_size=args.batch_size, seed=args.seed,
             greedy=False if args.sample else (None if args.temperature is None else args.temperature == 0),
             temperature=args.temperature, max_turns=args.max_turns, max_new_tokens_per_turn=args.max_new_tokens,
             max_completion_tokens=args.max_completion_tokens, backend=args.backend,
             vllm_kwargs={"dtype": args.vllm_dtype, "max_model_len": args.vllm_max_model_len}, own=own)
    print((Path(args.out) / "results.md").read_text())
    return 0


def _diagnose(args) -> int:
    from pact_cotrain.eval.trace_use import TraceUseSettings, run_trace_use

    settings = TraceUseSettings(k=args.k, temperature=args.temperature, max_turns=args.max_turns,
                                max_new_tokens_per_turn=args.max_new_tokens, max_completion_tokens=args.max_completion_tokens,
                                trace_view=args.trace_view, seed=args.seed, tasks_per_batch=args.tasks_per_batch)
    run_trace_use(args.model, args.data, settings, n_tasks=args.n_tasks, out=args.out)
    return 0


def _inspect(args) -> int:
    from pact_cotrain.errors import UserError
    from pact_cotrain.inspect_html import write_inspector

    if not Path(args.episodes).is_file():
        raise UserError(f"{args.episodes} does not exist; `pact eval --out DIR` writes DIR/episodes_<bench>.jsonl")
    if args.tasks and not Path(args.tasks).is_file():
        raise UserError(f"--tasks {args.tasks} does not exist")

    model = tokenizer = tasks = None
    if args.model:
        from pact_cotrain.eval.benchmarks import BENCHMARKS
        from pact_cotrain.recipes.common import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(args.model, "float32")
        tasks = BENCHMARKS[args.bench].load(args.tasks) if args.bench else args.tasks
    path = write_inspector(args.episodes, args.out, model=model, tokenizer=tokenizer, tasks=tasks, limit=args.limit)
    print(f"wrote {path}")
    return 0


def _plan(args) -> int:
    from pact_cotrain.planning.report import format_plan
    from pact_cotrain.planning.run import PlanOptions, make_plan

    options = PlanOptions(gpus=args.gpus, gpu_memory_gb=args.gpu_memory, device=args.device, sharding=args.sharding,
                          throughput_tflops=args.throughput_tflops, calibration=args.calibration, mfu=args.mfu,
                          rollout_shape=args.rollout_shape, chars_per_token=args.chars_per_token)
    print(format_plan(make_plan(args.config, args.overrides, options)))
    return 0


def _train_epilog() -> str:
    from pact_cotrain.config import builtin_configs

    return ("built-in configs: " + ", ".join(builtin_configs()) + "\n\n"
            "examples:\n"
            "  pact train --config pact train.max_steps=20\n"
            "  pact train --config grpo output_dir=runs/grpo train.learning_rate=5e-5\n"
            "  pact train --config sft data.source=file data.path=tasks.jsonl\n"
            "  pact train --config pact --resume        # continue output_dir's latest checkpoint\n\n"
            "Every key and its default: pact_cotrain/configs/base.yaml (method.* are MethodConfig's fields).")


def _own_agent_arguments(p) -> None:
    p.add_argument("--config", default=None, help="a train config whose tools / env / reward_funcs / mcp_servers keys "
                   "give your own agent")
    p.add_argument("--env", default=None, help="MODULE:ATTR of an environment class (overrides the config's env)")
    p.add_argument("--tools", default=None, help="MODULE:ATTR of a list of tool functions (overrides the config's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pact", description="PACT: privileged trace co-training for tool-use agents")
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="prepare packaged pretrained models").add_subparsers(dest="action", required=True)
    p = models.add_parser("prepare", help="build an HF checkpoint from a packaged model (idempotent)")
    p.add_argument("name", nargs="?", default="smollm2-135m-instruct")
    p.set_defaults(func=_models_prepare)
    p = models.add_parser("path", help="print the prepared model's directory")
    p.add_argument("name", nargs="?", default="smollm2-135m-instruct")
    p.set_defaults(func=_models_path)

    data = sub.add_parser("data", help="task and trace files").add_subparsers(dest="action", required=True)
    p = data.add_parser("validate", help="check a task/trace JSONL file; reports every bad row as path:line: field: "
                        "reason and exits 1 on any")
    p.add_argument("file")
    p.add_argument("--max-errors", type=int, default=50, help="bad rows to print (all are counted)")
    p.add_argument("--max-row-bytes", type=int, default=1 << 20, help="largest row accepted, in bytes")
    p.set_defaults(func=_data_validate)
    p = data.add_parser("convert", help="convert OpenAI / Hermes / ShareGPT tool-use data to task/trace JSONL")
    p.add_argument("input", help="a .jsonl, .json or .parquet file, or a saved `datasets` directory")
    p.add_argument("--format", required=True, choices=["openai", "hermes", "sharegpt"])
    p.add_argument("--out", required=True)
    p.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN",
                   help="read FIELD (id, messages, tools, system) from COLUMN, e.g. messages=conversations")
    p.set_defaults(func=_data_convert)
    p = data.add_parser("toolworld", help="write generated toolworld tasks as JSONL")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=["train", "test", "warmup", "ood"], default="train")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_data_toolworld)

    p = data.add_parser("traces", help="build expert traces for a benchmark (FTRL, ToolHop, BFCL multi-turn), "
                        "or `collect` them from a teacher run through your environment")
    p.add_argument("bench", choices=["ftrl", "toolhop", "bfcl", "collect"])
    p.add_argument("--data", default=None, help="benchmark file (default: the file shipped with the package)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_data_traces)
    c = p.add_argument_group("collect: traces from a teacher (pact data traces collect --tasks F --teacher-url URL "
                             "--teacher-model NAME --out F)")
    c.add_argument("--tasks", help="task JSONL to trace")
    c.add_argument("--env", help="MODULE:ATTR of a TRL-style environment factory")
    c.add_argument("--tools", help="MODULE:ATTR of a list of tool functions")
    c.add_argument("--config", help="a config whose env / tools / mcp_servers keys give the tools")
    c.add_argument("--teacher", help="a local teacher model (registry name, directory or Hub id)")
    c.add_argument("--teacher-url", help="an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    c.add_argument("--teacher-model", help="the model name the endpoint serves")
    c.add_argument("--samples", type=int, default=4, help="trajectories per task (the best is kept)")
    c.add_argument("--min-reward", type=float, default=1.0, help="keep a trajectory only at or above this reward")
    c.add_argument("--max-turns", type=int, default=10)
    c.add_argument("--max-new-tokens", type=int, default=1024, help="tokens per teacher turn")
    c.add_argument("--temperature", type=float, default=1.0)
    c.add_argument("--max-retries", type=int, default=3, help="retries of a failed request (the client's backoff)")
    c.add_argument("--concurrency", type=int, default=1, help="tasks in flight at once (endpoint teachers)")
    c.add_argument("--seed", type=int, default=0)

    tools = sub.add_parser("tools", help="dataset tools").add_subparsers(dest="action", required=True)
    p = tools.add_parser("call", help="run one tool exactly as the environment would: a dataset's (sandboxed) "
                                      "or your own (--config / --env / --tools)")
    p.add_argument("--bench", choices=["ftrl", "toolhop"], default=None)
    p.add_argument("--data", default=None, help="benchmark file (default: the file shipped with the package)")
    p.add_argument("--id", default=None, help="row id, e.g. ftrl_test_007 (with --config: a row of its data.path)")
    p.add_argument("--tool", required=True)
    p.add_argument("--args", default="{}", help="JSON object of arguments")
    _own_agent_arguments(p)
    p.set_defaults(func=_tools_call)
    p = tools.add_parser("list", help="print the tools and their parameters: a dataset row's, or your own "
                                      "(--config / --env / --tools)")
    p.add_argument("--bench", choices=["ftrl", "toolhop"], default=None)
    p.add_argument("--data", default=None, help="benchmark file (default: the file shipped with the package)")
    p.add_argument("--id", default=None, help="row id, e.g. ftrl_test_007 (with --config: a row of its data.path)")
    _own_agent_arguments(p)
    p.set_defaults(func=_tools_list)

    p = sub.add_parser("rollout", help="smoke-run the rollout engine on toolworld tasks")
    p.add_argument("--model", default="smollm2-135m-instruct", help="registry name, HF id or directory")
    p.add_argument("--tasks", type=int, default=4)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--show", type=int, default=4, help="episodes to print in full")
    p.set_defaults(func=_rollout)

    p = sub.add_parser("train", help="train with a method config (pact, grpo, sft, chord, ...)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_train_epilog())
    p.add_argument("--config", required=True, help="YAML file or a built-in name (listed below)")
    p.add_argument("--resume", nargs="?", const="latest", default=None, help="checkpoint dir, or latest")
    p.add_argument("--overwrite", action="store_true",
                   help="delete another run's checkpoints and final/ in output_dir, then train from scratch")
    p.add_argument("--resume-anyway", action="store_true",
                   help="resume although the checkpoint was written under another data, method, seed, batch or model")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides of base.yaml's keys, e.g. "
                   "train.max_steps=20 method.anchor_q=0.5 (an unknown key is refused)")
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="evaluate a model on benchmarks, or on your own tasks (--tasks with --config "
                                    "/ --env / --tools); writes results.json/.md and episodes")
    p.add_argument("--model", default="smollm2-135m-instruct", help="registry name, HF id or directory")
    p.add_argument("--benchmarks", default=None, help="comma list: ftrl,toolhop,bfcl,toolworld (default: toolworld, "
                   "or none with --tasks)")
    p.add_argument("--tasks", default=None, help="your own task rows (JSONL, parquet, a dataset folder or id), run in "
                   "the environment --config / --env / --tools gives and scored by its reward functions")
    _own_agent_arguments(p)
    p.add_argument("--reward-funcs", default=None, help="comma list of MODULE:ATTR or built-in names (trace_match, "
                   "answer_match, answer_exact_match); overrides the config's reward_funcs")
    p.add_argument("--data", action="append", default=[], help="BENCH=PATH: another file in that format")
    p.add_argument("--limit", type=int, default=None, help="episodes per benchmark, for a quick pass")
    p.add_argument("--out", default="runs/eval")
    p.add_argument("--batch-size", type=int, default=16)
    # Unless overridden, each benchmark runs under its official protocol (eval/benchmarks.py PROTOCOLS);
    # every override is recorded in results.json / results.md as a deviation.
    p.add_argument("--sample", action="store_true", help="sample (at --temperature, default 1) instead of greedy")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature, 0 = greedy "
                   "(default: the benchmark's protocol)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-turns", type=int, default=None,
                   help="lower each benchmark's turn limit (recorded); with --tasks, your tasks' turn limit")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="new tokens per assistant turn (default: the benchmark's protocol)")
    p.add_argument("--max-completion-tokens", type=int, default=None,
                   help="tokens after the prompt per episode (default: the benchmark's protocol)")
    p.add_argument("--backend", choices=["auto", "hf", "vllm"], default="auto",
                   help="generation backend: auto (vLLM when installed, else HF generate; the choice is "
                        "printed), hf, or vllm")
    # fp32 is what the CPU study evaluates in: greedy decoding in bf16 flips near-ties at this size.
    p.add_argument("--vllm-dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16",
                   help="dtype of the vLLM engine (with --backend vllm)")
    # FTRL and BFCL prompts run to ~4,600 tokens; vLLM refuses a prompt longer than this.
    p.add_argument("--vllm-max-model-len", type=int, default=8192,
                   help="context length of the vLLM engine, prompt and completion (with --backend vllm)")
    p.add_argument("--compare", nargs="+", metavar="RUN_DIR", help="print runs side by side and exit")
    p.set_defaults(func=_eval)

    p = sub.add_parser("inspect", help="a static HTML page of episodes, tokens coloured by component")
    p.add_argument("episodes", help="an episodes_<bench>.jsonl written by pact eval")
    p.add_argument("--out", default="inspect.html")
    p.add_argument("--model", default=None, help="also show log-probs with and without the expert trace")
    p.add_argument("--bench", default=None, help="benchmark whose tasks (with traces) to load for --model")
    p.add_argument("--tasks", default=None, help="task/trace JSONL (or the benchmark's file)")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=_inspect)

    p = sub.add_parser("study", help="matched-compute comparison of methods over seeds (resumable)")
    p.add_argument("action", nargs="?", choices=["screen"], default=None,
                   help="screen: only screen the training pool with --model (success rate per task; writes --out FILE)")
    p.add_argument("--config", default="cpu", help="a study in configs/studies/, or a YAML path")
    p.add_argument("--out", default=None, help="the study's folder (default runs/cpu-study); with screen, the file")
    p.add_argument("--model", default=None, help="screen: the checkpoint that samples (the warm-up's final/)")
    p.add_argument("--pool", default=None, help="screen: a task file to screen (default: the study's toolworld train tasks)")
    p.add_argument("--eval-set", default=None, help="screen: rates only, of this evaluation set (--pool: its file)")
    p.add_argument("--only", default=None, help="comma list of methods to run")
    p.add_argument("--seeds", default=None, help="comma list of seeds to run")
    p.add_argument("--jobs", default=None, help="comma list of METHOD:SEED runs, in this order (instead of --only/--seeds)")
    p.add_argument("--workers", type=int, default=None, help="runs in parallel (default: the study's)")
    p.add_argument("--report", action="store_true", help="only rebuild results.md and curves.png")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="then copy the report and every finished run's small outputs (per-task results, done.json, "
                        "log) to DIR, e.g. results/study-v2 (no weights)")
    p.add_argument("--force-caps", action="store_true",
                   help="start although the caps cut more than 5%% of the expert turns or traces (the report says so)")
    p.add_argument("--run-one", default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=_study)

    p = sub.add_parser("plan", help="tokens, FLOPs, memory per GPU and wall time of a train config, without running it")
    p.add_argument("--config", required=True, help="YAML file or a built-in name (as pact train)")
    p.add_argument("--gpus", type=int, default=1, help="devices (processes), each running prompts_per_step prompts")
    p.add_argument("--gpu-memory", type=float, default=None, help="GB per device (default: the device's)")
    p.add_argument("--device", choices=["h100", "h200", "a100", "cpu"], default="h100",
                   help="peak FLOP/s and HBM bandwidth table (cpu: needs --calibration)")
    p.add_argument("--sharding", choices=["none", "zero2", "zero3", "fsdp"], default=None,
                   help="optimiser/weight sharding (default: zero3 with more than one GPU, else none)")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--throughput-tflops", type=float, default=None,
                      help="achieved training TFLOP/s per device (instead of peak x --mfu)")
    rate.add_argument("--calibration", default=None, help="a JSON of measured rates (benchmarks/plan_validate.py)")
    p.add_argument("--mfu", type=float, default=0.35, help="assumed model FLOPs utilisation of training and prefill")
    p.add_argument("--rollout-shape", choices=["caps", "traces"], default="caps",
                   help="rollout length: every turn at the caps (upper bound), or as long as the expert traces")
    p.add_argument("--chars-per-token", type=float, default=None,
                   help="count tokens as characters / this instead of with the model's local tokenizer")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, as pact train (e.g. model=Qwen/Qwen3-4B)")
    p.set_defaults(func=_plan)

    diagnose = sub.add_parser("diagnose", help="measurements of a checkpoint").add_subparsers(dest="action", required=True)
    p = diagnose.add_parser("trace-use", help="does the model use an expert trace in context? success with h vs "
                            "without (paired per task), KL(pi(.|x) || pi(.|x,h)) per token, groups with reward variance")
    p.add_argument("--model", required=True, help="registry name, HF id or directory")
    p.add_argument("--data", required=True, help="task/trace JSONL (its traced tasks are used)")
    p.add_argument("--n-tasks", type=int, default=None, help="the first N traced tasks")
    p.add_argument("--k", type=int, default=4, help="episodes per task and context")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-turns", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=224, help="new tokens per assistant turn")
    p.add_argument("--max-completion-tokens", type=int, default=1024)
    p.add_argument("--trace-view", default="full", help="full | no_tool_responses | no_reasoning")
    p.add_argument("--tasks-per-batch", type=int, default=4,
                   help="tasks rolled out together (K episodes each, per context); a progress line after each batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the result as JSON here")
    p.set_defaults(func=_diagnose)

    p = sub.add_parser("demo", help="prepare SmolLM2, evaluate, warm up, train PACT on toolworld for a fixed "
                                    "number of steps, evaluate, save runs/demo/final, report")
    p.add_argument("--out", default="runs/demo")
    p.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pact_cotrain.data.trace_format import TraceFormatError
    from pact_cotrain.errors import UserError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UserError, TraceFormatError) as exc:  # ordinary mistakes: one line, no traceback; bugs keep theirs
        print(f"pact {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `pact ... | head` closed the pipe: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
