"""Two processes whose batches differ in every way that changes their pass counts finish a step (issue 30
item 1): no process waits forever on a collective the other never calls.

tests/distributed_uneven.py runs on 2 gloo processes with micro-batch counts padded as under ZeRO and FSDP:
process 0 holds only untraced prompts (all anchored, no [x; h] pass, no SFT trace), process 1 only traced
ones with anchor_q = 0 (none anchored, every row scored after [x; h], SFT on its traces), so their
micro-batch counts differ; num_iterations 1 and then 2 (pi_old's passes in both contexts). Before the fix
process 0 skipped pi_old's [x; h] pass and with it the collective that pads its part count, and both
processes waited forever (here: gloo's collective timeout, 60 s, fails the launch). Last, the two processes
call the agreement at different sites, and both raise CollectiveMismatchError.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
WAIT_SECONDS = 60  # a collective waiting longer than this fails (the steps' own collectives wait seconds)


def _launch(out: Path, python: str = sys.executable, **env) -> list[dict]:
    cmd = [python, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           str(ROOT / "tests" / "distributed_uneven.py"), str(out), str(WAIT_SECONDS)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


@pytest.mark.slow
def test_uneven_processes_run_equal_pass_counts_and_finish(tmp_path):
    ranks = _launch(tmp_path)
    assert [r["sharding"] for r in ranks] == [None, None]  # DDP, padded as sharding pads (`_pad_parts`)
    _check(ranks)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["2", "3"])
def test_uneven_processes_finish_under_deepspeed_zero(tmp_path, stage):
    """The same under a real DeepSpeed ZeRO-2/3 engine on the 2 CPU processes (accelerate's DeepSpeed launch
    set by its environment variables): ZeRO-3 all-gathers weights in every forward. Needs a Python with
    deepspeed (PACT_DEEPSPEED_PYTHON); measured before the fix: ZeRO-3 hung at num_iterations 2 (gloo's
    60 s timeout; rank 1 in pi_old's [x; h] padding all-reduce, rank 0 already in the loss-scale one)."""
    python = os.environ.get("PACT_DEEPSPEED_PYTHON")
    if not python:
        pytest.skip("PACT_DEEPSPEED_PYTHON (a Python with deepspeed) not set")
    ranks = _launch(tmp_path, python, ACCELERATE_USE_DEEPSPEED="true", ACCELERATE_DEEPSPEED_ZERO_STAGE=stage)
    assert [r["sharding"] for r in ranks] == [f"zero{stage}"] * 2  # a real ZeRO engine, which pads by itself
    _check(ranks)


def _check(ranks: list[dict]) -> None:
    for iterations, steps in ((1, 1), (2, 2)):
        r0, r1 = ranks[0][iterations], ranks[1][iterations]
        assert len(r0) == len(r1) == steps
        # the batches are as uneven as intended: all anchored and no trace vs none anchored and traces
        assert all(s["anchored"] == 1.0 and s["sft_traces"] == 0 for s in r0)
        assert all(s["anchored"] == 0.0 and s["sft_traces"] > 0 for s in r1)
        assert all(a["parts"] != b["parts"] for a, b in zip(r0, r1))  # their own micro-batch counts differ
        # ...and every process ran as many training forwards and pi_old forwards in every step
        assert [(s["grad"], s["no_grad"]) for s in r0] == [(s["grad"], s["no_grad"]) for s in r1]
    # num_iterations 2: pi_old's passes in both contexts on every process, in the step that builds the batch
    first = ranks[0][2][0]
    assert first["no_grad"] >= 2 and ranks[0][2][1]["no_grad"] == 0
    # processes at different agreement sites: every one raises, naming where each is, instead of waiting
    for r in range(2):
        assert f"is at 'site of rank {r}' of step 7" in ranks[r]["mismatch"]
        assert "(7, 'here')" in ranks[r]["mismatch"] and "(7, 'elsewhere')" in ranks[r]["mismatch"]
