"""OPSD losses (losses/opsd.py) on hand-computed tensors."""

import math

import pytest
import torch

from pact_cotrain import losses

approx = pytest.approx
LN2 = math.log(2.0)


def test_token_credit_is_the_per_token_reverse_kl_advantage():
    # one rollout: two generated tokens and a tool-response token (mask 0) whose teacher log-prob is NaN
    student = torch.log(torch.tensor([[0.5, 0.25, 0.1]])).requires_grad_()
    teacher = torch.tensor([[math.log(0.25), math.log(0.5), float("nan")]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss, stats = losses.opsd_policy_loss(student, None, teacher, mask)
    # k = log pS - log pT = [ln 2, -ln 2]; A = -k; on-policy r = 1: L = -(A_1 + A_2) / 2 = 0
    assert float(loss.detach()) == approx(0.0, abs=1e-7)
    assert float(stats["reverse_kl"]) == approx(0.0, abs=1e-7)
    loss.backward()
    # dL/dlogp_t = -A_t / N = k_t / 2: the over-confident token is pushed down, the under-confident up
    assert student.grad.tolist()[0] == approx([LN2 / 2, -LN2 / 2, 0.0])


def test_sequence_credit_with_outcome_reward_as_released_pi_distill():
    # row 0: k = [ln 2, 0] (sum ln 2); row 1: k = [-ln 2] on its one generated token
    student = torch.log(torch.tensor([[0.5, 0.5], [0.2, 0.9]])).requires_grad_()
    teacher = torch.log(torch.tensor([[0.25, 0.5], [0.4, 0.3]]))
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    adv = torch.tensor([1.0, -1.0])
    a = losses.opsd_advantages(student, teacher, mask, adv, kl_coef=0.5, reward_coef=1.0, kl_credit="sequence")
    # A_i - 0.5 * sum_t k_it: 1 - 0.5 ln 2 on both tokens of row 0, -1 + 0.5 ln 2 on row 1's token
    assert a.tolist() == [approx([1 - LN2 / 2, 1 - LN2 / 2]), approx([-1 + LN2 / 2, 0.0])]
    loss, stats = losses.opsd_policy_loss(student, None, teacher, mask, adv, kl_coef=0.5, reward_coef=1.0,
                                          kl_credit="sequence")
    assert float(loss.detach()) == approx(-(2 * (1 - LN2 / 2) + (-1 + LN2 / 2)) / 3)
    assert float(stats["reverse_kl"]) == approx((LN2 + 0 - LN2) / 3, abs=1e-7)
    assert float(stats["reverse_kl_seq"]) == approx((LN2 - LN2) / 2, abs=1e-7)
    loss.backward()
    g = (1 - LN2 / 2) / 3
    assert student.grad.tolist() == [approx([-g, -g]), approx([g, 0.0])]


def test_token_credit_with_reward_mixes_per_token():
    student = torch.log(torch.tensor([[0.5, 0.25]]))
    teacher = torch.log(torch.tensor([[0.25, 0.5]]))
    mask = torch.ones(1, 2)
    a = losses.opsd_advantages(student, teacher, mask, torch.tensor([2.0]), kl_coef=1.0, reward_coef=0.5)
    assert a.tolist()[0] == approx([1.0 - LN2, 1.0 + LN2])


def test_reward_only_is_grpo_and_zero_kl_coef_ignores_the_teacher():
    logp = torch.log(torch.tensor([[0.5, 0.4]])).requires_grad_()
    mask = torch.ones(1, 2)
    teacher = torch.log(torch.tensor([[0.1, 0.9]]))
    opsd, _ = losses.opsd_policy_loss(logp, None, teacher, mask, torch.tensor([1.5]), kl_coef=0.0, reward_coef=1.0)
    grpo, _ = losses.clipped_policy_loss(logp, None, torch.tensor([1.5]), mask)
    assert float(opsd) == approx(float(grpo))


def test_off_policy_ratio_is_clipped_with_the_student_old_logprobs_as_k():
    # pi_old = [0.5, 0.5] on both tokens, teacher [0.25, 1.0]: k = [ln 2, ln 0.5] (from pi_old, not pi_theta)
    old = torch.log(torch.tensor([[0.5, 0.5]]))
    teacher = torch.log(torch.tensor([[0.25, 1.0]]))
    logp = (old + torch.log(torch.tensor([[0.5, 1.5]]))).requires_grad_()  # r = [0.5, 1.5]
    mask = torch.ones(1, 2)
    loss, stats = losses.opsd_policy_loss(logp, old, teacher, mask)
    # A = [-ln 2, +ln 2]; token 1: A < 0, r = 0.5 < 0.8 clipped -> -(0.8 * -ln 2); token 2: A > 0, r = 1.5 > 1.28
    # clipped -> -(1.28 ln 2); both at their clip bound: zero gradient
    assert float(loss.detach()) == approx((0.8 * LN2 - 1.28 * LN2) / 2)
    assert float(stats["clip_frac"]) == 1.0
    loss.backward()
    assert logp.grad.tolist()[0] == approx([0.0, 0.0])


def test_bad_arguments_are_refused():
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="kl_credit"):
        losses.opsd_advantages(x, x, torch.ones(1, 2), kl_credit="episode")
    with pytest.raises(ValueError, match="outcome advantages"):
        losses.opsd_advantages(x, x, torch.ones(1, 2), reward_coef=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        losses.opsd_advantages(x, x, torch.ones(1, 2), kl_coef=-1.0)


def test_generalized_jsd_hand_computed():
    s = torch.log(torch.tensor([[[0.5, 0.5], [0.3, 0.7]]])).requires_grad_()  # [B=1, T=2, V=2]
    t = torch.log(torch.tensor([[[0.9, 0.1], [0.3, 0.7]]]))
    mask = torch.tensor([[1.0, 0.0]])  # the second position is off the mask
    forward = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    reverse = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    jsd = 0.5 * (0.9 * math.log(0.9 / 0.7) + 0.1 * math.log(0.1 / 0.3)) \
        + 0.5 * (0.5 * math.log(0.5 / 0.7) + 0.5 * math.log(0.5 / 0.3))
    for beta, expected in ((0.0, forward), (1.0, reverse), (0.5, jsd)):
        loss, per_token = losses.generalized_jsd(s, t, mask, beta=beta)
        assert float(loss.detach()) == approx(expected)
        assert per_token.tolist()[0] == approx([expected, 0.0])
    loss, _ = losses.generalized_jsd(s, t.requires_grad_(), mask, beta=0.5)
    loss.backward()
    assert t.grad is None  # no gradient through the teacher
    assert s.grad[0, 1].abs().sum() == 0 and s.grad[0, 0].abs().sum() > 0
    # a temperature scales both logits before the softmax
    hot, _ = losses.generalized_jsd(s.detach() * 2, t.detach() * 2, mask, beta=1.0, temperature=2.0)
    assert float(hot) == approx(reverse)
