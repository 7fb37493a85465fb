"""Issue 31, cases 1 and 7: pruning counts only complete checkpoints and never removes the one just
written; a checkpoint whose files cannot be loaded is skipped for the previous complete one, in one line."""

from __future__ import annotations

import json
import os

import pytest

from pact_cotrain import cli
from pact_cotrain.config import load_config
from pact_cotrain.recipes.train import build_trainer, latest_checkpoint, run_train
from pact_cotrain.testing import tiny_llama, tiny_tokenizer
from pact_cotrain.training.checkpoints import RunError, SimulatedKill, missing_files, prune
from tests.test_robustness import StopAt, cfg_args, step_of

PLAIN_FILES = ("model.safetensors", "config.json", "optimizer.pt", "scheduler.pt", "rng_state.pth",
               "trainer_state.json", "sampler_state.pt")


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def fake_checkpoint(path, files=PLAIN_FILES):
    """A folder with a complete checkpoint's names (pruning looks at names only)."""
    path.mkdir(parents=True)
    for name in files:
        (path / name).write_text("")
    return path


# ---------------------------------------------------------------- case 1: pruning


def test_prune_counts_only_complete_checkpoints_and_keeps_the_one_just_written(tmp_path):
    for step in (2, 3, 4):
        fake_checkpoint(tmp_path / f"checkpoint-{step}")
    (tmp_path / "checkpoint-100").mkdir()  # empty, higher-numbered: resume skips it, so must pruning
    fake_checkpoint(tmp_path / "checkpoint-9", PLAIN_FILES[:3])  # incomplete: not counted, not touched
    prune(str(tmp_path), 2, just_written=str(tmp_path / "checkpoint-4"))
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-100", "checkpoint-3", "checkpoint-4", "checkpoint-9"]
    prune(str(tmp_path), 1, just_written=str(tmp_path / "checkpoint-4"))
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-100", "checkpoint-4", "checkpoint-9"]
    assert not missing_files(str(tmp_path / "checkpoint-4"))


def test_an_empty_higher_checkpoint_with_save_total_limit_1_loses_nothing(tmp_path, tok):
    """The issue's scenario: a run killed after checkpoint-2, an empty checkpoint-100 beside it, resumed
    with save_total_limit=1 and killed again at step 5: checkpoint-4 must be there to resume from."""
    args = cfg_args(tmp_path, "train.max_steps=6", "train.save_steps=1", "train.save_total_limit=1")
    out = tmp_path / "run"
    trainer = build_trainer(load_config("sft", args), model=tiny_llama(tok), tokenizer=tok)
    trainer.callback_handler.add_callback(StopAt(3))
    with pytest.raises(SimulatedKill):
        trainer.train()
    assert sorted(os.listdir(out)) == ["checkpoint-2"]
    (out / "checkpoint-100").mkdir()
    trainer = build_trainer(load_config("sft", args), model=tiny_llama(tok), tokenizer=tok)
    trainer.callback_handler.add_callback(StopAt(5))
    with pytest.raises(SimulatedKill):
        trainer.train(resume_from_checkpoint=latest_checkpoint(str(out)))
    assert sorted(os.listdir(out)) == ["checkpoint-100", "checkpoint-4"]
    assert latest_checkpoint(str(out)) == str(out / "checkpoint-4")
    assert run_train("sft", args, resume="latest", model=tiny_llama(tok), tokenizer=tok) == 0
    assert step_of(out / "final") == 6


# ---------------------------------------------------------------- case 7: a checkpoint that cannot be loaded


def _truncate(path, keep=1000):
    data = path.read_bytes()
    path.write_bytes(data[:keep])


CORRUPTIONS = {
    "model.safetensors": (lambda p: _truncate(p), "model.safetensors is truncated"),
    "optimizer.pt": (lambda p: _truncate(p), "optimizer.pt is truncated"),
    "trainer_state.json": (lambda p: p.write_text(""), "trainer_state.json is not valid JSON"),
}


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory, tok):
    """A 4-step run with checkpoint-2 and checkpoint-4, made once; each test copies it."""
    root = tmp_path_factory.mktemp("ckpt")
    args = cfg_args(root, "train.max_steps=4", "train.save_steps=2")
    build_trainer(load_config("sft", args), model=tiny_llama(tok), tokenizer=tok).train()
    return root / "run"


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_a_checkpoint_that_cannot_be_loaded_is_skipped_in_one_line(tmp_path, two_checkpoints, name, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(two_checkpoints, out)
    corrupt, reason = CORRUPTIONS[name]
    corrupt(out / "checkpoint-4" / name)
    assert not missing_files(str(out / "checkpoint-4"))  # every file is there: only loading would fail
    assert latest_checkpoint(str(out)) == str(out / "checkpoint-2")
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"checkpoint {out}/checkpoint-4: it cannot be loaded ({reason}" in lines[0]
    assert f"resuming from {out}/checkpoint-2 instead (--resume=PATH" in lines[0]


def test_resume_falls_back_past_a_truncated_checkpoint_and_refuses_it_named(tmp_path, two_checkpoints, tok, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(two_checkpoints, out)
    _truncate(out / "checkpoint-4" / "model.safetensors")
    args = cfg_args(tmp_path, "train.max_steps=4", "train.save_steps=2")
    code = cli.main(["train", "--config", "sft", *args, f"--resume={out}/checkpoint-4"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"{out}/checkpoint-4 cannot be loaded (model.safetensors is truncated" in err
    assert run_train("sft", args, resume="latest", model=tiny_llama(tok), tokenizer=tok) == 0
    printed = capsys.readouterr().out
    assert f"resuming from {out}/checkpoint-2 (step 2)" in printed
    assert step_of(out / "final") == 4


def test_a_weight_index_naming_a_truncated_shard_is_unloadable(tmp_path, two_checkpoints):
    from pact_cotrain.training.checkpoint_layout import unloadable

    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "model-00001-of-00001.safetensors").write_bytes(
        (two_checkpoints / "checkpoint-2" / "model.safetensors").read_bytes()[:500])
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"w": "model-00001-of-00001.safetensors"}}))
    assert unloadable(str(folder)).startswith("model-00001-of-00001.safetensors is truncated")
    assert unloadable(str(two_checkpoints / "checkpoint-2")) is None
