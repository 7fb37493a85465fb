"""Issue 31, cases 3, 4 and 9: values checked when a config loads, runs that would train nothing, and
the run messages that were tracebacks or wrong. Each refusal is one line naming where the value came
from, the key, the value and what is allowed, before the model loads."""

from __future__ import annotations

import errno
import os

import pytest

from pact_cotrain import cli
from pact_cotrain.config import builtin_configs, load_config
from pact_cotrain.errors import UserError
from pact_cotrain.recipes import common as common_recipe
from pact_cotrain.recipes import train as train_recipe
from pact_cotrain.testing import tiny_llama
from pact_cotrain.training.checkpoints import RunError, save_failure

from tests.test_robustness import SMALL, tok  # noqa: F401  (tok: a fixture)


@pytest.fixture
def no_model(monkeypatch):
    """A refusal must come before the model loads: loading one fails the test."""
    monkeypatch.setattr(common_recipe, "load_model_and_tokenizer",
                        lambda *a, **k: pytest.fail("the model was loaded before the refusal"))


def one_line(capsys, argv, *fragments, after_progress: bool = False) -> str:
    """The command fails with exit 2 and one line (after a run's progress lines when it trained)."""
    capsys.readouterr()
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, (code, err)
    assert "Traceback" not in err, err
    if after_progress:
        err = err.splitlines()[-1]
        assert err.startswith("error: "), err
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


# ---------------------------------------------------------------- 9. values: type and range, one line each

@pytest.mark.parametrize("override,allowed", [
    ("train.k=abc", "train.k takes an integer >= 1"),  # was "not all arguments converted"
    ("train.learning_rate=-1", "train.learning_rate takes a number > 0"),  # was a traceback
    ("train.prompts_per_step=0", "train.prompts_per_step takes null or an integer >= 1"),  # was a traceback
    ("train.max_steps=0", "train.max_steps takes an integer >= 1"),  # case 4: fell back to epochs
    ("train.max_steps=-5", "train.max_steps takes an integer >= 1"),
    ("train.max_steps=null", "train.max_steps takes an integer >= 1"),
    ("train.max_steps=2.5", "train.max_steps takes an integer >= 1"),
    ("method.anchor_q=1.5", "method.anchor_q takes a number >= 0 and <= 1"),
    ("train.rollout_backend=vlm", "train.rollout_backend takes one of: hf, vllm; did you mean `vllm`?"),
    ("sampling.temperature=0", "sampling.temperature takes a number > 0"),
    ("train.gradient_checkpointing=maybe", "train.gradient_checkpointing takes true or false"),
    ("train.save_total_limit=-1", "train.save_total_limit takes null or an integer >= 0"),
])
def test_a_bad_value_is_one_line_naming_the_override_key_value_and_what_is_allowed(capsys, no_model, tmp_path,
                                                                                    override, allowed):
    key, value = override.split("=", 1)
    with pytest.raises(UserError) as caught:
        load_config("pact", [override])
    message = str(caught.value)
    assert message.startswith(f"override {override!r}: {key}="), message
    assert allowed in message and "\n" not in message
    one_line(capsys, ["train", "--config", "pact", override, f"output_dir={tmp_path}/run"], allowed)
    assert not (tmp_path / "run" / "final").exists()


@pytest.mark.parametrize("method", ["sft", "grpo"])
def test_max_steps_zero_or_negative_is_refused_for_every_method(capsys, no_model, tmp_path, method):
    for bad in ("0", "-5"):
        one_line(capsys, ["train", "--config", method, f"train.max_steps={bad}", f"output_dir={tmp_path}/run"],
                 f"train.max_steps={bad} is not allowed")


def test_a_bad_value_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("method:\n  name: pact\ntrain:\n  k: many\n")
    with pytest.raises(UserError, match=f"^{path}: train.k='many' is not allowed: train.k takes an integer >= 1$"):
        load_config(str(path))
    # The override that replaces the file's value is the one named, and a later good override fixes it.
    assert load_config(str(path), ["train.k=3"])["train"]["k"] == 3


