"""A 2-process CPU run (gloo): one step under DDP, and both ranks end with the same weights.

Launched with torchrun (`python -m torch.distributed.run`); accelerate reads its environment and sets
up gloo on CPU. On GPUs the same script runs under `accelerate launch --config_file configs/accelerate/...`."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_process_gloo_step(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           str(ROOT / "tests" / "distributed_step.py"), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    lines = re.findall(r"RANK (\d)/2 backend=(\w+) step=(\d+) checksum=([-\d.]+)", proc.stdout)
    assert proc.returncode == 0 and len(lines) == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert {l[0] for l in lines} == {"0", "1"}
    assert all(l[1] == "gloo" and l[2] == "1" for l in lines)
    assert lines[0][3] == lines[1][3]  # DDP kept the replicas identical after the update
