"""The study's evaluation: named evaluation sets, one `pact eval` per run over all of them, and each
run's per-task results (`per_task.jsonl.gz`), from which any comparison can be re-bootstrapped.

A study's `eval:` takes one of two forms.

    eval: {benchmarks: [toolworld, ftrl], limit: {toolworld: 32}, max_turns: {toolworld: 4}, ...}

evaluates each benchmark on its default file (FTRL: the study's dev rows). Each set is named after
its benchmark (the CPU study's form).

    eval:
      sets:
        toolworld_test: {benchmark: toolworld, toolworld: {split: test, n: 256, seed: 1000}}
        toolworld_ood: {benchmark: toolworld, toolworld: {split: ood, n: 256, seed: 0}, max_turns: 6}
        ftrl_dev: {benchmark: ftrl, data: ftrl_dev, limit: 4}
      max_turns: 5                       # every set's default (an int, or {benchmark: int})
      max_new_tokens_per_turn: 256       # shared by every set
      max_completion_tokens: 4096

names the sets. A set's tasks: `toolworld: {split, n, seed}` generates toolworld tasks (written once to
OUT/data/eval_<name>.jsonl, so they are fixed; `scenarios`, `hops`, `branches` and `n_distractors` there
override the split's defaults, e.g. the OOD split's tools at the training tasks' depth); `data: ftrl_dev` is the study's FTRL dev rows;
`data: PATH` a task file; neither, the benchmark's default file. `limit` takes an evenly spread
subset; `max_turns` lowers its turn cap. A set runs under its benchmark's protocol and environment,
so two toolworld sets differ only in their tasks and caps.

Every set is evaluated in one `run_eval` call (one engine, one results.json keyed by set name): the
sets are registered, for that call only, as copies of their benchmark under their own names.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
from pathlib import Path

from pact_cotrain.errors import UserError

SET_KEYS = {"benchmark", "toolworld", "data", "limit", "max_turns"}
TOOLWORLD_KNOBS = ("scenarios", "hops", "branches", "n_distractors")
# Per-episode values copied to per_task.jsonl.gz (besides every numeric metric).
EPISODE_FIELDS = ("stop_reason", "n_generated", "reward")


@dataclasses.dataclass(frozen=True)
class EvalSet:
    name: str  # the key of its results in results.json and per_task rows; the benchmark's name in the plain form
    benchmark: str
    data: str | None  # a task file; None: the benchmark's default
    limit: int | None  # an evenly spread subset of this many tasks; None: all
    max_turns: int | None  # None: the protocol's


def _per_benchmark(value, benchmark: str):
    return value.get(benchmark) if isinstance(value, dict) else value


def generated_set_files(study: dict, data_dir: Path) -> dict[str, str]:
    """{set name: OUT/data/eval_<name>.jsonl} for the sets whose toolworld tasks the study generates."""
    sets = study["eval"].get("sets") or {}
    return {name: str(data_dir / f"eval_{name}.jsonl") for name, spec in sets.items() if "toolworld" in (spec or {})}


def write_generated_sets(study: dict, data_dir: Path) -> None:
    """Generate each `toolworld: {split, n, seed}` set once (a file that exists is kept as it is)."""
    from pact_cotrain.data.trace_format import write_tasks
    from pact_cotrain.envs.toolworld import generate_tasks

    for name, path in generated_set_files(study, data_dir).items():
        if Path(path).exists():
            continue
        spec = study["eval"]["sets"][name]["toolworld"]
        # the generator's knobs (scenarios, hops, branches, n_distractors: a value or [lo, hi]); unset: the split's
        knobs = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k in TOOLWORLD_KNOBS}
        tasks = generate_tasks(int(spec["n"]), seed=int(spec.get("seed", 0)), split=spec.get("split", "test"), **knobs)
        write_tasks(path, tasks)
        print(f"data: evaluation set {name}: {len(tasks)} toolworld {spec.get('split', 'test')} tasks", flush=True)


def eval_sets(study: dict, paths: dict) -> list[EvalSet]:
    """The study's evaluation sets, in order. `paths` is what `prepare_data` returned (its `ftrl_dev`
    and the generated sets' files, keyed `eval:<name>`)."""
    from pact_cotrain.eval.benchmarks import BENCHMARKS

    ev = study["eval"]
    if not ev.get("sets"):
        return [EvalSet(b, b, paths.get("ftrl_dev") if b == "ftrl" else None, _per_benchmark(ev.get("limit"), b),
                        _per_benchmark(ev.get("max_turns"), b)) for b in ev["benchmarks"]]
    sets = []
    for name, spec in ev["sets"].items():
        spec = spec or {}
        unknown = set(spec) - SET_KEYS
        if unknown or spec.get("benchmark") not in BENCHMARKS:
            raise UserError(f"eval.sets.{name}: needs benchmark (one of {', '.join(sorted(BENCHMARKS))}) and only "
                            f"{', '.join(sorted(SET_KEYS))}; got {', '.join(sorted(spec)) or 'nothing'}")
        if "toolworld" in spec:
            data = paths[f"eval:{name}"]
        elif spec.get("data") == "ftrl_dev":
            data = paths["ftrl_dev"]
        else:
            data = spec.get("data")
        turns = spec.get("max_turns", _per_benchmark(ev.get("max_turns"), spec["benchmark"]))
        sets.append(EvalSet(name, spec["benchmark"], data, spec.get("limit"), turns))
    return sets


