"""One run per output folder: a lock the operating system holds, a refusal to mix with another run's
checkpoints, and a write check before the first step (so a read-only folder fails at once, not after training).

The lock is `fcntl.flock` on `output_dir/.pact-run.lock`: the kernel grants it to one process at a time
and drops it when that process exits, however it exits (kill -9 included), so there is no stale lock
to take over and no window between creating the file and claiming it. The holder's host and PID are
written into the file for the refusal's message only. The file is removed while still locked; a process
that opened it just before finds, once it has the lock, that the path no longer names its file, and
tries again. On NFS, Linux maps flock onto the server's byte-range locks (NFSv4), which hold across hosts.
"""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager

from pact_cotrain.training.checkpoints import RunError, checkpoints

LOCK_NAME = ".pact-run.lock"


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "its holder has not written its host and PID yet"


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _acquire(path: str, output_dir: str) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunError(f"{output_dir} is in use by another run ({holder}; lock file {path})") from None
        if _same_file(fd, path):
            return fd
        os.close(fd)  # the holder removed the file between our open and our lock: lock the new one


def _clean_staging(output_dir: str, log) -> None:
    """Staging folders a killed run left (we hold the lock, so no save is under way)."""
    for path in glob.glob(os.path.join(output_dir, ".staging-*")):
        shutil.rmtree(path, ignore_errors=True)
        log(f"removed {path}, left by an interrupted save")


@contextmanager
def run_lock(output_dir: str, log=print):
    """Hold `output_dir/.pact-run.lock` for the block, or refuse at once (naming the holder) when another
    process holds it."""
    path = os.path.join(output_dir, LOCK_NAME)
    if not is_main_launch_process():  # under torchrun/accelerate, process 0 holds the lock for the run
        yield path
        return
    fd = _acquire(path, output_dir)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"host {socket.gethostname()} PID {os.getpid()}\n".encode(), 0)
        _clean_staging(output_dir, log)
        yield path
    finally:
        try:
            os.remove(path)  # while still locked: see the module's docstring
        except FileNotFoundError:
            pass
        os.close(fd)  # releases the lock


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
