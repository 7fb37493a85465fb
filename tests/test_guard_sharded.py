"""The non-finite guard under sharding (issue 30 item 3), on 2 gloo processes (tests/guard_sharded.py).

FSDP2: a NaN in ONE process's gradient shard (then parameter shard) is found by BOTH processes, so they stop
together. DeepSpeed ZeRO-2/3 (where deepspeed imports and initialises on CPU processes): `p.grad` is None
and the engine steps inside backward; a non-finite gradient makes DeepSpeed skip the step, and the guard
stops the run on both processes with the parameters still finite. Under DDP and one process the guard's
checks are tests/test_robustness.py's (a trainer run)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_guard_finds_one_process_non_finite_shard_on_every_process(tmp_path):
    # PACT_DEEPSPEED_PYTHON: a Python with deepspeed installed as well (this venv has none), e.g. a venv made
    # with `pip install "pact-cotrain[deepspeed]"`; its first run JIT-compiles DeepSpeed's CPU comm op (minutes)
    python = os.environ.get("PACT_DEEPSPEED_PYTHON", sys.executable)
    cmd = [python, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           str(ROOT / "tests" / "guard_sharded.py"), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    name = ranks[0]["fsdp_name"]
    assert ranks[0]["fsdp_clean_grad"] is None and ranks[1]["fsdp_clean_grad"] is None
    assert ranks[0]["fsdp_local_grad"] is None and ranks[1]["fsdp_local_grad"] == name  # only rank 1's shard
    assert ranks[1]["fsdp_agreed_grad"] == name and ranks[0]["fsdp_agreed_grad"] is not None  # both stop
    assert ranks[0]["fsdp_agreed_param"] is not None and ranks[1]["fsdp_agreed_param"] == name
    if "zero2" not in ranks[0]:
        pytest.skip(f"FSDP2 checked; DeepSpeed {ranks[0].get('deepspeed')}")
    for stage in ("zero2", "zero3"):
        for rank in ranks:
            ok, bad = rank[stage]["outcomes"]
            assert ok == "ok"
            assert "DeepSpeed skipped the optimiser step" in bad
            assert rank[stage]["params_finite"]
