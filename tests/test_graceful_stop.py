"""Issue 31, case 8: SIGTERM or SIGINT finishes the step under way, writes its checkpoint, releases the
lock and exits non-zero with one line; a second signal exits at once. Each run is `pact train`'s own
path in a child process with a tiny model (tests/signal_run.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pact_cotrain.recipes.train import run_train
from pact_cotrain.testing import tiny_llama, tiny_tokenizer
from pact_cotrain.training.checkpoints import missing_files
from pact_cotrain.training.run_dir import run_lock
from tests.test_robustness import SMALL, step_of

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _run(mode: str, out: Path, max_steps: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tests" / "signal_run.py"), mode, str(out), str(max_steps)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT, env=ENV)


def _after_stop(out: Path) -> None:
    """Nothing left behind but checkpoints: no lock file, no staging folder, no final/; the lock is free."""
    assert not [n for n in os.listdir(out) if not n.startswith("checkpoint-")], os.listdir(out)
    with run_lock(str(out)):
        pass


def test_sigterm_saves_the_step_under_way_and_exits_143_with_one_line(tmp_path):
    out = tmp_path / "run"
    proc = _run("SIGTERM", out, 4)  # sent while step 3 runs
    assert proc.returncode == 143, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last == f"error: stopped by SIGTERM after step 3: saved {out}/checkpoint-3; continue with --resume"
    assert sorted(os.listdir(out)) == ["checkpoint-3"] and not missing_files(str(out / "checkpoint-3"))
    _after_stop(out)
    tok = tiny_tokenizer()
    args = SMALL + [f"output_dir={out}", "train.max_steps=4", "train.save_steps=0"]
    assert run_train("sft", args, resume="latest", model=tiny_llama(tok), tokenizer=tok) == 0
    assert step_of(out / "final") == 4


def test_a_second_signal_exits_at_once_without_a_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = _run("twice", out, 4)
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert "second SIGTERM: exiting at once" in proc.stderr
    assert not (out / "checkpoint-3").exists() and not (out / "final").exists()
    with run_lock(str(out)):  # the kernel released the lock with the process
        pass


@pytest.mark.slow
def test_sigint_from_outside_stops_at_the_end_of_the_step_under_way(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "signal_run.py"), "external", str(out), "40"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ENV)
    for line in proc.stdout:
        if line.startswith("began step 2"):
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err[-3000:]
    (saved,) = os.listdir(out)
    step = int(saved.split("-")[1])
    assert 2 <= step < 40 and not missing_files(str(out / saved))
    assert err.strip().splitlines()[-1].startswith(f"error: stopped by SIGINT after step {step}: saved ")
    _after_stop(out)
