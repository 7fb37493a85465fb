"""Issue 16: `pact study` runs checkpoint every few steps and an interrupted run resumes from its
newest checkpoint, ending with the weights of an uninterrupted run."""

from __future__ import annotations

import os

import pytest
import torch

from pact_cotrain.study import runner as study_recipe
from pact_cotrain.recipes import train as train_recipe
from pact_cotrain.study.runner import train_or_resume
from pact_cotrain.config import load_config
from pact_cotrain.testing import tiny_llama, tiny_tokenizer
from pact_cotrain.training.checkpoints import SimulatedKill
from tests.test_robustness import SMALL, StopAt, assert_same_weights


def test_a_killed_study_run_resumes_from_its_checkpoint_with_the_same_final_weights(tmp_path, monkeypatch, capsys):
    tok = tiny_tokenizer()
    overrides = SMALL + ["train.max_steps=5", "train.save_steps=2", "train.save_total_limit=1"]
    straight = tiny_llama(tok)
    train_or_resume(load_config("sft", overrides + [f"output_dir={tmp_path}/a"]), model=straight, tokenizer=tok)

    cfg = load_config("sft", overrides + [f"output_dir={tmp_path}/b"])
    real_build = train_recipe.build_trainer

    def killed_at_step_3(cfg, **kwargs):
        trainer = real_build(cfg, **kwargs)
        trainer.add_callback(StopAt(3))
        return trainer

    monkeypatch.setattr(train_recipe, "build_trainer", killed_at_step_3)
    with pytest.raises(SimulatedKill):
        train_or_resume(cfg, model=tiny_llama(tok), tokenizer=tok)
    assert sorted(n for n in os.listdir(tmp_path / "b") if n.startswith("checkpoint")) == ["checkpoint-2"]
    monkeypatch.setattr(train_recipe, "build_trainer", real_build)

    resumed = tiny_llama(tok, seed=99)
    trainer = train_or_resume(cfg, model=resumed, tokenizer=tok)
    assert f"resuming from {tmp_path}/b/checkpoint-2 (step 2)" in capsys.readouterr().out
    assert trainer.state.global_step == 5
    assert [h["step"] for h in trainer.state.log_history if "loss" in h] == [1, 2, 3, 4, 5]  # the whole run
    assert sorted(n for n in os.listdir(tmp_path / "b") if n.startswith("checkpoint")) == ["checkpoint-5"]  # the last step is saved too
    assert_same_weights(straight, resumed)


def test_study_run_keeps_its_checkpoints_and_checkpoints_every_few_steps(tmp_path, monkeypatch):
    study = {"methods": {"sft": {"config": "sft"}}, "budget": {"train.max_steps": 8, "train.save_steps": 0},
             "checkpoint_steps": 3}
    directory = study_recipe.run_dir(tmp_path, "sft", 0)
    (directory / "train" / "checkpoint-3").mkdir(parents=True)  # left by an interrupted run
    (directory / "eval").mkdir()  # an evaluation cut short: it resumes after its finished batches
    (directory / "log_history.json").write_text("[]")  # anything else left is dropped
    seen = {}

    class Done:
        state = type("S", (), {"log_history": []})()

        def close_rollout_engine(self):
            pass

    def fake_train(cfg, **kwargs):
        seen["cfg"] = cfg
        seen["kept"] = (directory / "train" / "checkpoint-3").is_dir() and (directory / "eval").is_dir() \
            and not (directory / "log_history.json").exists()
        return Done()

    monkeypatch.setattr(study_recipe, "prepare_data", lambda s, o: {"train": "t.jsonl", "ftrl_dev": "d.jsonl"})
    monkeypatch.setattr(study_recipe, "evaluate", lambda *a, **k: {})
    monkeypatch.setattr(study_recipe, "write_run_per_task", lambda *a, **k: 0)
    monkeypatch.setattr(study_recipe, "train_or_resume", fake_train)
    study_recipe._train_and_eval(study, tmp_path, "sft", 0)
    assert seen["kept"]
    assert seen["cfg"]["train"]["save_steps"] == 3 and seen["cfg"]["train"]["save_total_limit"] == 1
    assert (directory / "done.json").is_file()


def test_a_killed_phased_run_resumes_in_its_unfinished_phase(tmp_path, monkeypatch, capsys):
    """SFT -> MatchTIR killed in its RL phase: the finished SFT phase is not trained again, the RL phase
    resumes from its checkpoint, and the final weights and counted compute are an uninterrupted run's."""
    from safetensors.torch import load_file

    from pact_cotrain.recipes.phased import run_phased

    tok = tiny_tokenizer()
    start = tmp_path / "start"
    tiny_llama(tok).save_pretrained(start)
    tok.save_pretrained(start)
    overrides = SMALL + [f"model={start}", "train.max_steps=3", "train.save_steps=2", "train.save_total_limit=1"]
    _, _, straight = run_phased("sft_then_matchtir", overrides + [f"output_dir={tmp_path}/a"], train_phase=train_or_resume)

    real_build = train_recipe.build_trainer

    def killed_in_the_rl_phase(cfg, **kwargs):
        trainer = real_build(cfg, **kwargs)
        if "phase1_" in cfg["output_dir"]:
            trainer.add_callback(StopAt(3))
        return trainer

    monkeypatch.setattr(train_recipe, "build_trainer", killed_in_the_rl_phase)
    with pytest.raises(SimulatedKill):
        run_phased("sft_then_matchtir", overrides + [f"output_dir={tmp_path}/b"], train_phase=train_or_resume)
    monkeypatch.setattr(train_recipe, "build_trainer", real_build)
    capsys.readouterr()
    _, history, resumed = run_phased("sft_then_matchtir", overrides + [f"output_dir={tmp_path}/b"], train_phase=train_or_resume)
    out = capsys.readouterr().out
    assert f"resuming from {tmp_path}/b/phase0_sft/checkpoint-4 (step 4)" in out  # finished: not trained again
    assert f"resuming from {tmp_path}/b/phase1_matchtir/checkpoint-2 (step 2)" in out
    assert [h["phase"] for h in history if "loss" in h] == ["sft"] * 4 + ["matchtir"] * 3
    assert resumed["total"] == straight["total"]
    a, b = (load_file(tmp_path / run / "final" / "model.safetensors") for run in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
