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


@pytest.mark.slow
def test_uneven_processes_run_equal_pass_counts_and_finish(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           str(ROOT / "tests" / "distributed_uneven.py"), str(tmp_path), str(WAIT_SECONDS)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
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
