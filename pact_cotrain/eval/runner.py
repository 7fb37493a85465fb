"""`pact eval`: run a model on registered benchmarks and write episodes, results and the paper's table.

    run_eval("smollm2-135m-instruct", ["toolworld"], data={}, limit=20, out_dir="runs/eval/base")

writes, under `out_dir`:
  episodes_<bench>.jsonl  one record per episode: the token ids the model saw and sampled, which ones
                          the environment inserted, the decoded conversation, metrics and rewards
                          (what `pact inspect` reads)
  results.json            per-benchmark reported metrics, episode counts, wall time, model, settings
  results.md              the paper's table (FTRL Solve-R / Solve-P / Solve-F1, BFCL per category and
                          its average, ToolHop AC, Avg) in percent, and one section per benchmark run

`compare_runs([dir_a, dir_b, ...])` puts several results.json side by side as one markdown table.

Rollouts are prompt-only: the expert trace is never put in the context.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path
from statistics import mean
from typing import Callable

from pact_cotrain.errors import UserError
from pact_cotrain.progress import Progress
from pact_cotrain.recipes.common import load_model_and_tokenizer, load_tokenizer

# The paper's table, in order. BFCL categories are inserted before "BFCL Avg" from the bfcl benchmark's columns.
PAPER_FTRL = (("Solve-R", "solve_r"), ("Solve-P", "solve_p"), ("Solve-F1", "solve_f1"))
BFCL_AVG_KEYS = ("avg", "average", "overall", "bfcl_avg", "accuracy")
TOOLHOP_AC_KEYS = ("ac", "answer_correct", "answer_correctness", "accuracy")
AVG_PARTS = ("Solve-R", "Solve-P", "Solve-F1", "BFCL Avg", "ToolHop AC")


# ---------------------------------------------------------------------------------------------
# Running


def _token_pieces(tokenizer, ids: list[int]) -> list[str]:
    """Each id decoded on its own (what the inspector colours); joined, they give the decoded text
    except where a multi-byte character is split over tokens."""
    return tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=False) if ids else []


def episode_record(episode, tokenizer, benchmark: str) -> dict:
    from pact_cotrain.rollout.engine import component_token_counts

    return {
        "benchmark": benchmark,
        "task_id": episode.task_id,
        "sample_index": episode.sample_index,
        "stop_reason": episode.stop_reason,
        "reward": episode.reward,
        "step_rewards": episode.step_rewards,
        "metrics": episode.metrics,
        "component_tokens": component_token_counts(episode, tokenizer),
        "n_generated": episode.n_generated,
        "messages": episode.messages,
        "prompt_ids": episode.prompt_ids,
        "completion_ids": episode.completion_ids,
        "completion_tokens": _token_pieces(tokenizer, episode.completion_ids),
        "generated_mask": episode.generated_mask,
        "logprobs": [round(x, 5) for x in episode.logprobs],
        "turn_spans": [list(s) for s in episode.turn_spans],
        "turn_cut": [bool(c) for c in episode.turn_cut],
        "eos_token_id": tokenizer.eos_token_id,
    }


def finished_batches(path: Path, batches: list[list]) -> list[dict]:
    """The records of the leading batches an interrupted evaluation wrote completely to `path` (each
    batch's task ids, in order; a line cut by a kill ends the record), for `run_eval(resume=True)`."""
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]
    done: list[dict] = []
    for batch in batches:
        chunk = records[len(done) : len(done) + len(batch)]
        if [r.get("task_id") for r in chunk] != [t.id for t in batch] or any("turn_cut" not in r for r in chunk):
            break
        done += chunk
    return done


def _jsonable(value):
    return value.item() if hasattr(value, "item") else str(value)


def _model_name(model) -> str:
    if isinstance(model, str):
        return model
    inner = model[0] if isinstance(model, (tuple, list)) else model
    return str(getattr(getattr(inner, "config", None), "_name_or_path", "") or type(inner).__name__)


