"""Screening the training pool: keep the tasks the warm-up checkpoint solves sometimes, not never or always.

    pact study screen --config v2 --model runs/v2/warmup/final --out runs/v2/data/screened.jsonl

For each task of the pool (the study's toolworld train tasks, or `--pool FILE`), `screen.samples`
prompt-only episodes (default 8) are sampled at `screen.temperature` (default 1) from the checkpoint,
under the study's training caps (the budget's `sampling.*`: the conditions the methods will roll out
under). An episode succeeds when its `screen.metric` (default `solve_f1`) is at least
`screen.success_at` (default 1.0): with Solve-F1, every gold call made and no other call. A task's
rate is its share of successful episodes; the tasks with a rate in `screen.keep` (default [0.2, 0.6],
both ends included) are kept, so that a group of rollouts mostly has both successes and failures
(a group that all fails or all succeeds has zero advantage under group-relative RL).

Writes:
  FILE               the kept tasks (the task/trace format; each with `screen: {rate, successes,
                     samples}`): every arm trains on it (data.source=file)
  FILE.rates.jsonl   every pool task: task_id, successes, samples, rate, kept
  FILE.summary.json  pool size, kept, the band, the success rule, the rate histogram, the model, the caps

With `screen.eval_samples: N`, the study also screens each generated evaluation set (`--eval-set NAME`):
N samples per task under that set's own caps, rates only (OUT/data/screened_<set>.jsonl.rates.jsonl and
.summary.json, no kept file, no band): the report reads PACT's gain by those rates (dose-response).

Rates depend on the sampling seed (`screen.seed`, default 0) and the checkpoint: one screening is
made once per study and shared by every arm. It is resumable: each batch's successes are appended to
FILE.partial.jsonl as it finishes, and a screening started again skips the batches recorded there
(every batch has its own seed, so the result is the same; the partial file is removed at the end).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Callable

from pact_cotrain.errors import UserError

DEFAULTS = {"samples": 8, "temperature": 1.0, "keep": [0.2, 0.6], "metric": "solve_f1", "success_at": 1.0,
            "seed": 0, "batch_tasks": 16, "backend": "hf", "dtype": "float32", "pool": None, "eval_samples": None}
# rate_fn(tasks, partial) -> {task_id: successes out of `samples`}; `partial`: the resumable record (a path)
RateFn = Callable[[list, str], dict]


def read_partial(path: str) -> dict[str, int]:
    """{task_id: successes} of the batches a screening finished before it was stopped."""
    if not Path(path).exists():
        return {}
    done = {}
    with open(path) as handle:
        for line in handle:
            if line.endswith("\n"):  # a line cut by a kill is not a record
                record = json.loads(line)
                done[record["task_id"]] = int(record["successes"])
    return done


def append_partial(path: str, successes: dict[str, int]) -> None:
    import os

    with open(path, "a") as handle:
        handle.write("".join(json.dumps({"task_id": t, "successes": n}) + "\n" for t, n in successes.items()))
        handle.flush()
        os.fsync(handle.fileno())


def screen_settings(study: dict) -> dict:
    spec = study.get("screen") or {}
    unknown = set(spec) - set(DEFAULTS) - {"vllm"}
    if unknown:
        raise UserError(f"screen: unknown key(s) {', '.join(sorted(unknown))}; known: "
                        f"{', '.join(sorted(DEFAULTS))}, vllm")
    settings = {**DEFAULTS, **spec}
    lo, hi = settings["keep"]
    if not 0.0 <= lo <= hi <= 1.0 or int(settings["samples"]) < 1:
        raise UserError(f"screen: keep must be [lo, hi] with 0 <= lo <= hi <= 1 and samples >= 1; got keep "
                        f"{settings['keep']}, samples {settings['samples']}")
    return settings


def select(successes: dict[str, int], samples: int, keep: tuple[float, float]) -> list[dict]:
    """One record per task, in the order given: successes, samples, rate = successes / samples and
    kept = lo <= rate <= hi."""
    lo, hi = keep
    return [{"task_id": task_id, "successes": int(n), "samples": samples, "rate": n / samples,
             "kept": lo <= n / samples <= hi} for task_id, n in successes.items()]


def histogram(records: list[dict]) -> dict[str, int]:
    """How many tasks had each number of successes ("0/8": never solved, "8/8": always)."""
    counts = Counter(r["successes"] for r in records)
    samples = records[0]["samples"] if records else 0
    return {f"{k}/{samples}": counts.get(k, 0) for k in range(samples + 1)}


def training_sampling(study: dict) -> dict:
    """The rollout caps every trained method gets from the study's budget (`sampling.*`)."""
    from pact_cotrain.study.runner import _overrides
    from pact_cotrain.config import load_config

    return load_config("pact", _overrides(study["budget"]))["sampling"]


