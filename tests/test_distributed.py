"""Rollouts in every process (gloo, 2 CPU processes) equal one process given both processes' prompts.

Two runs of tests/distributed_step.py, each launched with torchrun (accelerate reads its environment and
sets up gloo on CPU), 2 steps each:

* 2 processes x 2 prompts (K=2): every process rolls out its own prompts;
* 1 process x 4 prompts, rolled out in 2 chunks of 2 prompts (sampling.generation_batch_size=4), which
  are the chunks and seeds the 2 processes use (training/distributed.py).

The same sampler order gives the same 4 prompts per step, so the rollouts are token-identical, and the
gradient DDP applies (the average of the processes' scaled gradients) must equal the single process's,
also when each process splits its step into micro-batches (train.micro_batch_tokens). Equality is to
float tolerance, not bitwise: the sums run in another order (partial sums all-reduced); measured here
the largest difference is 7.5e-9 on gradients of magnitude up to 0.15.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _launch(out: Path, n_processes: int, prompts: int, steps: int, generation_batch: str = "null",
            micro_batch_tokens: str = "null", pad: bool = False) -> list[dict]:
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n_processes),
           "--standalone", str(ROOT / "tests" / "distributed_step.py"), str(out), str(prompts), str(steps),
           generation_batch, micro_batch_tokens, "1" if pad else "0"]
    # one thread per process: torchrun's default with several processes, set for the single one too
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)
    # the ranks print concurrently (their lines may run together): each result line is matched on its own
    lines = re.findall(rf"RANK (\d)/{n_processes} backend=(\w+) step=(\d+) params=([0-9a-f]{{64}})", proc.stdout)
    assert proc.returncode == 0 and len(lines) == n_processes, proc.stdout[-3000:] + proc.stderr[-3000:]
    if n_processes > 1:  # train.prompts_per_step is per process: the run says what a step is
        assert f"= {n_processes} processes x {prompts} prompts (per process)" in proc.stderr, proc.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(n_processes)]


def _assert_single_process_step(ranks: list[dict], single: dict) -> None:
    assert [r["backend"] for r in ranks] == ["gloo", "gloo"]
    assert all(len(r["steps"]) == 2 for r in ranks) and len(single["steps"]) == 2
    shares = []
    for step in range(2):
        r0, r1, one = ranks[0]["steps"][step], ranks[1]["steps"][step], single["steps"][step]
        # each process rolled out its own prompts: different ones, together the single process's step
        assert not set(r0["task_ids"]) & set(r1["task_ids"]), (r0["task_ids"], r1["task_ids"])
        assert r0["task_ids"] + r1["task_ids"] == one["task_ids"]
        assert r0["completions"] + r1["completions"] == one["completions"]  # same chunks, same seeds
        assert r0["anchor"] + r1["anchor"] == one["anchor"]  # one draw for the step, split by process
        # DDP kept the replicas bit-identical (same gradient after the all-reduce, same update)
        assert torch.equal(r0["grad"], r1["grad"])
        assert r0["params_after"] == r1["params_after"]
        # the update is the single process's: mean_r (N D_r / D) grad L_r = grad L
        torch.testing.assert_close(r0["grad"], one["grad"], rtol=1e-5, atol=1e-7)
        # the step-global normalisers are what made it so: s_r = N * D_r / D for RL tokens and SFT N_sup
        n0, n1 = r0["n_tokens"], r1["n_tokens"]
        assert n0 + n1 == one["n_tokens"]
        assert r0["rl_loss_scale"] == pytest.approx(2 * n0 / (n0 + n1))
        assert r1["sft_loss_scale"] == pytest.approx(2 * r1["n_sft"] / one["n_sft"])
        shares.append((n0, n1))
    assert any(n0 != n1 for n0, n1 in shares)  # unequal shares, where a per-process mean would be wrong
    # rank 0 logs the step, not its share: the loss (TRL averages it over processes), and our metrics
    # averaged over processes, where the scaled losses average back to the step's and the reward mean
    # over equal shares is the step's
    for key in ("loss", "loss/rl", "loss/sft", "reward"):
        got, want = [h[key] for h in ranks[0]["logs"]], [h[key] for h in single["logs"]]
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6), key


@pytest.mark.slow
def test_rollouts_in_every_process_equal_one_process_step(tmp_path):
    (single,) = _launch(tmp_path / "one", 1, prompts=4, steps=2, generation_batch="4")
    _assert_single_process_step(_launch(tmp_path / "two", 2, prompts=2, steps=2), single)
    # and with each process's step split into micro-batches (their scales times the process's)
    ranks = _launch(tmp_path / "two_micro", 2, prompts=2, steps=2, micro_batch_tokens="96")
    assert all(h["micro_batches"] > 1 for h in ranks[0]["logs"])
    _assert_single_process_step(ranks, single)
    # With one packed forward per part (as on GPUs), the ranks' part counts differ in some step (rank 0 logs
    # their mean), which would leave ZeRO-3 / FSDP waiting on a weight all-gather forever. Padded to the
    # largest count (as under sharding), every rank runs as many forwards, the filler parts add exactly
    # nothing, and the step is still the single process's.
    padded = _launch(tmp_path / "two_micro_padded", 2, prompts=2, steps=2, micro_batch_tokens="3000", pad=True)
    assert any(h["micro_batches"] != int(h["micro_batches"]) for h in padded[0]["logs"])
    assert [s["forwards"] for s in padded[0]["steps"]] == [s["forwards"] for s in padded[1]["steps"]]
    _assert_single_process_step(padded, single)