def spread_subset(tasks: list, limit: int, seed: int = 0) -> list:
    """`limit` tasks spread over the file, deterministic: the file cut into `limit` equal blocks, one task
    drawn from each (jittered systematic sampling). A prefix would cover only the first category of a
    file grouped by category; evenly spaced picks alias with a file whose categories cycle (toolworld
    cycles its 4 scenarios, so every 4th task is always the same scenario); a random pick per block
    does neither."""
    if limit >= len(tasks):
        return list(tasks)
    rng = random.Random(seed)
    bounds = [(i * len(tasks)) // limit for i in range(limit + 1)]
    return [tasks[rng.randrange(lo, hi)] for lo, hi in zip(bounds, bounds[1:])]


def choose_backend(model) -> tuple[str, str]:
    """What `backend="auto"` runs on, and why: vLLM when it is installed and the model is a name or
    directory it can load, else HF generate."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "hf", "vLLM is not installed; it is faster, see the README's vLLM section"
    if not isinstance(model, str):
        return "hf", "the model is an in-memory object; vLLM loads from a name or directory"
    return "vllm", "vLLM is installed; --backend hf to use HF generate"


def _vllm_backend_for(model, tokenizer, vllm_kwargs: dict):
    """A bf16 vLLM engine over the model's checkpoint directory (the same dtype `pact eval` loads HF in)."""
    from pact_cotrain.models import resolve_model
    from pact_cotrain.rollout.vllm_backend import VLLMBackend

    if not isinstance(model, str):
        raise ValueError("backend='vllm' needs the model as a name or directory (or pass a ready backend)")
    kwargs = {"dtype": "bfloat16", **vllm_kwargs}
    return VLLMBackend(resolve_model(model), eos_token_id=tokenizer.eos_token_id, **kwargs)


def _temperature_override(greedy: bool | None, temperature: float | None) -> float | None:
    """None keeps each benchmark's protocol temperature."""
    if greedy:
        return 0.0
    if greedy is False:
        return 1.0 if temperature is None else temperature
    return temperature


def _load_tasks(bench, path: str | None) -> list:
    """The benchmark's tasks; a missing file is the user's to fix, not a traceback."""
    if path is not None and not Path(path).is_file():
        raise UserError(f"--data {bench.name}={path}: no such file; give a JSONL file in {bench.name}'s format")
    try:
        return bench.load(path)
    except FileNotFoundError as exc:
        raise UserError(f"{bench.name}: data file {exc.filename} not found; reinstall pact-cotrain "
                        f"(its data ships in the package) or pass --data {bench.name}=PATH") from None


def _capped(make_env: Callable, max_turns: int) -> Callable:
    """The benchmark's environment factory, with the episode's step limit lowered to max_turns."""
    def make(task):
        env = make_env(task)
        env.max_steps = min(env.max_steps, max_turns)
        return env

    return make


def run_eval(model, benchmarks: list[str], data: dict[str, str] | None = None,
             limit: int | dict[str, int | None] | None = None,
             out_dir: str = "runs/eval", batch_size: int = 16, greedy: bool | None = None,
             model_loader: Callable = load_model_and_tokenizer, *, temperature: float | None = None,
             top_p: float = 1.0, max_new_tokens_per_turn: int | None = None,
             max_completion_tokens: int | None = None, seed: int = 0,
             max_turns: int | dict[str, int] | None = None, device: str | None = None, progress: bool = True,
             backend="hf", vllm_kwargs: dict | None = None, resume: bool = False,
             own: dict | None = None) -> dict:
    """Evaluate `model` (a name/path for `model_loader`, or a ready (model, tokenizer) pair) on each
    named benchmark; write episodes_<bench>.jsonl, results.json and results.md under `out_dir`, and
    return the results dict (the content of results.json).

    Each benchmark runs under its official protocol (`eval.benchmarks.PROTOCOLS`: turns, new tokens
    per turn, completion cap, temperature) unless overridden here: `max_turns` (an int, or
    {benchmark: int}) lowers a benchmark's turn limit, `max_new_tokens_per_turn` and
    `max_completion_tokens` replace its token caps, `greedy=True` forces temperature 0 and
    `greedy=False` samples at `temperature` (default 1). Every deviation is recorded in results.json
    and results.md, with the share of turns cut by a token limit and the share of the benchmark's
    expert traces the caps would cut (`eval.caps`).

    `backend`: "hf" (the model's `generate`), "vllm" (a `VLLMBackend` built from the model's directory,
    bf16, with `vllm_kwargs`; only the tokenizer is loaded here) or a ready generation backend, e.g. a
    trainer's synced vLLM engine (then `model` is a (None, tokenizer) pair).

    `resume=True` (a study's runs): the batches an interrupted evaluation of the same model already wrote
    to episodes_<bench>.jsonl are kept and not run again; every batch keeps its seed (seed + its index),
    so the result is the uninterrupted one's.

    `own`: {name: Benchmark} of a user's own tasks (recipes/own_agent.py), run like the registered ones;
    such a benchmark's `score(episodes, tasks)` puts the reward and per-function rewards in each
    episode's metrics before they are summarised."""
    import torch

    from pact_cotrain.eval.benchmarks import BENCHMARKS, UNCAPPED, eval_settings, protocol_of
    from pact_cotrain.eval.caps import Caps, caps_report, format_caps_report
    from pact_cotrain.rollout.engine import RolloutEngine, SamplingConfig

    data = dict(data or {})
    registry = {**BENCHMARKS, **(own or {})}
    benchmarks = list(benchmarks) + [name for name in (own or {}) if name not in benchmarks]
    unknown = [b for b in list(benchmarks) + list(data) if b not in registry]
    if unknown:
        raise UserError(f"unknown benchmark {', '.join(sorted(set(unknown)))}; "
                        f"choose from {', '.join(sorted(BENCHMARKS))} (--benchmarks a,b)")
    for name, path in data.items():  # before the model loads: a typo should not cost minutes
        if not Path(path).is_file():
            raise UserError(f"--data {name}={path}: no such file; give a JSONL file in {name}'s format")
    # Every benchmark's tasks before the model loads: a missing file should not cost minutes.
    all_tasks = {name: _load_tasks(registry[name], data.get(name)) for name in benchmarks}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    started = time.time()
    chosen_automatically = backend == "auto"
    if chosen_automatically:
        backend, why = choose_backend(model)
        print(f"pact eval: backend {backend} ({why})", flush=True)
    policy = None
    if backend == "vllm":
        tokenizer = model[1] if isinstance(model, (tuple, list)) else load_tokenizer(model)
        try:
            backend = _vllm_backend_for(model, tokenizer, vllm_kwargs or {})
        except Exception as exc:  # noqa: BLE001 - only when vLLM was picked for the user, who is told
            if not chosen_automatically:
                raise
            reason = str(exc).splitlines()[0] if str(exc) else ""
            print(f"pact eval: vLLM did not start ({type(exc).__name__}: {reason}); using backend hf instead",
                  flush=True)
            backend = "hf"
    if not isinstance(backend, str) or backend != "hf":
        pass  # vLLM or a ready backend: no HF model in this process
    elif isinstance(model, (tuple, list)):
        policy, tokenizer = model
    else:
        policy, tokenizer = model_loader(model)
    if backend == "hf":
        backend = None  # the engine's HFBackend over `policy`
        if device is None:
            device = "cuda" if torch.cuda.is_available() else None
        if device is not None:
            policy = policy.to(device)
    was_training = policy is not None and policy.training
    if policy is not None:
        policy.eval()
    load_seconds = time.time() - started

    results = {
        "model": _model_name(model),
        "limit": limit,
        "greedy": greedy,
        "batch_size": batch_size,
        "backend": type(backend).__name__ if backend is not None else "HFBackend",
        # The overrides given (None: each benchmark's protocol); what each benchmark ran with is its "settings".
        "sampling": {"temperature": temperature, "top_p": top_p, "max_new_tokens_per_turn": max_new_tokens_per_turn,
                     "max_completion_tokens": max_completion_tokens, "seed": seed, "max_turns_cap": max_turns},
        "load_seconds": load_seconds,
        "benchmarks": {},
    }
    bar = None  # the running benchmark's progress, counted in episodes
    try:
        for name in benchmarks:
            bench = registry[name]
            t0 = time.time()
            tasks = all_tasks[name]
            n_available = len(tasks)
            bench_limit = limit.get(name) if isinstance(limit, dict) else limit
            if bench_limit is not None:
                tasks = spread_subset(tasks, bench_limit)
            cap = max_turns.get(name) if isinstance(max_turns, dict) else max_turns
            settings = eval_settings(bench, cap, max_new_tokens_per_turn, max_completion_tokens,
                                     _temperature_override(greedy, temperature))
            turns = UNCAPPED if settings.max_turns is None else settings.max_turns
            sampling = SamplingConfig(temperature=settings.temperature or 1.0, top_p=top_p, greedy=settings.greedy,
                                      max_turns=turns, max_new_tokens_per_turn=settings.max_new_tokens_per_turn,
                                      max_completion_tokens=settings.max_completion_tokens or UNCAPPED)
            caps = caps_report(tasks, tokenizer, Caps(settings.max_turns, settings.max_new_tokens_per_turn,
                                                      settings.max_completion_tokens))
            print(format_caps_report(name, caps), flush=True)
            engine = RolloutEngine(policy, tokenizer, _capped(bench.make_env, turns), sampling, backend=backend)
            batches = [tasks[i : i + batch_size] for i in range(0, len(tasks), batch_size)]
            bar = Progress(f"eval {name}", total=len(tasks), unit="episode") if progress else None
            on_episode_done = (lambda _episode: bar.advance()) if bar is not None else None
            episodes_path = out / f"episodes_{name}.jsonl"
            per_episode, stops, generated, n_turns, n_cut = [], Counter(), 0, 0, 0
            kept = finished_batches(episodes_path, batches) if resume else []
            if kept:
                print(f"eval {name}: resuming after {len(kept)} episodes already written", flush=True)
            with open(episodes_path, "w") as handle:
                for record in kept:  # an interrupted run's finished batches, counted as if just run
                    per_episode.append(record["metrics"])
                    stops[record["stop_reason"]] += 1
                    generated += record["n_generated"]
                    n_turns += len(record["turn_cut"])
                    n_cut += sum(record["turn_cut"])
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                for index, batch in enumerate(batches):
                    if index * batch_size < len(kept):
                        continue
                    episodes = engine.rollout(batch, k=1, seed=seed + index, on_episode_done=on_episode_done)
                    if getattr(bench, "score", None) is not None:  # a user's own tasks: their reward functions
                        bench.score(episodes, batch)
                    for ep in episodes:
                        per_episode.append(ep.metrics)
                        stops[ep.stop_reason] += 1
                        generated += ep.n_generated
                        n_turns += len(ep.turn_cut)
                        n_cut += sum(ep.turn_cut)
                        record = episode_record(ep, tokenizer, name)
                        handle.write(json.dumps(record, ensure_ascii=False, default=_jsonable) + "\n")
                    handle.flush()
            if bar is not None:
                bar.close()
                bar = None
            summary = {k: float(v) for k, v in bench.summarize(per_episode).items()} if per_episode else {}
            results["benchmarks"][name] = {
                "metrics": summary,
                "columns": list(bench.columns) or list(summary),
                "n_episodes": len(per_episode),
                "n_tasks_available": n_available,
                "data": data.get(name),
                "episodes_file": episodes_path.name,
                "stop_reasons": dict(stops),
                "generated_tokens": generated,
                "wall_seconds": time.time() - t0,
                "max_turns": settings.max_turns,
                "settings": {k: v for k, v in vars(settings).items() if k != "deviations"},
                "protocol": vars(protocol_of(bench)),
                "deviations": settings.deviations,
                "turns": n_turns,
                "turns_cut": n_cut,
                "turns_cut_fraction": n_cut / n_turns if n_turns else 0.0,
                "expert_caps": caps.to_dict(),
                # a user's own tasks are scored by their reward functions, on their own scale: not percent
                "units": "reward" if getattr(bench, "score", None) is not None else "percent",
            }
    finally:
        if bar is not None:
            bar.close()
        if policy is not None:
            policy.train(was_training)

    results["total_seconds"] = time.time() - started
    paper, missing = paper_metrics(results["benchmarks"])
    results["paper"] = {"values": paper, "missing": missing}
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    (out / "results.md").write_text(results_markdown(results))
    return results


# ---------------------------------------------------------------------------------------------
# The paper's table


def _first(metrics: dict, keys: tuple[str, ...]) -> float | None:
    lowered = {k.lower(): v for k, v in metrics.items()}
    return next((float(lowered[k]) for k in keys if k in lowered), None)


def paper_metrics(bench_results: dict) -> tuple[dict[str, float | None], list[str]]:
    """The paper's columns (fractions, None where not evaluated) and the names of the missing ones.

    FTRL: solve_r / solve_p / solve_f1 of the `ftrl` benchmark. BFCL: one column per metric the `bfcl`
    benchmark lists in its columns, and BFCL Avg = its avg/average/overall metric, else the mean of
    its categories. ToolHop AC: the `toolhop` benchmark's ac/answer_correct/accuracy metric. Avg: mean
    of Solve-R, Solve-P, Solve-F1, BFCL Avg and ToolHop AC, only when all five exist."""
    values: dict[str, float | None] = {}
    ftrl = (bench_results.get("ftrl") or {}).get("metrics")
    for label, key in PAPER_FTRL:
        values[label] = _first(ftrl, (key,)) if ftrl else None

    bfcl = bench_results.get("bfcl")
    if bfcl and bfcl.get("metrics"):
        metrics = bfcl["metrics"]
        columns = bfcl.get("columns") or list(metrics)
        categories = [c for c in columns if c.lower() not in BFCL_AVG_KEYS and c in metrics]
        for c in categories:
            values[f"BFCL {bfcl_label(c)}"] = float(metrics[c])
        avg = _first({c: metrics[c] for c in columns if c in metrics}, BFCL_AVG_KEYS)
        values["BFCL Avg"] = avg if avg is not None else (mean(float(metrics[c]) for c in categories)
                                                          if categories else None)
    else:
        values["BFCL Avg"] = None

    toolhop = (bench_results.get("toolhop") or {}).get("metrics")
    ac = _first(toolhop, TOOLHOP_AC_KEYS) if toolhop else None
    if ac is None and toolhop and len(toolhop) == 1:
        ac = float(next(iter(toolhop.values())))
    values["ToolHop AC"] = ac

    missing = [p for p in AVG_PARTS if values.get(p) is None]
    values["Avg"] = None if missing else mean(values[p] for p in AVG_PARTS)
    return values, missing


def bfcl_label(column: str) -> str:
    """`multi_turn_miss_func` -> `MT miss_func`, `multi_turn_base` -> `MT base`, others unchanged."""
    return "MT " + column[len("multi_turn_"):] if column.startswith("multi_turn_") else column


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def shown(res: dict, value: float | None) -> str:
    """A benchmark's metric as its tables show it: percent, or a reward's own scale (own tasks)."""
    if res.get("units") == "reward":
        return "n/a" if value is None else f"{value:.3f}"
    return pct(value)


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: list[str], rows: list[list]) -> list[str]:
    return [_row(header), _row(["---"] * len(header))] + [_row(r) for r in rows]


