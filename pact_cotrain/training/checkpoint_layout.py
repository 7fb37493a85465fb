"""What a resumable checkpoint holds under each launch, and a cheap check that its files can be loaded.

The Trainer (transformers 5.2x, `_save_checkpoint`) writes three layouts:

* one process or DDP: weights (`model.safetensors`, sharded, or an adapter) with `config.json`,
  `optimizer.pt`, `scheduler.pt`, `rng_state.pth` (`rng_state_<rank>.pth` per process);
* DeepSpeed: `engine.save_checkpoint` writes `global_step<N>/` (`mp_rank_00_model_states.pt`,
  `*zero_pp_rank_<r>_mp_rank_00_optim_states.pt`, under ZeRO-3 also `zero_pp_rank_<r>_mp_rank_00_model_states.pt`)
  and a `latest` file naming that folder, which `load_checkpoint` reads; no `optimizer.pt`, and
  `scheduler.pt` only for a scheduler DeepSpeed does not own; under ZeRO-3 without
  `stage3_gather_16bit_weights_on_model_save` no weights beside `config.json` at all;
* FSDP: accelerate's `save_fsdp_model` / `save_fsdp_optimizer` write `pytorch_model_fsdp.bin` and
  `optimizer.bin` (FULL_STATE_DICT), `pytorch_model_fsdp_0/` and `optimizer_0/` (SHARDED_STATE_DICT,
  torch.distributed.checkpoint folders ending in `.metadata`), or `*_rank<r>.bin` (LOCAL_STATE_DICT),
  plus `scheduler.pt`; `model.safetensors` and `config.json` only under FULL_STATE_DICT.

Every layout also holds `trainer_state.json` and our `sampler_state.pt`.

`unloadable` reads only headers and directories: a safetensors header against the file's size, the
central directory of a torch zip file (at its end, so a truncated file has none), and the JSON of
`trainer_state.json`. It finds truncated and empty files without reading any tensor.
"""

from __future__ import annotations

import json
import os
import re
import struct
import zipfile

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors",
                "pytorch_model.bin", "pytorch_model.bin.index.json")
STATE_FILES = ("trainer_state.json", "sampler_state.pt")  # sampler_state.pt: exact_resume.py
FSDP_WEIGHTS_RE = re.compile(r"^pytorch_model_fsdp(_\d+)?(\.bin|_rank\d+\.bin)?$")
FSDP_OPTIMIZER_RE = re.compile(r"^optimizer(\.bin|_\d+|_\d+_rank\d+\.bin)$")
TORCH_SUFFIXES = (".pt", ".pth", ".bin")


def layout(names: set[str]) -> str:
    """'deepspeed', 'fsdp' or 'plain' (one process or DDP), from a checkpoint folder's names."""
    if "latest" in names or any(n.startswith("global_step") for n in names):
        return "deepspeed"
    if any(FSDP_WEIGHTS_RE.match(n) or FSDP_OPTIMIZER_RE.match(n) for n in names):
        return "fsdp"
    return "plain"


def _has_rng_state(names: set[str]) -> bool:
    return any(n.startswith("rng_state") and n.endswith(".pth") for n in names)


def _has_config(names: set[str]) -> bool:
    return "config.json" in names or "adapter_config.json" in names


def _deepspeed_missing(path: str, names: set[str]) -> list[str]:
    if "latest" not in names:
        return ["latest (DeepSpeed's tag file)"]
    try:
        with open(os.path.join(path, "latest")) as handle:
            tag = handle.read().strip()
    except OSError as exc:
        return [f"a readable latest ({exc.strerror})"]
    folder = os.path.join(path, tag)
    if not tag or not os.path.isdir(folder):
        return [f"{tag or '<empty>'}/ (named by latest)"]
    inside = os.listdir(folder)
    missing = []
    if not any(n.endswith("model_states.pt") for n in inside):
        missing.append(f"{tag}/*model_states.pt")
    if not any(n.endswith("optim_states.pt") for n in inside):
        missing.append(f"{tag}/*optim_states.pt")
    return missing


def _is_dcp_folder(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, ".metadata"))