def test_bad_yaml_names_the_file_and_line(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("train:\n  k: 4\n  report_to: [tensorboard\nmethod:\n  name: pact\n")
    with pytest.raises(UserError) as caught:
        load_config(str(path))
    message = str(caught.value)
    assert message.startswith(f"{path}:4:") and "not valid YAML" in message, message
    assert "<unicode string>" not in message
    one_line(capsys, ["train", "--config", str(path)], f"{path}:4:")
    with pytest.raises(UserError, match=r"^override 'train.vllm=\{a: 1': not valid YAML"):
        load_config("pact", ["train.vllm={a: 1"])


def test_good_values_load_unchanged():
    for name in builtin_configs():  # every shipped config passes its own checks
        load_config(name)
    cfg = load_config("pact", ["train.learning_rate=5e-6", "train.mixed_precision=no", "train.report_to=wandb",
                               "sampling.top_p=0.9", "train.lora={r: 8}", "method.answer_weight=null"])
    assert cfg["train"]["learning_rate"] == 5e-6  # YAML 1.1 reads `5e-6` as a string: taken as the number
    assert cfg["train"]["mixed_precision"] is False and cfg["sampling"]["top_p"] == 0.9


def test_a_non_finite_value_is_refused():
    with pytest.raises(UserError, match=r"train.learning_rate=nan is not allowed"):
        load_config("pact", ["train.learning_rate=.nan"])


# ---------------------------------------------------------------- 3. a run that would train 0 steps

def test_fewer_tasks_than_one_step_needs_is_refused_before_the_model_loads(capsys, no_model, tmp_path):
    args = [*SMALL, "data.n_train=1", "train.prompts_per_step=2", f"output_dir={tmp_path}/run"]
    with pytest.raises(UserError, match=r"1 training task, fewer than one step needs \(train.prompts_per_step=2 = 2\)"):
        train_recipe.run_train("sft", args)
    one_line(capsys, ["train", "--config", "grpo", *args], "data.n_train=1", "train.prompts_per_step=2",
             "0 steps")
    assert not (tmp_path / "run" / "final").exists()


def test_processes_multiply_what_a_step_needs():
    from pact_cotrain.training.step_fill import check_tasks_fill_a_step

    check_tasks_fill_a_step(4, 2, "tasks.jsonl", n_processes=2)
    with pytest.raises(UserError, match=r"tasks.jsonl: 3 training tasks, .*prompts_per_step=2 x 2 processes = 4"):
        check_tasks_fill_a_step(3, 2, "tasks.jsonl", n_processes=2)


# ---------------------------------------------------------------- 9. the non-finite stop: 1-based, one line

def test_the_non_finite_stop_counts_steps_from_one_and_is_one_line(capsys, tmp_path, tok, monkeypatch):
    real_build = train_recipe.build_trainer

    def build_with_nan_at_the_second_step(cfg, **kwargs):
        model = tiny_llama(tok)
        trainer = real_build(cfg, model=model, tokenizer=tok)
        model.model.norm.weight.register_hook(lambda g: g * float("nan") if trainer.state.global_step == 1 else g)
        return trainer

    monkeypatch.setattr(train_recipe, "build_trainer", build_with_nan_at_the_second_step)
    err = one_line(capsys, ["train", "--config", "sft", *SMALL, "train.max_steps=3", "train.save_steps=1",
                            f"output_dir={tmp_path}/run"],
                   "non-finite gradient", "at step 2 (counted from 1)", "not applied", after_progress=True)
    assert "at step 1 " not in err
    assert (tmp_path / "run" / "checkpoint-1").exists() and not (tmp_path / "run" / "checkpoint-2").exists()


# ---------------------------------------------------------------- 9. a full disk with save_steps=0

def test_a_full_disk_without_checkpoints_does_not_claim_earlier_copies(tmp_path, tok, monkeypatch):
    real_build = train_recipe.build_trainer

    def build_with_a_full_disk(cfg, **kwargs):
        trainer = real_build(cfg, model=tiny_llama(tok), tokenizer=tok)

        def full(*a, **k):
            raise OSError(errno.ENOSPC, "No space left on device")

        trainer.save_model = full
        return trainer

    monkeypatch.setattr(train_recipe, "build_trainer", build_with_a_full_disk)
    out = tmp_path / "run"
    with pytest.raises(RunError) as caught:
        train_recipe.run_train("sft", [*SMALL, "train.max_steps=1", "train.save_steps=0", f"output_dir={out}"])
    message = str(caught.value)
    assert f"no space left on the device while saving final in {out}" in message
    assert "earlier copies are kept" not in message and "no earlier checkpoint" in message, message


def test_a_full_disk_with_a_checkpoint_names_the_one_kept(tmp_path):
    from pact_cotrain.training.checkpoint_layout import STATE_FILES

    kept = tmp_path / "checkpoint-4"
    kept.mkdir()
    for name in ("model.safetensors", "config.json", "rng_state.pth", "optimizer.pt", "scheduler.pt", *STATE_FILES):
        (kept / name).write_text("x")
    (tmp_path / "checkpoint-6").mkdir()  # incomplete: not a copy anything can resume from
    error = save_failure(OSError(errno.ENOSPC, "No space left on device"), "final", str(tmp_path))
    assert "earlier checkpoints are kept, the newest checkpoint-4" in str(error)
    assert os.path.isdir(kept)
