"""CHORD-mu and CHORD-phi as released, CHORD's mu schedule, rollouts skipped at RL weight 0, and the two-phase SFT -> MatchTIR
run, on hand-computed values and a tiny random model."""

import json
import math

import pytest
import torch

from pact_cotrain import losses
from pact_cotrain.recipes.phased import compute_summary, run_phased
from pact_cotrain.config import load_config
from pact_cotrain.recipes.train import build_trainer
from pact_cotrain.testing import tiny_llama
from pact_cotrain.training.methods import MethodConfig, plan_step

approx = pytest.approx
SMALL = ["train.k=2", "train.prompts_per_step=2", "data.n_train=4", "sampling.max_new_tokens_per_turn=12",
         "sampling.max_completion_tokens=48", "sampling.max_turns=2", "train.report_to=[]",
         "train.disable_tqdm=true", "train.learning_rate=1e-3", "train.save_steps=0"]


def test_chord_phi_values_and_no_gradient():
    logp = torch.log(torch.tensor([[0.5, 0.9, 0.1]])).requires_grad_()
    phi = losses.chord_phi(logp)
    assert phi.tolist()[0] == approx([0.25, 0.09, 0.09])
    assert not phi.requires_grad  # phi is a weight, not a path for the gradient


def test_sft_loss_with_phi_hand_computed():
    # two supervised tool-call tokens with p = 0.5 and 0.9, one off-mask token holding NaN
    logp = torch.tensor([[math.log(0.5), math.log(0.9), float("nan")]], requires_grad=True)
    on = torch.tensor([[1.0, 1.0, 0.0]])
    none = torch.zeros_like(on)
    loss, stats = losses.component_sft_loss(logp, none, on, 1.0, 1.0, phi=True)
    expected = -(0.25 * math.log(0.5) + 0.09 * math.log(0.9)) / 2
    assert float(loss.detach()) == approx(expected)
    assert float(stats["phi_mean"]) == approx((0.25 + 0.09) / 2)
    loss.backward()
    # d loss / d logp_t = -w_t phi_t / N_sup: phi is not differentiated; nothing reaches the NaN slot
    assert logp.grad.tolist()[0] == approx([-0.125, -0.045, 0.0])
    plain, _ = losses.component_sft_loss(logp.detach(), none, on, 1.0, 1.0)
    assert float(plain) == approx(-(math.log(0.5) + math.log(0.9)) / 2)


def test_chord_mu_schedule_warmup_peak_decay_valley():
    mu = [losses.chord_mu(s, peak=0.9, valley=0.05, warmup_steps=2, decay_steps=4) for s in range(8)]
    cos = lambda k: 0.05 + 0.85 * (1 + math.cos(math.pi * k / 4)) / 2  # noqa: E731
    assert mu == approx([0.0, 0.45, 0.9, cos(1), cos(2), cos(3), 0.05, 0.05])
    assert mu[3] == approx(0.7755203) and mu[4] == approx(0.475) and mu[5] == approx(0.1744797)
    assert losses.chord_mu(0, peak=0.9, valley=0.05) == 0.05  # no warm-up, no decay: the valley
    with pytest.raises(ValueError):
        losses.chord_mu(0, peak=1.5)


def test_chord_variants_take_their_released_values():
    """Trinity-RFT's mix_chord.yaml: chord-mu peak 0.9, valley 0.05, warm-up 0, decay 200, no phi;
    chord-phi mu 0.1 throughout (warm-up 0, decay 0), phi on."""
    mu = MethodConfig(name="chord_mu")
    plans = [plan_step(mu, s, 1000) for s in (0, 100, 200, 500)]
    assert [p.sft_coef for p in plans] == approx([0.9, 0.05 + 0.85 * 0.5, 0.05, 0.05])
    assert plans[0].rl_coef == approx(0.1) and not any(p.sft_phi for p in plans)
    phi = MethodConfig(name="chord_phi")
    plans = [plan_step(phi, s, 1000) for s in (0, 1, 999)]
    assert [p.sft_coef for p in plans] == approx([0.1] * 3) and [p.rl_coef for p in plans] == approx([0.9] * 3)
    assert all(p.rl and p.sft_phi for p in plans)
    # a value given in the config replaces the released one; the token weight stays the variant's
    assert plan_step(MethodConfig(name="chord_mu", chord_mu_decay_steps=4), 2, 5).sft_coef == approx(0.475)


def test_chord_alone_is_refused():
    with pytest.raises(ValueError, match="chord_mu.*chord_phi"):
        MethodConfig(name="chord")


def test_chord_configs_state_the_released_values():
    for name, (peak, valley, decay) in {"chord_mu": (0.9, 0.05, 200), "chord_phi": (0.1, 0.1, 0)}.items():
        method = load_config(name)["method"]
        assert method["name"] == name
        assert (method["chord_mu_peak"], method["chord_mu_valley"], method["chord_mu_decay_steps"]) == (peak, valley, decay)
        assert method["chord_mu_warmup_steps"] == 0 and method["eps_low"] == method["eps_high"] == 0.2
        assert method["beta"] == 0.0 and method["entropy_coef"] == 0.0


