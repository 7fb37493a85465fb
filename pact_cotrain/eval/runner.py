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
import time
from collections import Counter
from pathlib import Path
from statistics import mean
from typing import Callable

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
        "eos_token_id": tokenizer.eos_token_id,
    }


def _jsonable(value):
    return value.item() if hasattr(value, "item") else str(value)


def _progress():
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("batches"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True))


def _model_name(model) -> str:
    if isinstance(model, str):
        return model
    inner = model[0] if isinstance(model, (tuple, list)) else model
    return str(getattr(getattr(inner, "config", None), "_name_or_path", "") or type(inner).__name__)


def spread_subset(tasks: list, limit: int) -> list:
    """`limit` tasks evenly spaced over the file (files are often grouped by category, so a prefix
    would cover only the first category); deterministic."""
    if limit >= len(tasks):
        return list(tasks)
    return [tasks[(i * len(tasks)) // limit] for i in range(limit)]


def _vllm_backend_for(model, tokenizer, vllm_kwargs: dict):
    """A bf16 vLLM engine over the model's checkpoint directory (the same dtype `pact eval` loads HF in)."""
    from pact_cotrain.models import resolve_model
    from pact_cotrain.rollout.vllm_backend import VLLMBackend

    if not isinstance(model, str):
        raise ValueError("backend='vllm' needs the model as a name or directory (or pass a ready backend)")
    kwargs = {"dtype": "bfloat16", **vllm_kwargs}
    return VLLMBackend(resolve_model(model), eos_token_id=tokenizer.eos_token_id, **kwargs)


def _capped(make_env: Callable, max_turns: int) -> Callable:
    """The benchmark's environment factory, with the episode's step limit lowered to max_turns."""
    def make(task):
        env = make_env(task)
        env.max_steps = min(env.max_steps, max_turns)
        return env

    return make


def run_eval(model, benchmarks: list[str], data: dict[str, str] | None = None,
             limit: int | dict[str, int | None] | None = None,
             out_dir: str = "runs/eval", batch_size: int = 16, greedy: bool = True,
             model_loader: Callable = load_model_and_tokenizer, *, temperature: float = 1.0, top_p: float = 1.0,
             max_new_tokens_per_turn: int = 256, max_completion_tokens: int = 4096, seed: int = 0,
             max_turns: int | dict[str, int] | None = None, device: str | None = None, progress: bool = True,
             backend="hf", vllm_kwargs: dict | None = None) -> dict:
    """Evaluate `model` (a name/path for `model_loader`, or a ready (model, tokenizer) pair) on each
    named benchmark; write episodes_<bench>.jsonl, results.json and results.md under `out_dir`, and
    return the results dict (the content of results.json). `max_turns` (an int, or
    {benchmark: int}) caps a benchmark's own turn limit: a cheaper deviation from its protocol,
    recorded in results.json.

    `backend`: "hf" (the model's `generate`), "vllm" (a `VLLMBackend` built from the model's directory,
    bf16, with `vllm_kwargs`; only the tokenizer is loaded here) or a ready generation backend, e.g. a
    trainer's synced vLLM engine (then `model` is a (None, tokenizer) pair)."""
    import torch

    from pact_cotrain.eval.benchmarks import BENCHMARKS
    from pact_cotrain.rollout.engine import RolloutEngine, SamplingConfig

    data = dict(data or {})
    unknown = [b for b in list(benchmarks) + list(data) if b not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {sorted(set(unknown))}; known: {sorted(BENCHMARKS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    started = time.time()
    if backend == "vllm":
        policy, tokenizer = None, (model[1] if isinstance(model, (tuple, list)) else load_tokenizer(model))
        backend = _vllm_backend_for(model, tokenizer, vllm_kwargs or {})
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
        "sampling": {"temperature": temperature, "top_p": top_p, "max_new_tokens_per_turn": max_new_tokens_per_turn,
                     "max_completion_tokens": max_completion_tokens, "seed": seed, "max_turns_cap": max_turns},
        "load_seconds": load_seconds,
        "benchmarks": {},
    }
    bar = _progress() if progress else None
    try:
        if bar is not None:
            bar.start()
        for name in benchmarks:
            bench = BENCHMARKS[name]
            t0 = time.time()
            tasks = bench.load(data.get(name))
            n_available = len(tasks)
            bench_limit = limit.get(name) if isinstance(limit, dict) else limit
            if bench_limit is not None:
                tasks = spread_subset(tasks, bench_limit)
            cap = max_turns.get(name) if isinstance(max_turns, dict) else max_turns
            turns = bench.max_turns if cap is None else min(bench.max_turns, cap)
            sampling = SamplingConfig(temperature=temperature, top_p=top_p, greedy=greedy, max_turns=turns,
                                      max_new_tokens_per_turn=max_new_tokens_per_turn,
                                      max_completion_tokens=max_completion_tokens)
            engine = RolloutEngine(policy, tokenizer, _capped(bench.make_env, turns), sampling, backend=backend)
            batches = [tasks[i : i + batch_size] for i in range(0, len(tasks), batch_size)]
            job = bar.add_task(name, total=len(batches)) if bar is not None else None
            episodes_path = out / f"episodes_{name}.jsonl"
            per_episode, stops, generated = [], Counter(), 0
            with open(episodes_path, "w") as handle:
                for index, batch in enumerate(batches):
                    for ep in engine.rollout(batch, k=1, seed=seed + index):
                        per_episode.append(ep.metrics)
                        stops[ep.stop_reason] += 1
                        generated += ep.n_generated
                        record = episode_record(ep, tokenizer, name)
                        handle.write(json.dumps(record, ensure_ascii=False, default=_jsonable) + "\n")
                    handle.flush()
                    if bar is not None:
                        bar.advance(job)
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
                "max_turns": turns,
            }
    finally:
        if bar is not None:
            bar.stop()
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


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: list[str], rows: list[list]) -> list[str]:
    return [_row(header), _row(["---"] * len(header))] + [_row(r) for r in rows]


def results_markdown(results: dict) -> str:
    values, missing = paper_metrics(results["benchmarks"])
    sampling = results.get("sampling", {})
    lines = [
        f"# Evaluation: {results.get('model')}",
        "",
        f"{'Greedy' if results.get('greedy', True) else 'Sampled'} decoding, prompt-only context, "
        f"at most {sampling.get('max_new_tokens_per_turn')} new tokens per turn and "
        f"{sampling.get('max_completion_tokens')} completion tokens per episode; "
        f"limit {results.get('limit') if results.get('limit') is not None else 'none'} tasks per benchmark. "
        f"Values in percent.",
        "",
        "## Paper metrics",
        "",
    ]
    header = list(values)
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
        cols = [c for c in res["columns"] if c in res["metrics"]]
        lines += _table(cols, [[pct(res["metrics"][c]) for c in cols]])
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Comparing runs


def _load_results(run: str) -> dict:
    path = Path(run)
    if path.is_dir():
        path = path / "results.json"
    return json.loads(path.read_text())


def compare_runs(run_dirs: list[str], labels: list[str] | None = None) -> str:
    """A markdown table, one row per run (a directory holding results.json, or the file itself): the
    paper's columns evaluated in any run, then every other benchmark's columns (e.g. toolworld),
    in percent; '–' where a run lacks a value."""
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
            value = r["benchmarks"].get(b, {}).get("metrics", {}).get(c)
            row.append("–" if value is None else pct(value))
        rows.append(row)
    return "\n".join(_table(header, rows)) + "\n"
