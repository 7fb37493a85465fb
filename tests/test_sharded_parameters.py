"""Rollouts under sharded parameters decode with an unsharded copy of the gathered weights, and micro-batch
counts are padded to the largest over processes (training/distributed.py, items 4-5)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_fsdp2_shards_gather_into_an_unsharded_copy(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           str(ROOT / "tests" / "sharded_parameters.py"), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = re.findall(r"RANK (\d) class=(\w+) local=\((\d+), 32\) full=\((\d+), 32\) same=(True|False) logits=(True|False) "
                       r"padded=(\d+) once=(True|False) refreshed=(True|False)",
                       proc.stdout)
    assert proc.returncode == 0 and len(lines) == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    for _, cls, local, full, same, logits, padded, once, refreshed in lines:
        assert cls == "LlamaForCausalLM"  # the wrapped class, not FSDP's generated FSDPLlamaForCausalLM
        assert int(local) < int(full)  # each process held a shard of the embedding ...
        assert same == "True" and logits == "True"  # ... and the copy holds the whole model
        assert padded == "5"  # the largest part count over the processes
        # the rollout copy is built once and holds the trained weights after a step (issue 30 item 8)
        assert once == "True" and refreshed == "True"


def _accelerator(kind, stage=None, n=2):
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    plugin = SimpleNamespace(zero_stage=stage)
    return SimpleNamespace(num_processes=n, distributed_type=getattr(DistributedType, kind),
                           state=SimpleNamespace(deepspeed_plugin=plugin))


def test_which_launches_shard_and_refuse_a_forward_per_group():
    from pact_cotrain.errors import UserError
    from pact_cotrain.training import distributed

    assert distributed.sharding(_accelerator("MULTI_GPU")) is None  # DDP: one all-reduce, in the last backward
    assert distributed.sharding(_accelerator("DEEPSPEED", 1)) is None
    assert distributed.sharding(_accelerator("DEEPSPEED", 2)) == "zero2"
    assert distributed.sharding(_accelerator("DEEPSPEED", 3)) == "zero3"
    assert distributed.sharding(_accelerator("FSDP")) == "fsdp"
    assert distributed.sharding(_accelerator("FSDP", n=1)) is None
    assert distributed.padded_count(_accelerator("MULTI_GPU"), 3) == 3  # no all-reduce where none is needed
    distributed.check_scoring_layout(_accelerator("DEEPSPEED", 2), forward_per_group=True)  # ZeRO-2: full weights
    with pytest.raises(UserError, match="forward_per_group"):
        distributed.check_scoring_layout(_accelerator("FSDP"), forward_per_group=True)
    distributed.check_scoring_layout(_accelerator("FSDP"), forward_per_group=False)
