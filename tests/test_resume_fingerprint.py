"""Issue 31, case 5: a checkpoint records what decides its run (data, method, seed, batch shape, model);
`--resume` under another config is refused in one line naming the keys, unless `--resume-anyway`."""

from __future__ import annotations

import json
import shutil

import pytest

from pact_cotrain import cli
from pact_cotrain.config import load_config
from pact_cotrain.recipes.train import build_trainer, run_train
from pact_cotrain.testing import tiny_llama, tiny_tokenizer
from pact_cotrain.training.checkpoints import SimulatedKill
from tests.test_robustness import StopAt, cfg_args, step_of


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def tasks_file(tmp_path_factory):
    from pact_cotrain.data.trace_format import write_tasks
    from pact_cotrain.envs.toolworld import generate_tasks

    path = tmp_path_factory.mktemp("data") / "tasks.jsonl"
    write_tasks(path, generate_tasks(8, seed=0, split="train"))
    return path


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, tok, tasks_file):
    """A run on a task file killed at step 3, leaving checkpoint-2; each test copies it."""
    root = tmp_path_factory.mktemp("fp")
    args = cfg_args(root, "train.max_steps=4", "train.save_steps=2", "data.source=file", f"data.path={tasks_file}")
    trainer = build_trainer(load_config("sft", args), model=tiny_llama(tok), tokenizer=tok)
    trainer.callback_handler.add_callback(StopAt(3))
    with pytest.raises(SimulatedKill):
        trainer.train()
    return root / "run", args


def _copy(interrupted, tmp_path):
    out, args = interrupted
    shutil.copytree(out, tmp_path / "run")
    return [a for a in args if not a.startswith("output_dir=")] + [f"output_dir={tmp_path}/run"]


def test_the_checkpoint_records_the_fingerprint(interrupted, tasks_file):
    from pact_cotrain.training.fingerprint import FILE_NAME, run_fingerprint

    out, args = interrupted
    recorded = json.loads((out / "checkpoint-2" / FILE_NAME).read_text())
    assert recorded == run_fingerprint(load_config("sft", args))
    assert recorded["data"].startswith("sha256:") and recorded["train.prompts_per_step"] == 2
    assert recorded["method.name"] == "sft" and recorded["seed"] == 0 and recorded["processes"] == 1


@pytest.mark.parametrize("change, named", [
    (["train.prompts_per_step=4"], ["train.prompts_per_step (2 there, 4 now)"]),
    (["seed=1", "method.name=grpo"], ["seed (0 there, 1 now)", "method.name (sft there, grpo now)"]),
    (["model=other-model"], ["model (smollm2-135m-instruct there, other-model now)"]),
])
def test_resume_under_another_config_is_refused_naming_the_keys(interrupted, tmp_path, capsys, change, named):
    args = _copy(interrupted, tmp_path)
    code = cli.main(["train", "--config", "sft", *args, *change, "--resume"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "was written by another run: " in err and "--resume-anyway" in err
    for key in named:
        assert key in err


def test_changed_data_is_refused(interrupted, tmp_path, tasks_file, capsys):
    args = _copy(interrupted, tmp_path)
    changed = tmp_path / "tasks.jsonl"
    changed.write_text("".join(tasks_file.read_text().splitlines(keepends=True)[:7]))  # one row less
    code = cli.main(["train", "--config", "sft", *args, f"data.path={changed}", "--resume"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "data (sha256:" in err and " now)" in err


def test_resume_anyway_continues_with_a_note(interrupted, tmp_path, tok, capsys):
    args = _copy(interrupted, tmp_path) + ["seed=1", "train.prompts_per_step=4"]
    assert cli.build_parser().parse_args(["train", "--config", "sft", "--resume-anyway"]).resume_anyway
    assert run_train("sft", args, resume="latest", resume_anyway=True, model=tiny_llama(tok), tokenizer=tok) == 0
    assert "--resume-anyway: continuing" in capsys.readouterr().out
    assert step_of(tmp_path / "run" / "final") == 4


def test_same_config_resumes_and_an_old_checkpoint_is_not_checked(interrupted, tmp_path, tok, capsys):
    args = _copy(interrupted, tmp_path)
    (tmp_path / "run" / "checkpoint-2" / "run_fingerprint.json").unlink()  # as written before fingerprints
    assert run_train("sft", args, resume="latest", model=tiny_llama(tok), tokenizer=tok) == 0
    assert "records no run fingerprint" in capsys.readouterr().out
    assert step_of(tmp_path / "run" / "final") == 4
