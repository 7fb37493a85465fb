"""Issue 16, training side: nothing lost, nothing silently wrong. One test (or more) per numbered case
of the issue; `kill -9` instants are simulated with the PACT_TEST_KILL_AT hook or a raising callback."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from pact_cotrain import cli
from pact_cotrain.recipes import train as train_recipe
from pact_cotrain.config import load_config
from pact_cotrain.errors import UserError
from pact_cotrain.recipes.train import build_trainer, latest_checkpoint, run_train
from pact_cotrain.testing import tiny_llama, tiny_tokenizer
from pact_cotrain.training.checkpoints import KILL_ENV, RunError, SimulatedKill, atomic_write_dir, missing_files

# SFT on toolworld traces: no rollouts (fast), yet the weights depend on which tasks each step sees.
SMALL = ["train.k=2", "train.prompts_per_step=2", "data.n_train=8", "sampling.max_new_tokens_per_turn=8",
         "sampling.max_completion_tokens=32", "sampling.max_turns=2", "train.report_to=[]",
         "train.disable_tqdm=true", "train.learning_rate=1e-2", "train.gradient_checkpointing=false"]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def cfg_args(tmp, *extra, name="run"):
    return SMALL + [f"output_dir={tmp}/{name}", *extra]


def weights(path) -> dict:
    return load_file(os.path.join(path, "model.safetensors"))


def assert_same_weights(model, other):
    for (name, a), b in zip(model.named_parameters(), other.parameters()):
        assert torch.equal(a, b), name


def step_of(path) -> int:
    return json.loads((path / "trainer_state.json").read_text())["global_step"]


class StopAt(TrainerCallback):
    """Stops the run as a kill would, at the end of `step` (before that step's checkpoint)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise SimulatedKill(f"step {self.step}")


# ---------------------------------------------------------------- 1. NaN weights are checkpointed


def test_non_finite_gradient_stops_before_the_step_and_nothing_non_finite_is_saved(tmp_path, tok):
    from pact_cotrain.training.guards import NonFiniteUpdateError

    model = tiny_llama(tok)
    trainer = build_trainer(load_config("sft", cfg_args(tmp_path, "train.max_steps=3", "train.save_steps=1")),
                            model=model, tokenizer=tok)
    # finite loss, non-finite gradient at step 1 (as with learning_rate=100 in the issue)
    model.model.norm.weight.register_hook(
        lambda g: g * float("nan") if trainer.state.global_step == 1 else g)
    with pytest.raises(NonFiniteUpdateError, match=r"non-finite gradient of .* at step 2 \(counted from 1\) .*toolworld_train.*not applied"):
        trainer.train()
    saved = weights(tmp_path / "run" / "checkpoint-1")
    assert not (tmp_path / "run" / "checkpoint-2").exists()
    assert all(torch.isfinite(t).all() for t in saved.values())
    for name, param in model.named_parameters():  # the step was not applied
        key = name if name in saved else name.replace("lm_head", "model.embed_tokens")
        assert torch.equal(param.detach(), saved[key]), name


def test_non_finite_parameter_after_a_step_stops_the_run(tmp_path, tok):
    from pact_cotrain.training.guards import NonFiniteGuard, NonFiniteUpdateError

    class FakeTrainer:
        def current_task_ids(self):
            return ["task_a", "task_b"]

    model = tiny_llama(tok)
    with torch.no_grad():
        model.model.norm.weight[0] = float("inf")
    state = type("S", (), {"global_step": 5})()
    with pytest.raises(NonFiniteUpdateError, match=r"model.norm.weight after the optimiser step at step 6 \(counted from 1\) .*task_a"):
        NonFiniteGuard(FakeTrainer()).on_optimizer_step(None, state, None, model=model)


# ---------------------------------------------------------------- 2. exact resume in any epoch


@pytest.mark.parametrize("resume_step", [6, 4])  # mid second epoch; the epoch boundary (4 steps per epoch)
def test_resume_in_the_second_epoch_is_bit_exact(tmp_path, tok, resume_step):
    args = ["train.max_steps=7", "train.save_steps=2"]
    straight = tiny_llama(tok)
    trainer = build_trainer(load_config("sft", cfg_args(tmp_path, *args, name="a")), model=straight, tokenizer=tok)
    trainer.train()

    first = tiny_llama(tok)
    trainer = build_trainer(load_config("sft", cfg_args(tmp_path, *args, name="b")), model=first, tokenizer=tok)
    trainer.callback_handler.add_callback(StopAt(resume_step + 1))
    with pytest.raises(SimulatedKill):
        trainer.train()
    resumed = tiny_llama(tok, seed=123)  # a different init: everything must come from the checkpoint
    assert run_train("sft", cfg_args(tmp_path, *args, name="b"), resume="latest", model=resumed, tokenizer=tok) == 0
    assert step_of(tmp_path / "b" / "final") == 7
    assert_same_weights(straight, resumed)


# ---------------------------------------------------------------- 3. --resume on a finished run


def test_resume_on_a_finished_run_says_so_and_does_not_train(tmp_path, tok, monkeypatch, capsys):
    args = cfg_args(tmp_path, "train.max_steps=2", "train.save_steps=1")
    assert run_train("sft", args, model=tiny_llama(tok), tokenizer=tok) == 0
    before = weights(tmp_path / "run" / "final")
    monkeypatch.setattr(train_recipe, "build_trainer", lambda *a, **k: pytest.fail("trained a finished run"))
    assert run_train("sft", args, resume="latest") == 0
    assert "is finished (step 2 of 2" in capsys.readouterr().out
    assert step_of(tmp_path / "run" / "final") == 2
    after = weights(tmp_path / "run" / "final")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_kill_while_final_is_written_leaves_no_final_and_resume_completes_it(tmp_path, tok, monkeypatch):
    args = cfg_args(tmp_path, "train.max_steps=2", "train.save_steps=1")
    monkeypatch.setenv(KILL_ENV, "staged:final")  # final/ fully written to staging, not yet renamed in
    model = tiny_llama(tok)
    with pytest.raises(SimulatedKill):
        run_train("sft", args, model=model, tokenizer=tok)
    assert not (tmp_path / "run" / "final").exists()
    monkeypatch.delenv(KILL_ENV)
    monkeypatch.setattr(train_recipe, "build_trainer", lambda *a, **k: pytest.fail("trained past max_steps"))
    assert run_train("sft", args, resume="latest") == 0
    assert step_of(tmp_path / "run" / "final") == 2
    final = weights(tmp_path / "run" / "final")
    for name, param in model.named_parameters():
        key = name if name in final else name.replace("lm_head", "model.embed_tokens")
        assert torch.equal(param.detach(), final[key])


# ---------------------------------------------------------------- 4. reusing an output_dir


def test_a_folder_holding_another_run_is_refused_unless_overwrite(tmp_path, tok, capsys):
    assert run_train("sft", cfg_args(tmp_path, "train.max_steps=3", "train.save_steps=1"),
                     model=tiny_llama(tok), tokenizer=tok) == 0
    again = cfg_args(tmp_path, "train.max_steps=2", "train.save_steps=1", "seed=1")
    with pytest.raises(RunError, match=r"already holds another run \(checkpoint-1, checkpoint-2, checkpoint-3, final"):
        run_train("sft", again, model=tiny_llama(tok), tokenizer=tok)
    assert run_train("sft", again, overwrite=True, model=tiny_llama(tok), tokenizer=tok) == 0
    names = sorted(os.listdir(tmp_path / "run"))
    assert "checkpoint-3" not in names and "checkpoint-2" in names  # no stale checkpoint of the old run
    assert step_of(tmp_path / "run" / "final") == 2


def test_cli_refusal_is_one_line_and_overwrite_flag_exists(tmp_path, capsys):
    (tmp_path / "run" / "checkpoint-4").mkdir(parents=True)
    code = cli.main(["train", "--config", "sft", *cfg_args(tmp_path, "train.max_steps=1")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--overwrite" in err
    assert cli.build_parser().parse_args(["train", "--config", "sft", "--overwrite"]).overwrite


# ---------------------------------------------------------------- 5. a half-replaced checkpoint


def _full_run(tmp_path, tok, name="run"):
    args = cfg_args(tmp_path, "train.max_steps=4", "train.save_steps=2", name=name)
    trainer = build_trainer(load_config("sft", args), model=tiny_llama(tok), tokenizer=tok)
    trainer.train()
    return args


def test_an_incomplete_checkpoint_is_skipped_for_the_previous_complete_one(tmp_path, tok, capsys):
    _full_run(tmp_path, tok)
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):  # what the old rmtree+rename left
        (tmp_path / "run" / "checkpoint-4" / name).unlink()
    assert latest_checkpoint(str(tmp_path / "run")) == str(tmp_path / "run" / "checkpoint-2")
    assert "skipping incomplete checkpoint" in capsys.readouterr().out
    with pytest.raises(RunError, match="checkpoint-4 is incomplete .*optimizer.pt"):
        run_train("sft", cfg_args(tmp_path, "train.max_steps=4"), resume=str(tmp_path / "run" / "checkpoint-4"))


def test_a_kill_between_the_renames_of_a_replacement_keeps_the_old_copy(tmp_path, monkeypatch):
    target = tmp_path / "checkpoint-2"
    atomic_write_dir(str(target), lambda d: (os.makedirs(d), open(os.path.join(d, "v"), "w").write("old")))
    monkeypatch.setenv(KILL_ENV, "replace:checkpoint-2")  # the old copy is set aside, the new one not yet moved in
    with pytest.raises(SimulatedKill):
        atomic_write_dir(str(target), lambda d: (os.makedirs(d), open(os.path.join(d, "v"), "w").write("new")))
    assert not target.exists()
    from pact_cotrain.training.checkpoints import recover

    recover(str(tmp_path))  # what resume does first
    assert (target / "v").read_text() == "old"
    monkeypatch.delenv(KILL_ENV)
    atomic_write_dir(str(target), lambda d: (os.makedirs(d), open(os.path.join(d, "v"), "w").write("new")))
    assert (target / "v").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["checkpoint-2"]


def test_a_kill_while_a_checkpoint_is_staged_resumes_exactly(tmp_path, tok, monkeypatch):
    args = cfg_args(tmp_path, "train.max_steps=4", "train.save_steps=2", name="a")
    straight = tiny_llama(tok)
    build_trainer(load_config("sft", args), model=straight, tokenizer=tok).train()
    args = cfg_args(tmp_path, "train.max_steps=4", "train.save_steps=2", name="b")
    trainer = build_trainer(load_config("sft", args), model=tiny_llama(tok), tokenizer=tok)
    monkeypatch.setenv(KILL_ENV, "staged:checkpoint-4")
    with pytest.raises(SimulatedKill):
        trainer.train()
    monkeypatch.delenv(KILL_ENV)
    assert not (tmp_path / "b" / "checkpoint-4").exists()
    resumed = tiny_llama(tok, seed=7)
    run_train("sft", args, resume="latest", model=resumed, tokenizer=tok)
    assert_same_weights(straight, resumed)


# ---------------------------------------------------------------- 6. one run per folder


def test_a_live_lock_is_refused_and_a_killed_holders_lock_is_free(tmp_path, tok):
    """The lock is flock (tests/test_run_lock.py): held by a live process it refuses, naming host and PID;
    its process killed, the kernel has released it and the next run takes it."""
    from pact_cotrain.training.run_dir import LOCK_NAME

    out = tmp_path / "run"
    out.mkdir()
    hold = ("import sys, time\nfrom pact_cotrain.training.run_dir import run_lock\n"
            "with run_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n")
    other = subprocess.Popen([sys.executable, "-c", hold, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        with pytest.raises(RunError, match=f"in use by another run \\(host .* PID {other.pid}"):
            run_train("sft", cfg_args(tmp_path, "train.max_steps=1", "train.save_steps=0"),
                      model=tiny_llama(tok), tokenizer=tok)
    finally:
        other.kill()
        other.wait()
    assert run_train("sft", cfg_args(tmp_path, "train.max_steps=1", "train.save_steps=0"),
                     model=tiny_llama(tok), tokenizer=tok) == 0
    assert not (out / LOCK_NAME).exists()


# ---------------------------------------------------------------- 7. empty data


def test_no_training_task_is_an_error(tmp_path, tok, capsys):
    # data.n_train=0 is refused with the config's values (issue 31): an integer >= 1
    with pytest.raises(UserError, match="data.n_train=0 is not allowed"):
        run_train("sft", cfg_args(tmp_path, "data.n_train=0", "train.max_steps=1"), model=tiny_llama(tok),
                  tokenizer=tok)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code = cli.main(["train", "--config", "sft", *cfg_args(tmp_path, "data.source=file", f"data.path={empty}",
                                                          "train.max_steps=1", name="e")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "empty.jsonl" in err
    assert not (tmp_path / "e" / "final").exists()


# ---------------------------------------------------------------- 8. an unwritable folder


def test_an_unwritable_output_dir_fails_before_the_first_step(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("")
    monkeypatch.setattr(train_recipe, "build_trainer", lambda *a, **k: pytest.fail("trained before the check"))
    with pytest.raises(RunError, match="a_file/run is not writable"):
        run_train("sft", SMALL + [f"output_dir={tmp_path}/a_file/run", "train.save_steps=0"])


def test_a_read_only_output_dir_fails_before_the_first_step(tmp_path, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)  # root ignores chmod: simulate read-only
    monkeypatch.setattr(train_recipe, "build_trainer", lambda *a, **k: pytest.fail("trained before the check"))
    with pytest.raises(RunError, match="is not writable: Permission denied"):
        run_train("sft", SMALL + [f"output_dir={tmp_path}/ro", "train.save_steps=0"])


# ---------------------------------------------------------------- 9. prompt length (row size: data helper)


def _tasks_file(tmp_path, long_words: int):
    from pact_cotrain.data.trace_format import write_tasks
    from pact_cotrain.envs.toolworld import generate_tasks

    tasks = generate_tasks(6, seed=0, split="train")
    tasks[3].messages[-1]["content"] += " " + " ".join(f"w{i}" for i in range(long_words))
    path = tmp_path / "tasks.jsonl"
    write_tasks(path, tasks)
    return path, tasks[3].id


def test_an_overlong_prompt_is_reported_with_path_line_and_refused(tmp_path, tok, capsys):
    path, long_id = _tasks_file(tmp_path, 3000)  # beyond the tiny model's 4,096-token context
    args = cfg_args(tmp_path, "data.source=file", f"data.path={path}", "train.max_steps=1", "train.save_steps=0")
    with pytest.raises(RunError, match=f"tasks.jsonl:4: 1 of 6 tasks have a prompt over 4064 tokens .*{long_id}"):
        run_train("sft", args, model=tiny_llama(tok), tokenizer=tok)
    assert f"tasks.jsonl:4: task {long_id}: prompt of" in capsys.readouterr().out
    trainer = build_trainer(load_config("sft", args + ["train.drop_overlong=true"]), model=tiny_llama(tok),
                            tokenizer=tok)
    assert long_id not in [t.id for t in trainer.tasks] and len(trainer.tasks) == 5
    build_trainer(load_config("sft", args + ["train.max_overlong_prompts=1"]), model=tiny_llama(tok), tokenizer=tok)


def test_max_prompt_tokens_is_configurable(tmp_path, tok):
    with pytest.raises(RunError, match="8 of 8 tasks have a prompt over 10 tokens"):
        build_trainer(load_config("sft", cfg_args(tmp_path, "train.max_prompt_tokens=10")), model=tiny_llama(tok),
                      tokenizer=tok)


# ---------------------------------------------------------------- 11. messages (full disk, stray names, resume)


def test_a_full_disk_while_saving_names_the_folder_and_keeps_earlier_checkpoints(tmp_path, tok, monkeypatch):
    trainer = build_trainer(load_config("sft", cfg_args(tmp_path, "train.max_steps=2", "train.save_steps=1")),
                            model=tiny_llama(tok), tokenizer=tok)
    real_save = torch.save

    def full_at_step_two(obj, f, *args, **kwargs):
        if "checkpoint-2" in str(f):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_at_step_two)
    with pytest.raises(RunError, match=f"no space left on the device while saving checkpoint-2 in {tmp_path}/run"):
        trainer.train()
    assert sorted(os.listdir(tmp_path / "run")) == ["checkpoint-1"]
    assert not missing_files(str(tmp_path / "run" / "checkpoint-1"))


def test_stray_names_missing_checkpoints_and_the_resume_line(tmp_path, tok, capsys):
    args = _full_run(tmp_path, tok)
    shutil.copytree(tmp_path / "run" / "checkpoint-4", tmp_path / "run" / "checkpoint-6.bak")
    shutil.rmtree(tmp_path / "run" / "checkpoint-4")
    assert latest_checkpoint(str(tmp_path / "run")) == str(tmp_path / "run" / "checkpoint-2")
    assert run_train("sft", args, resume="latest", model=tiny_llama(tok), tokenizer=tok) == 0
    assert f"resuming from {tmp_path}/run/checkpoint-2 (step 2)" in capsys.readouterr().out
    code = cli.main(["train", "--config", "sft", *cfg_args(tmp_path, name="nothing"), "--resume"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.endswith(f"error: --resume: no complete checkpoint-* directory in {tmp_path}/nothing")
    code = cli.main(["train", "--config", "sft", *args, "train.max_steps=6", f"--resume={tmp_path}/run/checkpoint-9"])
    assert code == 2 and "checkpoint-9 is incomplete (missing the folder itself" in capsys.readouterr().err