@contextlib.contextmanager
def registered(sets: list[EvalSet]):
    """Each set whose name is not its benchmark's, registered (benchmark and protocol) as a copy of its
    benchmark under the set's name, while the block runs."""
    from pact_cotrain.eval.benchmarks import BENCHMARKS, PROTOCOLS, protocol_of

    added = [s for s in sets if s.name != s.benchmark]
    clashes = [s.name for s in added if s.name in BENCHMARKS]
    if clashes:
        raise UserError(f"eval.sets: {', '.join(clashes)} is a benchmark's name; name the set after its benchmark "
                        "only when it is that benchmark's default tasks, else choose another name")
    for s in added:
        base = BENCHMARKS[s.benchmark]
        protocol = protocol_of(base)
        BENCHMARKS[s.name] = dataclasses.replace(base, name=s.name)
        PROTOCOLS[s.name] = dataclasses.replace(protocol, source=f"{s.benchmark}'s protocol: {protocol.source}")
    try:
        yield
    finally:
        for s in added:
            BENCHMARKS.pop(s.name, None)
            PROTOCOLS.pop(s.name, None)


def evaluate_sets(study: dict, sets: list[EvalSet], model_dir: str, out_dir: Path, seed: int) -> dict:
    """One greedy `run_eval` of `model_dir` over every set, written to `out_dir` (episodes_<set>.jsonl,
    results.json keyed by set name); an interrupted evaluation there resumes after its finished batches. `eval.dtype` (e.g. float32) is the HF weights' dtype (vLLM's is
    `eval.vllm.dtype`); the caps are the study's, a cap it does not set the protocol's."""
    from functools import partial

    from pact_cotrain.eval.runner import run_eval
    from pact_cotrain.recipes.common import load_model_and_tokenizer

    ev = study["eval"]
    loader = partial(load_model_and_tokenizer, dtype=ev["dtype"]) if ev.get("dtype") else load_model_and_tokenizer
    with registered(sets):
        return run_eval(model_dir, [s.name for s in sets], data={s.name: s.data for s in sets if s.data},
                        limit={s.name: s.limit for s in sets}, max_turns={s.name: s.max_turns for s in sets},
                        backend=ev.get("backend", "hf"), vllm_kwargs=ev.get("vllm"), model_loader=loader,
                        out_dir=str(out_dir), batch_size=ev.get("batch_size", 16), greedy=True, seed=seed,
                        max_new_tokens_per_turn=ev.get("max_new_tokens_per_turn"),
                        max_completion_tokens=ev.get("max_completion_tokens"), progress=False, resume=True)


def per_task_rows(eval_dir: Path, sets: list[EvalSet], method: str, seed: int) -> list[dict]:
    """One row per evaluated episode: method, seed, eval_set, benchmark, task_id, every numeric metric
    (solve_f1, solve_r, solve_p, answer_correct, n_calls, ...) and the stop reason, tokens and reward."""
    rows = []
    for s in sets:
        path = eval_dir / f"episodes_{s.name}.jsonl"
        if not path.exists():
            continue
        with open(path) as handle:
            for line in handle:
                ep = json.loads(line)
                metrics = {k: v for k, v in (ep.get("metrics") or {}).items() if isinstance(v, (int, float))}
                rows.append({"method": method, "seed": seed, "eval_set": s.name, "benchmark": s.benchmark,
                             "task_id": ep["task_id"], "sample_index": ep.get("sample_index", 0), **metrics,
                             **{k: ep.get(k) for k in EPISODE_FIELDS}})
    return rows


def write_per_task(path: Path, rows: list[dict]) -> None:
    """rows as gzipped JSON lines, written to a temporary name and renamed (complete or absent).
    mtime=0: the same rows give the same bytes."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
        for row in rows:
            handle.write((json.dumps(row, sort_keys=True) + "\n").encode())
    tmp.replace(path)


def read_per_task(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as handle:
        return [json.loads(line) for line in handle if line.strip()]
