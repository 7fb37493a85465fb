"""Checkpoints that are complete or absent, and finding the newest complete one.

A checkpoint (or `final/`) is written into a staging folder next to its target, fsynced, and renamed
into place. An existing copy is first renamed aside and deleted only after the new one is in place,
so a kill at any instant leaves either the old complete copy, the new complete copy, or (between the
two renames) no copy at that step, and resume falls back to the previous complete checkpoint.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Callable

from pact_cotrain.errors import UserError
from pact_cotrain.training import checkpoint_layout

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
ASIDE_RE = re.compile(r"^(checkpoint-\d+|final)\.old-\d+$")  # an old copy renamed aside by replace_dir
# test-only: stop as a kill -9 would at a named instant, e.g. "staged:final" (fully staged, not renamed
# in) or "replace:checkpoint-4" (old copy set aside, new one not yet moved in)
KILL_ENV = "PACT_TEST_KILL_AT"


class RunError(UserError):
    """An ordinary mistake or condition of a run (bad folder, missing checkpoint, full disk): the CLI
    prints its message as one line and exits non-zero."""


class CheckpointNotFoundError(RunError, FileNotFoundError):
    pass


class SimulatedKill(BaseException):
    """Raised at a `PACT_TEST_KILL_AT` instant; no cleanup runs for it, as none would after kill -9."""


def _kill_point(name: str) -> None:
    if os.environ.get(KILL_ENV) == name:
        raise SimulatedKill(name)


def checkpoint_step(name: str) -> int | None:
    """The step of a `checkpoint-N` folder name; None for anything else (`checkpoint-6.bak`)."""
    match = CHECKPOINT_RE.match(name)
    return int(match.group(1)) if match else None


def missing_files(path: str, with_state: bool = True) -> list[str]:
    """What a checkpoint folder lacks to be resumed from (or, `with_state=False`, to be loaded as a model),
    in the layout the launch wrote (one process / DDP, DeepSpeed, FSDP: checkpoint_layout.py)."""
    return checkpoint_layout.missing(path, with_state)


def checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """(step, path) of every `checkpoint-N` folder, oldest first; other names are ignored."""
    if not os.path.isdir(output_dir):
        return []
    found = [(checkpoint_step(n), os.path.join(output_dir, n)) for n in os.listdir(output_dir)]
    return sorted((s, p) for s, p in found if s is not None and os.path.isdir(p))


def recover(output_dir: str, log: Callable[[str], None] = print) -> None:
    """Finish a replace_dir that was killed between its two renames: an old copy set aside whose
    replacement never arrived is moved back; one whose replacement is in place is deleted."""
    if not os.path.isdir(output_dir):
        return
    for name in os.listdir(output_dir):
        if not ASIDE_RE.match(name):
            continue
        aside, target = os.path.join(output_dir, name), os.path.join(output_dir, name.rsplit(".old-", 1)[0])
        if os.path.exists(target):
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(aside, target)
            log(f"restored {target} from {name} (an interrupted replacement)")


def latest_complete(output_dir: str, log: Callable[[str], None] = print) -> str | None:
    """The newest checkpoint with everything a resume needs, whose files can be loaded. Each newer one
    skipped is reported in one line: which, why, and which checkpoint is used instead."""
    recover(output_dir, log)
    skipped = []
    for _, path in reversed(checkpoints(output_dir)):
        missing = missing_files(path)
        problem = None if missing else checkpoint_layout.unloadable(path)
        if not missing and problem is None:
            for reason in skipped:
                log(f"skipping {reason}; resuming from {path} instead (--resume=PATH names a checkpoint "
                    f"explicitly)")
            return path
        skipped.append(f"incomplete checkpoint {path} (missing {', '.join(missing)})" if missing
                       else f"checkpoint {path}: it cannot be loaded ({problem})")
    for reason in skipped:
        log(f"skipping {reason}; no earlier complete checkpoint")
    return None


def fsync_tree(path: str) -> None:
    """Flush every file under `path`, then the folders themselves, to the disk."""
    for root, _, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(root)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_dir(staged: str, target: str) -> None:
    """Move the complete folder `staged` to `target`; an old `target` is deleted only once the new one is in."""
    parent = os.path.dirname(os.path.abspath(target))
    aside = f"{target}.old-{os.getpid()}"
    if os.path.exists(target):
        os.replace(target, aside)
        _kill_point(f"replace:{os.path.basename(target)}")
    os.replace(staged, target)
    _fsync_dir(parent)
    shutil.rmtree(aside, ignore_errors=True)


def is_disk_full(exc: BaseException) -> bool:
    # safetensors and others may wrap the OSError: its message still says so. (torch.save's
    # "basic_ios::clear: iostream error" says nothing; the folder is named in our message anyway.)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left" in str(exc)


def save_failure(exc: BaseException, what: str, folder: str) -> RunError | None:
    """A readable RunError for a save that failed on the disk (full, or an I/O error), else None."""
    low_space = False
    try:
        low_space = shutil.disk_usage(folder).free < 64 * 2**20
    except OSError:
        pass
    if is_disk_full(exc) or (low_space and isinstance(exc, (OSError, RuntimeError))):
        return RunError(f"no space left on the device while saving {what} in {folder} ({_what_is_kept(folder, what)})")
    if isinstance(exc, OSError) or (isinstance(exc, RuntimeError) and "iostream error" in str(exc)):
        return RunError(f"could not save {what} in {folder}: {exc}")
    return None


def _what_is_kept(folder: str, failed: str) -> str:
    """What a failed save leaves to fall back on: the newest complete checkpoint, or nothing (with
    `train.save_steps=0`, or before the first save, there is no earlier copy)."""
    kept = [os.path.basename(p) for _, p in checkpoints(folder) if os.path.basename(p) != failed and not missing_files(p)]
    if kept:
        return f"earlier checkpoints are kept, the newest {kept[-1]}"
    return "no earlier checkpoint exists in it, so nothing of this run is saved; free space and rerun"


def atomic_write_dir(target: str, write: Callable[[str], None]) -> None:
    """`write(staging)` fills a staging folder beside `target`; then fsync and rename it into place.
    On any failure the staging folder is removed and the old `target` (if any) is untouched."""
    parent = os.path.dirname(os.path.abspath(target))
    staging = os.path.join(parent, f".staging-{os.path.basename(target)}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        write(staging)
        _kill_point(f"staged:{os.path.basename(target)}")
        fsync_tree(staging)
        replace_dir(staging, target)
    except SimulatedKill:
        raise
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        error = save_failure(exc, os.path.basename(target), parent) if isinstance(exc, Exception) else None
        if error is not None:
            raise error from exc
        raise


def prune(output_dir: str, keep: int | None, just_written: str) -> None:
    """Keep `just_written` and the newest `keep - 1` complete checkpoints before it; delete the older
    complete ones (None or 0: keep all). Incomplete folders are not counted (resume skips them) and not
    touched, nor is any checkpoint newer than `just_written`, so the run always keeps a complete one."""
    if not keep:
        return
    newest = checkpoint_step(os.path.basename(just_written))
    older = [path for step, path in checkpoints(output_dir) if step < newest and not missing_files(path)]
    for path in older[: max(len(older) - (keep - 1), 0)]:
        shutil.rmtree(path, ignore_errors=True)