def eval_set_caps(study: dict, name: str) -> dict:
    """The caps evaluation set `name` runs under (its turn cap, the study's token caps, else its protocol's)."""
    from pact_cotrain.eval.benchmarks import BENCHMARKS, eval_settings
    from pact_cotrain.study.evaluate import eval_sets

    sets = {s.name: s for s in eval_sets(study, {f"eval:{n}": "" for n in study["eval"].get("sets") or {}})}
    if name not in sets:
        raise UserError(f"--eval-set {name}: not an evaluation set of the study ({', '.join(sets) or 'none'})")
    ev = study["eval"]
    settings = eval_settings(BENCHMARKS[sets[name].benchmark], sets[name].max_turns, ev.get("max_new_tokens_per_turn"),
                             ev.get("max_completion_tokens"), temperature=0.0)
    return {"max_turns": settings.max_turns, "max_new_tokens_per_turn": settings.max_new_tokens_per_turn,
            "max_completion_tokens": settings.max_completion_tokens}


def rollout_rate_fn(model: str, study: dict, settings: dict, caps: dict | None = None) -> RateFn:
    """Successes per task from `settings['samples']` sampled, prompt-only episodes per task of `model`
    (a name or directory), under `caps` (default: the budget's), in batches of `batch_tasks` tasks."""
    import torch

    from pact_cotrain.recipes.common import load_model_and_tokenizer, load_tokenizer
    from pact_cotrain.recipes.train import env_factory_for
    from pact_cotrain.rollout.engine import RolloutEngine, SamplingConfig

    caps = caps or training_sampling(study)
    sampling = SamplingConfig(temperature=float(settings["temperature"]), greedy=False, max_turns=caps["max_turns"],
                              max_new_tokens_per_turn=caps["max_new_tokens_per_turn"],
                              max_completion_tokens=caps["max_completion_tokens"])
    if settings["backend"] == "vllm":
        from pact_cotrain.eval.runner import _vllm_backend_for

        tokenizer = load_tokenizer(model)
        policy, backend = None, _vllm_backend_for(model, tokenizer, {"dtype": settings["dtype"],
                                                                     **(settings.get("vllm") or {})})
    else:
        policy, tokenizer = load_model_and_tokenizer(model, dtype=settings["dtype"])
        backend = None
        if torch.cuda.is_available():
            policy = policy.to("cuda")
    metric, threshold, k = settings["metric"], float(settings["success_at"]), int(settings["samples"])

    def rates(tasks: list, partial: str) -> dict:
        engine = RolloutEngine(policy, tokenizer, env_factory_for(tasks, sampling.max_turns), sampling,
                               backend=backend)
        done = read_partial(partial)
        successes = {}
        size = int(settings["batch_tasks"])
        for index in range(0, len(tasks), size):
            batch = tasks[index : index + size]
            if all(t.id in done for t in batch):  # screened before a stop: same seed, same result
                successes.update({t.id: done[t.id] for t in batch})
                continue
            counts = {t.id: 0 for t in batch}
            for ep in engine.rollout(batch, k=k, seed=int(settings["seed"]) + index):
                counts[ep.task_id] += int(float(ep.metrics.get(metric, 0.0)) >= threshold)
            append_partial(partial, counts)
            successes.update(counts)
            print(f"screen: {min(index + size, len(tasks))}/{len(tasks)} tasks, {sum(counts.values())} successes "
                  f"in this batch's {len(batch) * k} episodes", flush=True)
        return successes

    return rates


