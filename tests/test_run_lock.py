"""Issue 31, case 2: the run lock is one the operating system holds (flock): never two holders, released
when its process dies however it dies, and the holder's host and PID only in the message."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pact_cotrain.training.checkpoints import RunError
from pact_cotrain.training.run_dir import LOCK_NAME, run_lock

ROOT = Path(__file__).resolve().parents[1]
HOLD = ("import sys, time\nfrom pact_cotrain.training.run_dir import run_lock\n"
        "with run_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n")


def test_two_contending_processes_never_both_hold_the_lock(tmp_path):
    """The harness that found the race (tests/lock_contention.py): 150 trials, both processes taking
    and releasing the lock of a fresh folder for 20 ms each. The O_EXCL + PID lock it replaced was
    held by both in 3 to 23 of 150 trials here, and its stale-lock takeover failed with FileNotFoundError."""
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "lock_contention.py"), str(tmp_path), "150"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    both = int(re.search(r"both_held: (\d+) of 150", proc.stdout).group(1))
    held = int(re.search(r"^held: (\d+)", proc.stdout, re.M).group(1))
    errors = int(re.search(r"errors: (\d+)", proc.stdout).group(1))
    assert (both, errors) == (0, 0), proc.stdout
    assert held >= 150  # someone held it in every trial


def _holder(folder):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_holder_is_named_and_a_killed_one_releases_the_lock(tmp_path):
    holder = _holder(tmp_path)
    try:
        with pytest.raises(RunError, match=rf"in use by another run \(host \S+ PID {holder.pid}; lock file "):
            with run_lock(str(tmp_path)):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with run_lock(str(tmp_path)):  # the kernel dropped the dead process's lock: nothing stale to take over
        assert (tmp_path / LOCK_NAME).read_text() == f"host {socket.gethostname()} PID {os.getpid()}\n"
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_lock_file_naming_a_live_pid_is_not_a_lock(tmp_path):
    """A PID in the file means nothing by itself: a live process that reused a dead run's PID (here our
    parent's), or a PID of another host, does not hold the folder."""
    (tmp_path / LOCK_NAME).write_text(f"{os.getppid()}\n")  # as the PID lock wrote it
    started = time.monotonic()
    with run_lock(str(tmp_path)):
        pass
    assert time.monotonic() - started < 5


def test_taking_the_lock_removes_staging_folders_a_killed_run_left(tmp_path):
    (tmp_path / ".staging-checkpoint-4.root" / "checkpoint-4").mkdir(parents=True)
    (tmp_path / ".staging-final").mkdir()
    with run_lock(str(tmp_path), log=lambda *_: None):
        assert sorted(os.listdir(tmp_path)) == [LOCK_NAME]