def results_markdown(results: dict) -> str:
    values, missing = paper_metrics(results["benchmarks"])
    own = [name for name, res in results["benchmarks"].items() if res.get("units") == "reward"]
    lines = [
        f"# Evaluation: {results.get('model')}",
        "",
        "Prompt-only context; each benchmark under its official protocol except where its section lists a "
        f"deviation; limit {results.get('limit') if results.get('limit') is not None else 'none'} tasks per "
        "benchmark. Values in percent"
        + (f", except your own tasks ({', '.join(own)}): their reward functions' means, on their scale." if own
           else "."),
    ]
    header = list(values)
    if len(own) < len(results["benchmarks"]):  # only your own tasks: no all-n/a paper table
        lines += ["", "## Paper metrics", ""]
        lines += _table(header, [[pct(values[h]) for h in header]])
        lines.append("")
        if missing:
            lines.append(f"Avg: n/a (missing {', '.join(missing)}; Avg is the mean of {', '.join(AVG_PARTS)}).")
        else:
            lines.append(f"Avg = mean of {', '.join(AVG_PARTS)}.")
    bfcl_cats = [h for h in header if h.startswith("BFCL ") and h != "BFCL Avg"]
    if bfcl_cats:
        lines.append(f"BFCL Avg is over the categories evaluated here: {', '.join(c[5:] for c in bfcl_cats)} "
                     "(the paper averages Multi-Turn, Search and Memory).")
    for name, res in results["benchmarks"].items():
        lines += ["", f"## {name}", "",
                  f"{res['n_episodes']} episodes in {res['wall_seconds']:.1f} s"
                  f"{' from ' + res['data'] if res.get('data') else ''}; stop reasons: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(res.get("stop_reasons", {}).items())) + ".", ""]
        lines += _protocol_lines(res)
        cols = [c for c in res["columns"] if c in res["metrics"]]
        lines += _table(cols, [[shown(res, res["metrics"][c]) for c in cols]])
    return "\n".join(lines) + "\n"


def _limits(d: dict) -> str:
    def cap(v):
        return "none" if v is None else v

    return (f"turns {cap(d.get('max_turns'))}, new tokens/turn {cap(d.get('max_new_tokens_per_turn'))}, "
            f"completion tokens {cap(d.get('max_completion_tokens'))}, temperature {d.get('temperature')}")


def _protocol_lines(res: dict) -> list[str]:
    """What the benchmark ran with against its protocol, the turns cut, and the expert traces the caps cut."""
    from pact_cotrain.eval.caps import describe_caps

    if "settings" not in res:  # results.json written before protocols were recorded
        return []
    protocol = res.get("protocol") or {}
    lines = [f"Protocol ({protocol.get('source', 'unknown')}): {_limits(protocol)}.",
             f"This run: {_limits(res['settings'])}; "
             + (f"lowered or changed: {', '.join(res['deviations'])}." if res.get("deviations")
                else "the protocol as published."),
             f"Turns cut by a token limit: {res.get('turns_cut', 0)} of {res.get('turns', 0)} "
             f"({100 * res.get('turns_cut_fraction', 0.0):.1f}%).",
             f"Expert traces {describe_caps(res['expert_caps'])}." if res.get("expert_caps") else ""]
    return ["- " + line for line in lines if line] + [""]


# ---------------------------------------------------------------------------------------------
# Comparing runs


def _load_results(run: str) -> dict:
    path = Path(run)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise UserError(f"--compare {run}: no {path if path.name == 'results.json' else 'such directory'}; give "
                        f"directories written by `pact eval --out DIR` (each holds results.json)")
    return json.loads(path.read_text())


def compare_runs(run_dirs: list[str], labels: list[str] | None = None) -> str:
    """A markdown table, one row per run (a directory holding results.json, or the file itself): the
    paper's columns evaluated in any run, then every other benchmark's columns (e.g. toolworld),
    in percent (your own tasks: their rewards' scale); '–' where a run lacks a value."""
    runs = [_load_results(r) for r in run_dirs]
    labels = labels or [Path(r).name if Path(r).is_dir() else Path(r).parent.name for r in run_dirs]
    papers = [paper_metrics(r["benchmarks"])[0] for r in runs]
    paper_cols: list[str] = []
    for p in papers:
        paper_cols += [k for k, v in p.items() if v is not None and k not in paper_cols]
    order = [k for p in papers for k in p]
    paper_cols.sort(key=order.index)
    if "Avg" not in paper_cols and any(p.get(x) is not None for p in papers for x in AVG_PARTS):
        paper_cols.append("Avg")  # shown as n/a, so a reader sees it was not computable
    other_cols: list[tuple[str, str]] = []
    for r in runs:
        for name, res in r["benchmarks"].items():
            if name in ("ftrl", "bfcl", "toolhop"):
                continue
            other_cols += [(name, c) for c in res["columns"] if (name, c) not in other_cols]

    header = ["run", "model"] + paper_cols + [f"{b} {c}" for b, c in other_cols]
    rows = []
    for label, r, p in zip(labels, runs, papers):
        row = [label, r.get("model", "")]
        row += [pct(p.get(c)) if c in p else "–" for c in paper_cols]
        for b, c in other_cols:
            res = r["benchmarks"].get(b, {})
            value = res.get("metrics", {}).get(c)
            row.append("–" if value is None else shown(res, value))
        rows.append(row)
    return "\n".join(_table(header, rows)) + "\n"