def pool_tasks(study: dict, pool: str | None) -> list:
    """The pool to screen: a task file, else the first `screen.pool` (default `data.toolworld_train`)
    toolworld train tasks of toolworld seed 0, the tasks `pact study` trains on."""
    from pact_cotrain.data.trace_format import load_tasks
    from pact_cotrain.envs.toolworld import generate_tasks

    if pool is not None:
        if not Path(pool).is_file():
            raise UserError(f"--pool {pool}: no such file; give a task JSONL file (e.g. the study's data/train.jsonl)")
        return load_tasks(pool)
    n = (study.get("screen") or {}).get("pool") or study["data"]["toolworld_train"]
    return generate_tasks(int(n), seed=0, split="train")


def run_screen(config: str, model: str, out: str, pool: str | None = None, rate_fn: RateFn | None = None,
               eval_set: str | None = None) -> dict:
    """Screen the pool with `model`, write FILE, FILE.rates.jsonl and FILE.summary.json; return the summary.
    `rate_fn` replaces the sampling (tests). Refuses (UserError) when no task falls in the band. With
    `eval_set`, the pool is that evaluation set's tasks, screened under its caps with `screen.eval_samples`
    samples, and only the rates and summary are written."""
    from pact_cotrain.data.trace_format import Task, write_tasks
    from pact_cotrain.study.provenance import code_version
    from pact_cotrain.study.runner import load_study

    study = load_study(config)
    settings = screen_settings(study)
    caps = None
    if eval_set is not None:
        if pool is None or not settings["eval_samples"]:
            raise UserError("--eval-set needs --pool (the set's task file) and the study's screen.eval_samples")
        caps = eval_set_caps(study, eval_set)
        settings = {**settings, "samples": int(settings["eval_samples"])}
    tasks = pool_tasks(study, pool)
    samples = int(settings["samples"])
    partial = f"{out}.partial.jsonl"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    successes = (rate_fn or rollout_rate_fn(model, study, settings, caps))(tasks, partial)
    records = select({t.id: successes[t.id] for t in tasks}, samples, tuple(settings["keep"]))
    by_id = {r["task_id"]: r for r in records}
    kept = [Task(t.id, t.messages, t.tools, t.trace,
                 {**t.metadata, "screen": {k: by_id[t.id][k] for k in ("rate", "successes", "samples")}})
            for t in tasks if by_id[t.id]["kept"]]
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = {"model": model, "pool": len(tasks), "kept": len(kept), "keep": list(settings["keep"]),
               "samples": samples, "temperature": settings["temperature"],
               "success": f"{settings['metric']} >= {settings['success_at']}", "seed": settings["seed"],
               "caps": caps or {k: v for k, v in training_sampling(study).items()
                                if k in ("max_turns", "max_new_tokens_per_turn", "max_completion_tokens")},
               "eval_set": eval_set,
               "successes_histogram": histogram(records),
               "mean_rate": sum(r["rate"] for r in records) / len(records) if records else 0.0,
               "git": code_version()}
    with open(f"{out}.rates.jsonl", "w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    Path(f"{out}.summary.json").write_text(json.dumps(summary, indent=1))
    if eval_set is not None:  # rates only: nothing is trained on an evaluation set
        print(f"screen: {eval_set}: rates of {len(tasks)} tasks ({samples} samples each; successes per task "
              f"{summary['successes_histogram']})", flush=True)
        Path(partial).unlink(missing_ok=True)
        return summary
    print(f"screen: kept {len(kept)} of {len(tasks)} tasks with a success rate in {settings['keep']} "
          f"({samples} samples each; successes per task {summary['successes_histogram']})", flush=True)
    if not kept:
        raise UserError(f"screen: no task of {len(tasks)} has a success rate in {settings['keep']}; see "
                        f"{out}.rates.jsonl (a larger pool, or a better warm-up, gives some)")
    tmp = path.with_name(path.name + ".tmp")
    write_tasks(tmp, kept)
    tmp.replace(path)  # last and atomic: the file exists only when the screening is complete
    Path(partial).unlink(missing_ok=True)
    return summary
