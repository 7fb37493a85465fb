"""A run's fingerprint: what decides which run a checkpoint belongs to, so `--resume` under another
config is refused instead of training a hybrid.

The fingerprint is flat, dotted keys to JSON values:

* `data`: `sha256:<hex>` of the task file (data.source=file), or the generated data's spec
  (`data.source`, `data.n_train`, `data.toolworld_seed`, `data.split`);
* `method.*`: every method switch, defaults filled in (what a step computes);
* `seed`;
* the batch's shape: `train.prompts_per_step`, `train.k`, `train.global_prompts_per_step` where the
  config has it, and `processes` (the launch's WORLD_SIZE: each process takes its own prompts);
* `model`: the model the run started from (registry name, id or directory).

Each checkpoint holds it as `run_fingerprint.json` (exact_resume.py writes it).
"""

from __future__ import annotations

import functools
import json
import os

FILE_NAME = "run_fingerprint.json"
GENERATED_DATA_KEYS = ("source", "n_train", "toolworld_seed", "split")
BATCH_KEYS = ("prompts_per_step", "k", "global_prompts_per_step")


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:  # size and mtime: a changed file is hashed again
    from pact_cotrain.models import file_sha256 as digest

    return digest(path)


def file_sha256(path: str) -> str:
    stat = os.stat(path)
    return _sha256(os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


def run_fingerprint(cfg: dict) -> dict:
    data = cfg["data"]
    found: dict = {}
    if data["source"] == "file":
        found["data"] = f"sha256:{file_sha256(data['path'])}"
    else:
        found.update({f"data.{key}": data.get(key) for key in GENERATED_DATA_KEYS})
    from dataclasses import asdict

    from pact_cotrain.training.methods import MethodConfig

    # resolved: a switch left at its default and one set to the default are the same run
    found.update({f"method.{key}": value for key, value in sorted(asdict(MethodConfig(**cfg["method"])).items())})
    found["seed"] = cfg.get("seed", 0)
    found["processes"] = int(os.environ.get("WORLD_SIZE", "1"))
    train = dict(cfg["train"])
    if train.get("global_prompts_per_step") is None and train.get("prompts_per_step"):
        # the step build_trainer sizes (training/step_prompts.py): the same whether or not it was resolved yet
        train["global_prompts_per_step"] = train["prompts_per_step"] * found["processes"]
    found.update({f"train.{key}": train[key] for key in BATCH_KEYS if key in train})
    found["model"] = cfg["model"]
    return json.loads(json.dumps(found))  # as it reads back from the file (tuples become lists)


def write(folder: str, fingerprint: dict) -> None:
    with open(os.path.join(folder, FILE_NAME), "w") as handle:
        json.dump(fingerprint, handle, indent=1, sort_keys=True)


def read(checkpoint: str) -> dict | None:
    """The checkpoint's fingerprint; None for a checkpoint written before fingerprints were recorded."""
    path = os.path.join(checkpoint, FILE_NAME)
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        return json.load(handle)


def _shown(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 24 else text[:21] + "..."


def differences(recorded: dict, current: dict) -> list[str]:
    """'key (A there, B now)' for every key whose value differs; a key one side lacks shows as absent."""
    absent = object()
    found = []
    for key in sorted(set(recorded) | set(current)):
        was, now = recorded.get(key, absent), current.get(key, absent)
        if was != now:
            found.append(f"{key} ({'absent' if was is absent else _shown(was)} there, "
                         f"{'absent' if now is absent else _shown(now)} now)")
    return found
