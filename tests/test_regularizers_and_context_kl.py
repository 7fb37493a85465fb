"""The released regularisers in a training step (KL to TRL's reference model, the entropy bonus) and the
trace-context KL logged on PACT's rollouts in place of the over-reliance gap (issue 32), on a tiny model."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from pact_cotrain.config import load_config
from pact_cotrain.recipes.train import build_trainer
from pact_cotrain.testing import tiny_llama
from pact_cotrain.training.context_kl import CONTEXT_KL

approx = pytest.approx
SMALL = ["train.k=2", "train.prompts_per_step=2", "data.n_train=4", "sampling.max_new_tokens_per_turn=12",
         "sampling.max_completion_tokens=48", "sampling.max_turns=2", "train.report_to=[]",
         "train.disable_tqdm=true", "train.save_steps=0"]


def _logs(trainer):
    return [h for h in trainer.state.log_history if "loss" in h]


def _saved_tiny(tokenizer, path):
    """A tiny model loaded from a directory: TRL builds `ref_model` from the policy's config path."""
    tiny_llama(tokenizer).save_pretrained(path)
    return AutoModelForCausalLM.from_pretrained(path)


def test_kl_and_entropy_terms_enter_the_loss(tmp_path, tokenizer):
    """GRPO with beta and entropy_coef: TRL made the reference model; at step 0 the policy is the reference
    (KL 0), so the loss is the plain run's minus entropy_coef times the logged entropy; after an update KL > 0."""
    base = SMALL + ["train.max_steps=2", "train.learning_rate=5e-2"]
    plain = build_trainer(load_config("grpo", base + [f"output_dir={tmp_path}/a"]),
                          model=_saved_tiny(tokenizer, tmp_path / "m1"), tokenizer=tokenizer)
    plain.train()
    coef = 0.5
    reg = build_trainer(load_config("grpo", base + [f"output_dir={tmp_path}/b", "method.beta=0.1",
                                                    f"method.entropy_coef={coef}"]),
                        model=_saved_tiny(tokenizer, tmp_path / "m2"), tokenizer=tokenizer)
    assert plain.ref_model is None and reg.ref_model is not None
    reg.train()
    p0, r0 = _logs(plain)[0], _logs(reg)[0]
    assert r0["rl/kl_to_reference_k3"] == approx(0.0, abs=1e-6)
    assert r0["loss"] == approx(p0["loss"] - coef * r0["entropy"], abs=1e-5)
    assert _logs(reg)[1]["rl/kl_to_reference_k3"] > 1e-6
    assert "rl/kl_to_reference_k3" not in _logs(plain)[0]


def test_pact_logs_the_trace_context_kl_not_the_over_reliance_gap(tmp_path, tokenizer):
    """Every prompt trace-conditioned (q = 0): the step logs KL(pi(.|x) || pi(.|x,h)) per token from the
    trainer's own two passes; the retired over_reliance_gap is gone."""
    cfg = load_config("pact", SMALL + ["train.max_steps=1", "method.anchor_q=0.0", f"output_dir={tmp_path}/run"])
    trainer = build_trainer(cfg, model=tiny_llama(tokenizer), tokenizer=tokenizer)
    trainer.train()
    log = _logs(trainer)[0]
    assert CONTEXT_KL in log and "over_reliance_gap" not in log
    assert abs(log[CONTEXT_KL]) < 10.0  # a per-token estimate, finite


def test_trace_context_kl_runs_only_every_context_kl_steps(tmp_path, tokenizer):
    """The diagnostic's extra forward of x is a cost off the method's path: with train.context_kl_steps=2 it is
    logged on steps 1 and 3 (counted from 1) and not on step 2; with 0 never."""
    cfg = load_config("pact", SMALL + ["train.max_steps=3", "method.anchor_q=0.0", "train.context_kl_steps=2",
                                       f"output_dir={tmp_path}/a"])
    trainer = build_trainer(cfg, model=tiny_llama(tokenizer), tokenizer=tokenizer)
    trainer.train()
    assert [CONTEXT_KL in log for log in _logs(trainer)] == [True, False, True]
    cfg = load_config("pact", SMALL + ["train.max_steps=1", "method.anchor_q=0.0", "train.context_kl_steps=0",
                                       f"output_dir={tmp_path}/b"])
    trainer = build_trainer(cfg, model=tiny_llama(tokenizer), tokenizer=tokenizer)
    trainer.train()
    assert CONTEXT_KL not in _logs(trainer)[0]


def test_trace_context_kl_default_period_without_the_pact_field():
    """A trainer given args without `context_kl_steps` (a plain GRPOConfig) uses PACTConfig's default period (10),
    not every step: the due steps are 0, 10, 20 (counted from 0)."""
    from types import SimpleNamespace

    from pact_cotrain.training.context_kl import ContextKLMixin

    due = []

    class Probe(ContextKLMixin):
        args = SimpleNamespace()

        def _context_kl_rows(self, inputs, trace_rows):
            due.append(inputs["step"])
            return torch.zeros(1, dtype=torch.bool)

    for step in range(21):
        Probe()._log_context_kl(None, {"step": step}, {}, None, None, None, {})
    assert due == [0, 10, 20]
