"""Issue 30, item 2: checkpoint completeness knows the DDP, DeepSpeed (ZeRO-2/3) and FSDP layouts, so
`--resume` finds a checkpoint of each (training/checkpoint_layout.py).

FSDP: the weight and optimiser files are written by accelerate's own `save_fsdp_model` /
`save_fsdp_optimizer` (what the Trainer's `_save_checkpoint` calls under FSDP) from an FSDP2-sharded model
on 2 gloo processes (tests/fsdp_checkpoint.py). The Trainer's other files (trainer_state.json,
scheduler.pt, the RNG states, our sampler_state.pt) come from a real one-process checkpoint; accelerate
does not shard on CPU, so the Trainer itself cannot run under FSDP here.

DeepSpeed: not installed here, and its ZeRO engine needs an accelerator, so the `global_step<N>/` folder
is built from the names DeepSpeed's engine writes (`_get_ckpt_name`, `_get_zero_ckpt_name`:
`mp_rank_00_model_states.pt`, `bf16_zero_pp_rank_<r>_mp_rank_00_optim_states.pt`, under ZeRO-3
`zero_pp_rank_<r>_mp_rank_00_model_states.pt`) and the `latest` file naming it, each a real torch file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pact_cotrain.config import load_config
from pact_cotrain.recipes.train import build_trainer
from pact_cotrain.testing import tiny_llama, tiny_tokenizer
from pact_cotrain.training.checkpoints import latest_complete, missing_files
from tests.test_robustness import cfg_args

ROOT = Path(__file__).resolve().parents[1]
TRAINER_FILES = ("trainer_state.json", "sampler_state.pt", "run_fingerprint.json")


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """A real one-process run's checkpoint-2 and its config."""
    root = tmp_path_factory.mktemp("single")
    tok = tiny_tokenizer()
    cfg = load_config("sft", cfg_args(root, "train.max_steps=2", "train.save_steps=2"))
    build_trainer(cfg, model=tiny_llama(tok), tokenizer=tok).train()
    return root / "run" / "checkpoint-2", cfg


def _run_with(single, tmp_path, build) -> Path:
    """output_dir holding the one-process checkpoint-2 and a checkpoint-4 of another layout."""
    checkpoint, _ = single
    out = tmp_path / "run"
    shutil.copytree(checkpoint, out / "checkpoint-2")
    newest = out / "checkpoint-4"
    newest.mkdir()
    for name in TRAINER_FILES:
        if (checkpoint / name).exists():  # run_fingerprint.json: not written by older versions
            shutil.copy(checkpoint / name, newest / name)
    for rank in (0, 1):  # one RNG state per process, as the Trainer writes under several processes
        shutil.copy(checkpoint / "rng_state.pth", newest / f"rng_state_{rank}.pth")
    build(newest, checkpoint)
    return out


def _assert_resumes_from_the_newest(out, cfg):
    newest = str(out / "checkpoint-4")
    assert missing_files(newest) == []
    assert latest_complete(str(out)) == newest
    from pact_cotrain.training.checkpoint_layout import unloadable
    from pact_cotrain.training.resume import resume_checkpoint

    assert unloadable(newest) is None
    assert resume_checkpoint(str(out), "latest", cfg) == newest


def test_ddp_layout(single, tmp_path):
    def ddp(newest, checkpoint):
        for name in ("model.safetensors", "config.json", "optimizer.pt", "scheduler.pt"):
            shutil.copy(checkpoint / name, newest / name)

    out = _run_with(single, tmp_path, ddp)
    _assert_resumes_from_the_newest(out, single[1])
    (out / "checkpoint-4" / "optimizer.pt").unlink()
    assert missing_files(str(out / "checkpoint-4")) == ["optimizer.pt"]


def _deepspeed(stage):
    def build(newest, checkpoint):
        tag = newest / "global_step4"
        tag.mkdir()
        for rank in (0, 1):
            torch.save({"optimizer_state_dict": {"rank": rank}}, tag / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
            if stage == 3:
                torch.save({"module": None, "rank": rank}, tag / f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt")
        torch.save({"module": {} if stage == 3 else {"w": torch.zeros(2)}, "lr_scheduler": {}},
                   tag / "mp_rank_00_model_states.pt")
        (newest / "latest").write_text("global_step4")
        (newest / "zero_to_fp32.py").write_text("# DeepSpeed's weight recovery script\n")
        shutil.copy(checkpoint / "config.json", newest / "config.json")
        if stage == 2:  # ZeRO-2 (or ZeRO-3 gathering 16-bit weights on save): whole weights beside it
            shutil.copy(checkpoint / "model.safetensors", newest / "model.safetensors")
        # no optimizer.pt (DeepSpeed holds it), no scheduler.pt (DeepSpeed's scheduler, in its model states)

    return build


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_layout(single, tmp_path, stage):
    out = _run_with(single, tmp_path, _deepspeed(stage))
    _assert_resumes_from_the_newest(out, single[1])
    newest = out / "checkpoint-4"
    for name in os.listdir(newest / "global_step4"):
        if name.endswith("optim_states.pt"):
            (newest / "global_step4" / name).unlink()
    assert missing_files(str(newest)) == ["global_step4/*optim_states.pt"]
    assert latest_complete(str(out)) == str(out / "checkpoint-2")
    (newest / "latest").unlink()
    assert missing_files(str(newest))[0] == "latest (DeepSpeed's tag file)"


@pytest.fixture(scope="module", params=["FULL_STATE_DICT", "SHARDED_STATE_DICT"])
def fsdp_files(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fsdp") / request.param
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           str(ROOT / "tests" / "fsdp_checkpoint.py"), str(folder), request.param]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0 and proc.stdout.count(f"saved {request.param}") == 2, \
        proc.stdout[-3000:] + proc.stderr[-3000:]
    return request.param, folder


@pytest.mark.slow
def test_fsdp_layout_written_by_accelerate(single, tmp_path, fsdp_files):
    kind, files = fsdp_files

    def fsdp(newest, checkpoint):
        shutil.copytree(files, newest, dirs_exist_ok=True)
        shutil.copy(checkpoint / "scheduler.pt", newest / "scheduler.pt")
        if kind == "FULL_STATE_DICT":  # the Trainer's save_model also writes whole HF weights then
            for name in ("model.safetensors", "config.json"):
                shutil.copy(checkpoint / name, newest / name)

    out = _run_with(single, tmp_path, fsdp)
    _assert_resumes_from_the_newest(out, single[1])
    newest = out / "checkpoint-4"
    if kind == "FULL_STATE_DICT":
        data = (newest / "optimizer.bin").read_bytes()
        (newest / "optimizer.bin").write_bytes(data[: len(data) // 2])
        from pact_cotrain.training.checkpoint_layout import unloadable

        assert unloadable(str(newest)).startswith("optimizer.bin is truncated")
        (newest / "optimizer.bin").unlink()
    else:
        (newest / "optimizer_0" / ".metadata").unlink()  # DCP writes it last: without it, not finished
    assert missing_files(str(newest)) == ["optimizer.bin or optimizer_0/.metadata"]
    assert latest_complete(str(out)) == str(out / "checkpoint-2")
