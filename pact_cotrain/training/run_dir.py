"""One run per output folder: a PID lock file, a refusal to mix with another run's checkpoints, and
a write check before the first step (so a read-only folder fails at once, not after training)."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager

from pact_cotrain.training.checkpoints import RunError, checkpoints

LOCK_NAME = ".pact-run.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_pid(path: str) -> int | None:
    try:
        with open(path) as handle:
            return int(handle.read().strip() or "x")
    except (OSError, ValueError):
        return None


@contextmanager
def run_lock(output_dir: str, log=print):
    """Hold `output_dir/.pact-run.lock` (our PID) for the block. A lock whose PID is dead is stale and taken
    over; a live one is refused."""
    path = os.path.join(output_dir, LOCK_NAME)
    if not is_main_launch_process():  # under torchrun/accelerate, process 0 holds the lock for the run
        yield path
        return
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid = _read_pid(path)
            if pid is not None and pid != os.getpid() and _alive(pid):
                raise RunError(f"{output_dir} is in use by another run (PID {pid}, lock file {path})") from None
            log(f"removing stale lock {path} (PID {pid} is not running)")
            os.remove(path)
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        break
    else:
        raise RunError(f"could not take the lock {path}")
    try:
        yield path
    finally:
        if _read_pid(path) == os.getpid():
            os.remove(path)


def is_main_launch_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def previous_run_files(output_dir: str) -> list[str]:
    """Names in `output_dir` that belong to a run: checkpoints and `final/`."""
    names = [os.path.basename(p) for _, p in checkpoints(output_dir)]
    if os.path.exists(os.path.join(output_dir, "final")):
        names.append("final")
    return names


def claim(output_dir: str, resume: bool, overwrite: bool, log=print) -> None:
    """Refuse a fresh run in a folder holding another run's checkpoints unless resuming or overwriting;
    `overwrite` deletes them first (so no stale checkpoint of the old run is left to resume from)."""
    found = previous_run_files(output_dir)
    if not found or resume or not is_main_launch_process():
        return
    if not overwrite:
        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        raise RunError(f"{output_dir} already holds another run ({shown}); pass --resume to continue it "
                       f"or --overwrite to replace it")
    log(f"--overwrite: deleting {', '.join(found)} in {output_dir}")
    for name in found:
        shutil.rmtree(os.path.join(output_dir, name))


def check_writable(output_dir: str) -> None:
    """Create `output_dir` and write, fsync and delete a probe file in it."""
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=".write-check-") as handle:
            handle.write(b"ok")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise RunError(f"output_dir {output_dir} is not writable: {exc.strerror or exc}") from None