@pytest.mark.parametrize("name,rl,sft", [("chord_mu", 0.1, 0.9), ("chord_phi", 0.9, 0.1)])
def test_chord_variant_trains_a_step_with_the_released_weights(name, rl, sft, tmp_path, tokenizer):
    """`pact train --config chord_mu|chord_phi`: one step on a tiny model logs RL weight 1 - mu and SFT weight mu
    at step 0 as released, with rollouts (RL weight > 0) and an SFT loss."""
    cfg = load_config(name, SMALL + [f"output_dir={tmp_path}/run", "train.max_steps=1"])
    trainer = build_trainer(cfg, model=tiny_llama(tokenizer), tokenizer=tokenizer)
    trainer.train()
    log = [h for h in trainer.state.log_history if "loss" in h][0]
    assert log["rl/coef"] == approx(rl) and log["sft/coef"] == approx(sft)
    assert log["rollout_tokens"] > 0 and log["loss/sft"] > 0


def test_chord_skips_rollouts_when_the_rl_weight_is_zero():
    # mu = 1 (linear 1 -> 0 at step 0, or a peak of 1 after warm-up): RL weight 0, no rollouts
    assert not plan_step(MethodConfig(name="chord_mu", chord_schedule="linear"), 0, 4).rl
    assert plan_step(MethodConfig(name="chord_mu", chord_schedule="linear"), 1, 4).rl
    peak_one = MethodConfig(name="chord_mu", chord_mu_peak=1.0, chord_mu_warmup_steps=1, chord_mu_decay_steps=2)
    assert [plan_step(peak_one, s, 4).rl for s in range(4)] == [True, False, True, True]


def test_chord_run_counts_skipped_rollouts_as_zero(tmp_path, tokenizer):
    cfg = load_config("chord_mu", SMALL + [f"output_dir={tmp_path}/run", "train.max_steps=2",
                                           "method.chord_schedule=linear"])
    trainer = build_trainer(cfg, model=tiny_llama(tokenizer), tokenizer=tokenizer)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert "rollout_tokens" not in logs[0] and logs[1]["rollout_tokens"] > 0  # step 0: mu = 1
    summary = compute_summary(trainer.state.log_history)
    assert summary["steps"] == 2 and summary["rollout_steps"] == 1
    assert summary["rollout_tokens"] == int(logs[1]["rollout_tokens"])


def test_sft_then_matchtir_runs_two_phases_and_counts_both(tmp_path, tokenizer):
    model = tiny_llama(tokenizer)
    before = [p.detach().clone() for p in model.parameters()]
    out = tmp_path / "run"
    _, history, report = run_phased("sft_then_matchtir", SMALL + [f"output_dir={out}", "train.max_steps=1"],
                                    model=model, tokenizer=tokenizer)
    sft, rl = report["phases"]
    # phase 1: one epoch over the 4 traced tasks at 2 prompts per step = 2 SFT steps, no rollouts
    assert sft["stop"] == {"epochs": 1} and sft["compute"]["steps"] == 2
    assert sft["compute"]["rollout_tokens"] == 0 and sft["compute"]["sft_tokens"] > 0
    # phase 2: train.max_steps = 1 RL step, from phase 1's weights
    assert rl["compute"]["steps"] == 1 and rl["compute"]["rollout_steps"] == 1 and rl["compute"]["rollout_tokens"] > 0
    assert report["total"]["steps"] == 3 == compute_summary(history)["steps"]
    assert [h["phase"] for h in history if "loss" in h] == ["sft", "sft", "matchtir"]
    assert json.loads((out / "phases.json").read_text())["total"] == report["total"]
    assert (out / "phase0_sft" / "final").is_dir() and (out / "final").is_dir()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    with pytest.raises(ValueError, match="phases"):
        build_trainer(load_config("sft_then_matchtir"), model=model, tokenizer=tokenizer)


def test_phase_epochs_count_every_process_prompts(tmp_path):
    """One epoch is every trace once over all processes' prompts: 4 traces, 2 prompts a process."""
    from pact_cotrain.data.trace_format import write_tasks
    from pact_cotrain.envs.toolworld import generate_tasks
    from pact_cotrain.recipes.phased import _stop_steps

    path = tmp_path / "tasks.jsonl"
    write_tasks(str(path), generate_tasks(4, seed=0, split="train"))
    cfg = {"data": {"source": "file", "path": str(path)}, "train": {"prompts_per_step": 2}}
    assert _stop_steps({"stop": {"epochs": 1}}, cfg, "here") == 2
    assert _stop_steps({"stop": {"epochs": 1}}, cfg, "here", n_processes=2) == 1
    assert _stop_steps({"stop": {"epochs": 3}}, cfg, "here", n_processes=4) == 2  # ceil(12 / 8)