def _fsdp_missing(path: str, names: set[str]) -> list[str]:
    missing = []
    weights = [n for n in names if FSDP_WEIGHTS_RE.match(n)]
    if not any(n.endswith(".bin") or _is_dcp_folder(os.path.join(path, n)) for n in weights):
        missing.append("pytorch_model_fsdp.bin or pytorch_model_fsdp_0/.metadata")
    optimizer = [n for n in names if FSDP_OPTIMIZER_RE.match(n)]
    if not any(n.endswith(".bin") or _is_dcp_folder(os.path.join(path, n)) for n in optimizer):
        missing.append("optimizer.bin or optimizer_0/.metadata")
    if "scheduler.pt" not in names:
        missing.append("scheduler.pt")
    return missing


def missing(path: str, with_state: bool = True) -> list[str]:
    """What a checkpoint folder lacks to be resumed from (or, `with_state=False`, to be loaded as a model)."""
    if not os.path.isdir(path):
        return ["the folder itself"]
    names = set(os.listdir(path))
    if not with_state:
        found = [] if names & set(WEIGHT_FILES) else ["model weights"]
        return found + ([] if _has_config(names) else ["config.json"])
    kind = layout(names)
    if kind == "deepspeed":
        found = _deepspeed_missing(path, names) + ([] if _has_config(names) else ["config.json"])
    elif kind == "fsdp":
        found = _fsdp_missing(path, names)
    else:
        found = [] if names & set(WEIGHT_FILES) else ["model weights"]
        found += [] if _has_config(names) else ["config.json"]
        found += [f for f in ("optimizer.pt", "scheduler.pt") if f not in names]
    found += [f for f in STATE_FILES if f not in names]
    return found + ([] if _has_rng_state(names) else ["rng_state.pth"])


# ---------------------------------------------------------------- can its files be loaded


def _safetensors_problem(path: str) -> str | None:
    """safetensors: 8 bytes of header length, the JSON header, then the tensors' bytes, whose end the
    header's largest `data_offsets` gives."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return f"is truncated ({size} bytes, no header)"
        (length,) = struct.unpack("<Q", head)
        if 8 + length > size:
            return f"is truncated ({size} bytes, its header alone needs {8 + length})"
        try:
            header = json.loads(handle.read(length))
        except ValueError as exc:
            return f"has an unreadable header ({exc})"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + length + end > size:
        return f"is truncated ({size} bytes, its tensors need {8 + length + end})"
    return None


def _torch_file_problem(path: str) -> str | None:
    """torch.save writes a zip archive; its central directory is at the end, so a cut file has none."""
    if os.path.getsize(path) == 0:
        return "is empty"
    try:
        with zipfile.ZipFile(path) as archive:
            size = os.path.getsize(path)
            if any(info.header_offset + info.compress_size > size for info in archive.infolist()):
                return "is truncated"
    except (zipfile.BadZipFile, OSError) as exc:
        return f"is truncated or not a torch file ({exc})"
    return None


def _trainer_state_problem(path: str) -> str | None:
    try:
        with open(path) as handle:
            state = json.load(handle)
    except ValueError as exc:
        return f"is not valid JSON ({exc})"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return "has no global_step"
    return None


def _file_problem(path: str) -> str | None:
    name = os.path.basename(path)
    if name.endswith(".safetensors"):
        return _safetensors_problem(path)
    if name.endswith(TORCH_SUFFIXES):
        return _torch_file_problem(path)
    if name == "trainer_state.json":
        return _trainer_state_problem(path)
    if name.endswith(".index.json"):
        try:
            with open(path) as handle:
                shards = set(json.load(handle)["weight_map"].values())
        except (ValueError, KeyError, TypeError) as exc:
            return f"is not a weight index ({exc})"
        for shard in sorted(shards):
            shard_path = os.path.join(os.path.dirname(path), shard)
            problem = "is missing" if not os.path.isfile(shard_path) else _file_problem(shard_path)
            if problem:
                return f"names {shard}, which {problem}"
    if name == ".metadata" and os.path.getsize(path) == 0:
        return "is empty"
    return None


def unloadable(path: str) -> str | None:
    """'FILE REASON' for the first file of the checkpoint `path` that cannot be loaded, else None."""
    for root, folders, files in os.walk(path):
        folders.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            problem = _file_problem(full)
            if problem:
                return f"{os.path.relpath(full, path)} {problem}"
    return None
