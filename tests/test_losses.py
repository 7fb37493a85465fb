"""Tests for pact_cotrain.losses: tiny tensors, expected values worked out by hand in comments."""

from __future__ import annotations

import math

import pytest
import torch

from pact_cotrain import losses as L

TOL = dict(atol=1e-5, rtol=0)

# Hand constants used below:
#   e^{0.1}  = 1.1051709     e^{0.3} = 1.3498588     e^{-0.3} = 0.7408182
#   e^{0.4}  = 1.4918247     e^{-0.1} = 0.9048374
E01, E03, EM03, E04, EM01 = 1.1051709, 1.3498588, 0.7408182, 1.4918247, 0.9048374


def t(x, **kw):
    return torch.tensor(x, dtype=torch.float32, **kw)


def close(a, b, tol=1e-5):
    return abs(float(a.detach() if torch.is_tensor(a) else a) - b) < tol


# ------------------------------------------------------------------ group_advantages


def test_group_advantages_unbiased_std_and_zero_variance_group():
    # group 0: [1,0,0,1]: mean 0.5, unbiased var = 4*0.25/3 = 1/3, std = 0.5773503
    #          A = +-0.5 / 0.5773503 = +-0.8660254   (population std 0.5 would give +-1)
    # group 1: [0.5]*4: zero variance -> exactly 0
    r = t([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    a = L.group_advantages(r, group_size=4, eps=0.0)
    exp = [0.8660254, -0.8660254, -0.8660254, 0.8660254, 0.0, 0.0, 0.0, 0.0]
    torch.testing.assert_close(a, t(exp), **TOL)
    assert torch.equal(a[4:], torch.zeros(4))


def test_group_advantages_group_of_three_and_eps():
    # [3,1,2]: mean 2, unbiased var = (1+1+0)/2 = 1, std 1 -> A = [1,-1,0]
    # with eps=1: A = [1/2, -1/2, 0]
    r = t([3.0, 1.0, 2.0])
    torch.testing.assert_close(L.group_advantages(r, 3, eps=0.0), t([1.0, -1.0, 0.0]), **TOL)
    torch.testing.assert_close(L.group_advantages(r, 3, eps=1.0), t([0.5, -0.5, 0.0]), **TOL)


def test_group_advantages_no_std_normalisation():
    # R - mean: [1,0,0,1] -> [0.5,-0.5,-0.5,0.5]; [3,1,2] would be separate; constant group -> 0
    r = t([1.0, 0.0, 0.0, 1.0, 0.7, 0.7, 0.7, 0.7])
    a = L.group_advantages(r, 4, normalize_std=False)
    torch.testing.assert_close(a, t([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]), **TOL)


def test_group_advantages_exact_zero_for_unrepresentable_constants():
    # 0.1 is not exact in binary; mean of [0.1]*3 may differ from 0.1 by an ulp, still exactly 0
    for normalize in (True, False):
        a = L.group_advantages(t([0.1, 0.1, 0.1]), 3, normalize_std=normalize)
        assert torch.equal(a, torch.zeros(3))


def test_group_advantages_group_size_one_and_errors():
    assert torch.equal(L.group_advantages(t([1.0, 0.0]), 1), torch.zeros(2))
    # integer rewards are accepted: [1,0] -> mean .5, unbiased std = sqrt(0.5) = 0.7071068 -> +-0.7071068
    torch.testing.assert_close(L.group_advantages(torch.tensor([1, 0]), 2, eps=0.0), t([0.7071068, -0.7071068]))
    with pytest.raises(ValueError):
        L.group_advantages(t([1.0, 0.0, 1.0]), 2)
    with pytest.raises(ValueError):
        L.group_advantages(t([[1.0, 0.0]]), 2)


# ------------------------------------------------------------------ aggregation

VALS = t([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = t([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def test_masked_token_mean():
    # (1 + 2 + 4) / 3 = 2.3333333
    assert close(L.masked_token_mean(VALS, MASK), 7 / 3)
    assert close(L.masked_token_mean(VALS, MASK.bool()), 7 / 3)
    # empty mask -> 0 / max(0, 1) = 0
    assert float(L.masked_token_mean(VALS, torch.zeros(2, 3))) == 0.0
    # a NaN under the mask does not leak
    v = VALS.clone()
    v[0, 2] = float("nan")
    assert close(L.masked_token_mean(v, MASK), 7 / 3)


def test_aggregate_modes():
    # token_mean: 7/3 = 2.3333333
    assert close(L.aggregate_loss(VALS, MASK, "token_mean"), 7 / 3)
    # seq_mean_token_mean: seq0 (1+2)/2 = 1.5, seq1 4/1 = 4 -> (1.5+4)/2 = 2.75
    assert close(L.aggregate_loss(VALS, MASK, "seq_mean_token_mean"), 2.75)
    # token_sum_norm, max_tokens=4: 7 / (B*4) = 7/8 = 0.875
    assert close(L.aggregate_loss(VALS, MASK, "token_sum_norm", max_tokens=4), 0.875)
    # empty sequence in seq_mean: seq0 1.5, seq1 0 (counts in B) -> 0.75
    assert close(L.aggregate_loss(VALS, t([[1, 1, 0], [0, 0, 0]]), "seq_mean_token_mean"), 0.75)
    with pytest.raises(ValueError):
        L.aggregate_loss(VALS, MASK, "token_sum_norm")
    with pytest.raises(ValueError):
        L.aggregate_loss(VALS, MASK, "seq_sum")


# ------------------------------------------------------------------ clipped_policy_loss

# log-ratios; old_logp = 0 so logp = log r. Position 3 is masked (a tool-response token) and
# holds NaN to check that it neither reaches the loss nor the gradient.
NAN = float("nan")
LOG_R = [[0.1, 0.3, -0.3, NAN], [0.1, 0.3, -0.3, NAN]]
ADV = [1.0, -1.0]
M = [[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]]
# per-token loss l = -min(rA, clip(r, 0.8, 1.28) A):
#   A=+1: r=1.1051709 in range         -> -1.1051709
#         r=1.3498588 > 1.28 -> clipped  -> -1.28        (clip_high; gradient 0)
#         r=0.7408182 < 0.8, A>0: min(0.7408182, 0.8) = 0.7408182 -> -0.7408182 (not clipped)
#   A=-1: r=1.1051709 in range         -> +1.1051709
#         r=1.3498588: min(-1.3498588, -1.28) = -1.3498588 -> +1.3498588 (not clipped)
#         r=0.7408182: min(-0.7408182, -0.8) = -0.8 -> +0.8     (clip_low; gradient 0)
PER_TOKEN = [[-E01, -1.28, -EM03], [E01, E03, 0.8]]


def test_clipped_policy_loss_every_branch_and_stats():
    logp = t(LOG_R, requires_grad=True)
    loss, stats = L.clipped_policy_loss(logp, torch.zeros(2, 4), t(ADV), t(M))
    # sum = (-1.1051709 - 1.28 - 0.7408182) + (1.1051709 + 1.3498588 + 0.8) = 0.1290406; / 6 = 0.0215068
    assert close(loss, 0.1290406 / 6)
    assert close(stats["clip_frac_low"], 1 / 6)
    assert close(stats["clip_frac_high"], 1 / 6)
    assert close(stats["clip_frac"], 2 / 6)
    # ratio_mean = 2 * (1.1051709 + 1.3498588 + 0.7408182) / 6 = 1.0652826
    assert close(stats["ratio_mean"], 1.0652826)
    assert all(not v.requires_grad for v in stats.values())
    loss.backward()
    # d l / d logp = -A r where unclipped, 0 where clipped; / N = 6
    #   row0: [-1.1051709/6, 0, -0.7408182/6, 0] = [-0.1841952, 0, -0.1234697, 0]
    #   row1: [ 1.1051709/6, 1.3498588/6, 0, 0] = [ 0.1841952, 0.2249765, 0, 0]
    exp = t([[-0.1841952, 0.0, -0.1234697, 0.0], [0.1841952, 0.2249765, 0.0, 0.0]])
    torch.testing.assert_close(logp.grad, exp, **TOL)
    assert logp.grad[:, 3].eq(0).all()


def test_clipped_policy_loss_aggregations():
    # mask [[1,1,1,0],[1,0,0,0]]: per-token losses as above
    mask = t([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    logp = t(LOG_R)
    args = (logp, torch.zeros(2, 4), t(ADV), mask)
    # token_mean: (-3.1259891 + 1.1051709) / 4 = -0.5052046
    assert close(L.clipped_policy_loss(*args)[0], -0.5052046)
    # seq_mean_token_mean: (-3.1259891/3 + 1.1051709/1) / 2 = (-1.0419964 + 1.1051709)/2 = 0.0315873
    assert close(L.clipped_policy_loss(*args, aggregation="seq_mean_token_mean")[0], 0.0315873)
    # token_sum_norm, max_tokens 4: -2.0208182 / (2*4) = -0.2526023
    assert close(L.clipped_policy_loss(*args, aggregation="token_sum_norm", max_tokens=4)[0], -0.2526023)


def test_clipped_policy_loss_symmetric_eps_and_empty_mask():
    # eps_high=0.2: r=1.3498588 for A=+1 clips at 1.2 -> -1.2
    loss, stats = L.clipped_policy_loss(t([[0.3]]), t([[0.0]]), t([1.0]), t([[1.0]]), eps_low=0.2, eps_high=0.2)
    assert close(loss, -1.2) and close(stats["clip_frac_high"], 1.0)
    loss, stats = L.clipped_policy_loss(t([[0.3]]), t([[0.0]]), t([1.0]), t([[0.0]]))
    assert float(loss) == 0.0 and math.isnan(float(stats["clip_frac"]))


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean_token_mean"])
def test_on_policy_identity(aggregation):
    # old = logp.detach() -> r = 1 (inside the clip range) -> dL/dlogp = -A m / N  (token_mean)
    #                                                         = -A m / (n_i B)  (seq_mean_token_mean)
    g = torch.Generator().manual_seed(0)
    logp = (-torch.rand(2, 4, generator=g)).requires_grad_()
    adv = t([0.5, -2.0])
    mask = t([[1, 1, 0, 1], [0, 1, 0, 0]])
    for old in (logp.detach(), None):
        logp.grad = None
        loss, stats = L.clipped_policy_loss(logp, old, adv, mask, aggregation=aggregation)
        loss.backward()
        if aggregation == "token_mean":  # N = 4
            exp = -adv[:, None] * mask / 4
        else:  # n = [3, 1], B = 2
            exp = -adv[:, None] * mask / (t([[3.0], [1.0]]) * 2)
        torch.testing.assert_close(logp.grad, exp, **TOL)
        # loss value: token_mean -(0.5*3 - 2*1)/4 = 0.125; seq_mean -(0.5 - 2)/2 = 0.75
        assert close(loss, 0.125 if aggregation == "token_mean" else 0.75)
        assert close(stats["ratio_mean"], 1.0) and float(stats["clip_frac"]) == 0.0


def test_token_level_advantages_accepted():
    # A [B,T]: l = -A_t * r with r = 1 -> -(2 + -1)/2 = -0.5
    loss, _ = L.clipped_policy_loss(t([[-1.0, -2.0]]), None, t([[2.0, -1.0]]), t([[1.0, 1.0]]))
    assert close(loss, -0.5)


# ------------------------------------------------------------------ trace-conditioned surrogate


def test_trace_conditioned_surrogate_trace_ratio():
    # logp_trace -1.0, old_trace -1.1: r^h = e^{0.1} = 1.1051709 (in range), A = 2 -> l = -2.2103418
    lt = t([[-1.0, -5.0]], requires_grad=True)
    old_t = t([[-1.1, -5.0]], requires_grad=True)
    old_p = t([[-1.4, -5.0]], requires_grad=True)
    mask = t([[1.0, 0.0]])
    loss, stats = L.trace_conditioned_surrogate(lt, old_t, t([2.0]), mask, old_logp_prompt=old_p)
    assert close(loss, -2.2103418)
    assert float(stats["clip_frac"]) == 0.0 and close(stats["ratio_mean"], E01)
    loss.backward()
    # gradient only through logp_trace: dl/dlogp = -A r = -2.2103418 on the masked-in token
    torch.testing.assert_close(lt.grad, t([[-2.2103418, 0.0]]), **TOL)
    assert old_t.grad is None and old_p.grad is None
    # same as the plain clipped loss (it is implemented by calling it)
    same, _ = L.clipped_policy_loss(lt, old_t, t([2.0]), mask)
    assert close(same, -2.2103418)


def test_trace_conditioned_surrogate_cross_context_ablation():
    # ratio pi(.|x,h)/pi_old(.|x): e^{-1.0 - (-1.4)} = e^{0.4} = 1.4918247 > 1.28, A=2 -> clipped: -2*1.28 = -2.56
    lt = t([[-1.0]], requires_grad=True)
    loss, stats = L.trace_conditioned_surrogate(
        lt, t([[-1.1]]), t([2.0]), t([[1.0]]), ratio_form="cross_context", old_logp_prompt=t([[-1.4]])
    )
    assert close(loss, -2.56)
    assert close(stats["clip_frac_high"], 1.0) and close(stats["ratio_mean"], E04)
    loss.backward()
    assert lt.grad.eq(0).all()  # fully clipped
    with pytest.raises(ValueError):
        L.trace_conditioned_surrogate(lt, t([[-1.1]]), t([2.0]), t([[1.0]]), ratio_form="cross_context")
    with pytest.raises(ValueError):
        L.trace_conditioned_surrogate(lt, t([[-1.1]]), t([2.0]), t([[1.0]]), ratio_form="bogus")


def test_trace_conditioned_surrogate_on_policy_default():
    # old_logp_trace=None -> r = 1 -> l = -A = -2 -> loss -2 (token mean of one token... two tokens both -2)
    loss, _ = L.trace_conditioned_surrogate(t([[-1.0, -3.0]]), None, t([2.0]), t([[1.0, 1.0]]))
    assert close(loss, -2.0)


# ------------------------------------------------------------------ component SFT

SFT_LOGP = [[-1.0, -2.0, -3.0, -4.0, -5.0, -6.0]]
R_MASK = [[1, 1, 0, 0, 0, 0]]  # reasoning prefix
C_MASK = [[0, 0, 1, 1, 0, 0]]  # tool call
A_MASK = [[0, 0, 0, 0, 0, 1]]  # final answer; position 4 is a tool response (never a target)


def test_component_sft_weights_and_n_supervised():
    lp = t(SFT_LOGP)
    # no answer term: -[(-1 - 2) + 0.5*(-3 - 4)] / 4 = 6.5/4 = 1.625
    loss, s = L.component_sft_loss(lp, t(R_MASK), t(C_MASK), toolcall_weight=0.5)
    assert close(loss, 1.625) and int(s["n_supervised"]) == 4
    assert math.isnan(float(s["logp_answer_mean"])) and int(s["n_answer"]) == 0
    # answer weight defaults to the tool-call weight: -[-3 - 3.5 + 0.5*(-6)] / 5 = 9.5/5 = 1.9
    loss, s = L.component_sft_loss(lp, t(R_MASK), t(C_MASK), 0.5, answer_mask=t(A_MASK))
    assert close(loss, 1.9) and int(s["n_supervised"]) == 5
    # explicit answer weight 1: -[-3 - 3.5 - 6] / 5 = 12.5/5 = 2.5
    loss, _ = L.component_sft_loss(lp, t(R_MASK), t(C_MASK), 0.5, answer_mask=t(A_MASK), answer_weight=1.0)
    assert close(loss, 2.5)
    # reasoning weight 2: -[2*(-3) + 0.5*(-7)] / 4 = 9.5/4 = 2.375
    loss, _ = L.component_sft_loss(lp, t(R_MASK), t(C_MASK), 0.5, reasoning_weight=2.0)
    assert close(loss, 2.375)
    # stats: mean logp per component: reasoning (-1-2)/2 = -1.5, tool call (-3-4)/2 = -3.5, answer -6
    _, s = L.component_sft_loss(lp, t(R_MASK), t(C_MASK), 0.5, answer_mask=t(A_MASK))
    assert close(s["logp_reasoning_mean"], -1.5) and close(s["logp_toolcall_mean"], -3.5)
    assert close(s["logp_answer_mean"], -6.0)
    assert (int(s["n_reasoning"]), int(s["n_toolcall"]), int(s["n_answer"])) == (2, 2, 1)


def test_component_sft_zero_weight_is_not_supervised():
    lp = t(SFT_LOGP)
    # tool-call weight 0 (answer defaults to 0 too): only reasoning counts -> -(-3)/2 = 1.5, N = 2
    loss, s = L.component_sft_loss(lp, t(R_MASK), t(C_MASK), 0.0, answer_mask=t(A_MASK))
    assert close(loss, 1.5) and int(s["n_supervised"]) == 2
    # reasoning prefix empty (L0 stage) and weight 0 on calls: nothing supervised -> 0, N = 0
    lp = t(SFT_LOGP, requires_grad=True)
    loss, s = L.component_sft_loss(lp, torch.zeros(1, 6), t(C_MASK), 0.0)
    assert float(loss.detach()) == 0.0 and int(s["n_supervised"]) == 0
    loss.backward()
    assert lp.grad.eq(0).all()
    with pytest.raises(ValueError):
        L.component_sft_loss(lp, t(R_MASK), t(C_MASK), -0.1)


def test_component_sft_gradient():
    lp = t(SFT_LOGP, requires_grad=True)
    loss, _ = L.component_sft_loss(lp, t(R_MASK), t(C_MASK), 0.5, answer_mask=t(A_MASK))
    loss.backward()
    # dL/dlogp_t = -w_t / N with N = 5: reasoning -1/5, tool call and answer -0.5/5, tool response 0
    torch.testing.assert_close(lp.grad, t([[-0.2, -0.2, -0.1, -0.1, 0.0, -0.1]]), **TOL)
    assert lp.grad[0, 4].item() == 0.0


def test_component_sft_batch_and_nan_outside_masks():
    # two sequences; N counts over the batch: row0 reasoning 2 tokens, row1 tool call 1 token
    # -[(-1 - 2) + 0.8*(-4)] / 3 = (3 + 3.2)/3 = 2.0666667; a NaN on an unsupervised token is ignored
    lp = t([[-1.0, -2.0, NAN], [-4.0, NAN, -9.0]])
    rm = t([[1, 1, 0], [0, 0, 0]])
    cm = t([[0, 0, 0], [1, 0, 0]])
    loss, s = L.component_sft_loss(lp, rm, cm, 0.8)
    assert close(loss, 6.2 / 3) and int(s["n_supervised"]) == 3


# ------------------------------------------------------------------ anchored_rl_loss

# 2 prompts x 2 rollouts; anchor per prompt [True, False] -> per sequence [T, T, F, F]
# masks (position 1 of seq 0/3 is a tool response): n = [2, 1, 3, 2], N = 8
ANC_MASK = [[1, 0, 1], [1, 0, 0], [1, 1, 1], [1, 0, 1]]
ANC_ADV = [1.0, -1.0, 0.5, -0.5]
ANCHOR = L.expand_to_rollouts(torch.tensor([True, False]), 2)
# logp_prompt - old_prompt = 0.1 (r = 1.1051709), logp_trace - old_trace = -0.1 (r = 0.9048374); all in range
# selected per-token losses -A r:
#   seq0 (anchored, A=1):   -1.1051709 x2 = -2.2103418
#   seq1 (anchored, A=-1):  +1.1051709 x1
#   seq2 (trace, A=0.5):    -0.4524187 x3 = -1.3572561
#   seq3 (trace, A=-0.5):   +0.4524187 x2 = +0.9048374
#   sum = -1.5575896 -> L = -1.5575896 / 8 = -0.1946987
#   check token-weighted form: N_a=3, mean_a = -1.1051709/3; N_t=5, mean_t = -0.4524187/5
#   (3 mean_a + 5 mean_t)/8 = (-1.1051709 - 0.4524187)/8 = -0.1946987


def _anchor_inputs():
    old_p = torch.full((4, 3), -2.0)
    old_t = torch.full((4, 3), -1.0)
    lp = (old_p + 0.1).requires_grad_()
    lt = (old_t - 0.1).requires_grad_()
    return lp, old_p, lt, old_t


def test_anchored_rl_loss_value_and_gradient_routing():
    lp, old_p, lt, old_t = _anchor_inputs()
    loss, s = L.anchored_rl_loss(lp, old_p, lt, old_t, t(ANC_ADV), t(ANC_MASK), ANCHOR)
    assert close(loss, -0.1946987)
    assert close(s["anchor_frac"], 0.5)
    assert int(s["grpo/n_tokens"]) == 3 and int(s["tc/n_tokens"]) == 5
    assert close(s["grpo/loss"], -1.1051709 / 3) and close(s["tc/loss"], -0.4524187 / 5)
    assert close(s["grpo/ratio_mean"], E01) and close(s["tc/ratio_mean"], EM01)
    loss.backward()
    # anchored rows 0,1: gradient only in logp_prompt, -A r / 8 = -+1.1051709/8 = -+0.1381464
    exp_p = t([[-0.1381464, 0, -0.1381464], [0.1381464, 0, 0], [0, 0, 0], [0, 0, 0]])
    # other rows 2,3: gradient only in logp_trace, -A r / 8 = -+0.4524187/8 = -+0.0565523
    exp_t = t([[0, 0, 0], [0, 0, 0], [-0.0565523, -0.0565523, -0.0565523], [0.0565523, 0, 0.0565523]])
    torch.testing.assert_close(lp.grad, exp_p, **TOL)
    torch.testing.assert_close(lt.grad, exp_t, **TOL)
    assert lp.grad[2:].eq(0).all() and lt.grad[:2].eq(0).all()


def test_anchored_rl_loss_ignores_junk_in_unselected_rows():
    lp, old_p, lt, old_t = _anchor_inputs()
    with torch.no_grad():
        lt[:2] = float("nan")  # trace pass not run for the anchored rows
        lp[2:] = float("inf")  # prompt pass not run for the other rows
    loss, _ = L.anchored_rl_loss(lp, old_p, lt, old_t, t(ANC_ADV), t(ANC_MASK), ANCHOR)
    assert close(loss, -0.1946987)
    loss.backward()
    assert torch.isfinite(lp.grad).all() and torch.isfinite(lt.grad).all()
    assert lp.grad[2:].eq(0).all() and lt.grad[:2].eq(0).all()


def test_anchored_rl_loss_skipped_passes():
    lp, old_p, lt, old_t = _anchor_inputs()
    adv, mask = t(ANC_ADV), t(ANC_MASK)
    all_anchor = torch.ones(4, dtype=torch.bool)
    loss, s = L.anchored_rl_loss(lp, old_p, None, None, adv, mask, all_anchor)
    ref, _ = L.clipped_policy_loss(lp, old_p, adv, mask)
    # all prompt-only: -(2*1.1051709 - 1.1051709 + 3*0.5525855 - 2*0.5525855)/8 = -1.6577564/8 = -0.2072195
    assert close(loss, -0.2072195) and close(ref, -0.2072195)
    assert math.isnan(float(s["tc/loss"])) and int(s["tc/n_tokens"]) == 0
    none = torch.zeros(4, dtype=torch.bool)
    loss, _ = L.anchored_rl_loss(None, None, lt, old_t, adv, mask, none)
    ref, _ = L.trace_conditioned_surrogate(lt, old_t, adv, mask)
    # all trace: -(2*0.9048374 - 0.9048374 + 3*0.4524187 - 2*0.4524187)/8 = -1.3572561/8 = -0.1696570
    assert close(loss, -0.1696570) and close(ref, -0.1696570)
    with pytest.raises(ValueError):
        L.anchored_rl_loss(lp, old_p, None, None, adv, mask, ANCHOR)
    with pytest.raises(ValueError):
        L.anchored_rl_loss(None, None, lt, old_t, adv, mask, ANCHOR)
    with pytest.raises(ValueError):  # per-prompt anchor not expanded
        L.anchored_rl_loss(lp, old_p, lt, old_t, adv, mask, torch.tensor([True, False]))


def test_anchored_rl_loss_mixture_mode():
    lp, old_p, lt, old_t = _anchor_inputs()
    # q=0.25: 0.25 * (-0.2072195) + 0.75 * (-0.1696570) = -0.0518049 - 0.1272428 = -0.1790476
    loss, s = L.anchored_rl_loss(lp, old_p, lt, old_t, t(ANC_ADV), t(ANC_MASK), None, mode="mixture", q=0.25)
    assert close(loss, -0.1790476) and close(s["anchor_frac"], 0.25)
    loss.backward()
    # both passes get gradient on every masked token: prompt row0 = 0.25 * -1.1051709/8 = -0.0345366
    assert close(lp.grad[0, 0], -0.0345366) and close(lt.grad[0, 0], 0.75 * -0.9048374 / 8)
    loss, _ = L.anchored_rl_loss(lp, old_p, None, None, t(ANC_ADV), t(ANC_MASK), None, mode="mixture", q=1.0)
    assert close(loss, -0.2072195)
    with pytest.raises(ValueError):
        L.anchored_rl_loss(lp, old_p, lt, old_t, t(ANC_ADV), t(ANC_MASK), None, mode="mixture")


def test_anchored_rl_loss_cross_context_form():
    # no sequence anchored; the trace branch uses r = exp(logp_trace - old_logp_prompt):
    # logp_trace = -1.1, old_logp_prompt = -2.0 -> r = e^{0.9} = 2.4596031 (the trace ratio would be e^{-0.1})
    lp, old_p, lt, old_t = _anchor_inputs()
    none = torch.zeros(4, dtype=torch.bool)
    loss, s = L.anchored_rl_loss(lp, old_p, lt, old_t, t(ANC_ADV), t(ANC_MASK), none, ratio_form="cross_context")
    # r = e^{0.9} = 2.4596 > 1.28: A>0 rows clip at 1.28, A<0 rows unclipped:
    #   seq0 A=1: -1.28 x2; seq1 A=-1: +2.4596031 x1; seq2 A=.5: -0.64 x3; seq3 A=-.5: +1.2298016 x2
    #   sum = -2.56 + 2.4596031 - 1.92 + 2.4596031 = 0.4392062 -> / 8 = 0.0549008
    assert close(loss, 0.0549008)
    assert close(s["tc/clip_frac_high"], 5 / 8)


# ------------------------------------------------------------------ masked tokens get zero gradient from every loss


def _masked_grad_cases():
    mask = t([[1, 0, 1, 0], [0, 1, 1, 0]])  # zeros: tool-response / padding tokens
    adv = t([1.5, -0.7])
    old = torch.full((2, 4), -1.0)

    def pol(agg):
        return lambda a, b: L.clipped_policy_loss(a, old, adv, mask, aggregation=agg, max_tokens=4)[0]

    return mask, {
        "token_mean": pol("token_mean"),
        "seq_mean_token_mean": pol("seq_mean_token_mean"),
        "token_sum_norm": pol("token_sum_norm"),
        "tc_trace": lambda a, b: L.trace_conditioned_surrogate(a, old, adv, mask)[0],
        "tc_cross": lambda a, b: L.trace_conditioned_surrogate(a, old, adv, mask, ratio_form="cross_context",
                                                              old_logp_prompt=old - 0.05)[0],
        "sft": lambda a, b: L.component_sft_loss(a, mask * t([[1, 1, 1, 1], [0, 0, 0, 0]]),
                                                 mask * t([[0, 0, 0, 0], [1, 1, 1, 1]]), 0.5)[0],
        "anchored": lambda a, b: L.anchored_rl_loss(a, old, b, old, adv, mask, torch.tensor([True, False]))[0],
        "mixture": lambda a, b: L.anchored_rl_loss(a, old, b, old, adv, mask, None, mode="mixture", q=0.3)[0],
    }


@pytest.mark.parametrize("name", list(_masked_grad_cases()[1]))
def test_masked_tokens_get_exactly_zero_gradient(name):
    mask, cases = _masked_grad_cases()
    g = torch.Generator().manual_seed(1)
    a = (-1.0 + 0.1 * torch.randn(2, 4, generator=g)).requires_grad_()
    b = (-1.0 + 0.1 * torch.randn(2, 4, generator=g)).requires_grad_()
    with torch.no_grad():  # garbage where the mask is 0
        a[mask == 0] = 1e4
        b[mask == 0] = -1e4
    loss = cases[name](a, b)
    assert torch.isfinite(loss)
    loss.backward()
    for leaf in (a, b):
        if leaf.grad is not None:
            assert torch.equal(leaf.grad[mask == 0], torch.zeros(int((mask == 0).sum())))
            assert torch.isfinite(leaf.grad).all()
    grads = [x.grad for x in (a, b) if x.grad is not None]
    assert any(gr[mask != 0].abs().sum() > 0 for gr in grads)  # and something is trained


# ------------------------------------------------------------------ diagnostics and log-prob utilities


def test_context_kl_per_token():
    # log pi(tau|x) - log pi(tau|x,h), mask [1,1,0]: ((-1 - -2) + (-2 - -2)) / 2 = 0.5; masked position ignored
    lx = t([[-1.0, -2.0, -0.5]], requires_grad=True)
    kl = L.context_kl_per_token(lx, t([[-2.0, -2.0, float("nan")]]), t([[1, 1, 0]]))
    assert close(kl, 0.5) and not kl.requires_grad


def test_context_kl_per_token_estimates_the_kl_on_prompt_only_samples():
    # two-token vocabulary, one step: pi(.|x) = (0.8, 0.2), pi(.|x,h) = (0.5, 0.5). Samples drawn from pi(.|x)
    # in exact proportion (8 of token 0, 2 of token 1): the estimate is the exact KL
    # 0.8 log(0.8/0.5) + 0.2 log(0.2/0.5) = 0.1927448
    px, ph = [0.8, 0.2], [0.5, 0.5]
    tokens = [0] * 8 + [1] * 2
    lx = t([[math.log(px[v])] for v in tokens])
    lh = t([[math.log(ph[v])] for v in tokens])
    assert close(L.context_kl_per_token(lx, lh, torch.ones(10, 1)), 0.1927448)
    assert close(L.context_kl_per_token(lx, lx, torch.ones(10, 1)), 0.0)  # h changes nothing


def test_kl_penalty_k3_hand_computed_and_its_gradient():
    # k3 = exp(r - l) - (r - l) - 1: l = log 0.5, r = log 0.25 -> 0.5 + log 2 - 1 = 0.1931472; l = r -> 0.
    # mask [1, 1, 0]: token mean over 2 -> 0.0965736. d k3 / d l = 1 - exp(r - l) = 0.5 (first token), 0 (second)
    logp = t([[math.log(0.5), math.log(0.3), 5.0]], requires_grad=True)
    ref = t([[math.log(0.25), math.log(0.3), float("nan")]])
    kl = L.kl_penalty_k3(logp, ref, t([[1, 1, 0]]))
    assert close(kl, 0.0965736)
    kl.backward()
    assert logp.grad.tolist()[0] == pytest.approx([0.25, 0.0, 0.0])  # (1 - 0.5) / 2 tokens; masked slot 0
    # row_on keeps a row in the normaliser with no penalty: rows 1 and 2 both count, only row 1 is penalised
    two = L.kl_penalty_k3(t([[math.log(0.5)], [math.log(0.5)]]), t([[math.log(0.25)], [0.0]]), torch.ones(2, 1),
                          row_on=torch.tensor([True, False]))
    assert close(two, 0.1931472 / 2)


def test_entropy_bonus_is_the_masked_mean_entropy_with_gradient():
    logits = t([[[0.0, 0.0], [2.0, 0.0]]], requires_grad=True)  # H = log 2 = 0.6931472, and 0.3653339
    h = L.entropy_from_logits(logits)
    bonus = L.entropy_bonus(h, t([[1, 0]]))
    assert close(bonus, 0.6931472)
    assert close(L.entropy_bonus(h, t([[1, 1]])), (0.6931472 + 0.3653339) / 2)
    (-bonus).backward()  # minimising -H at the uniform point: gradient 0 there
    assert logits.grad.abs().max() < 1e-6


def test_entropy_from_logits():
    # uniform over 4: log 4 = 1.3862944
    assert close(L.entropy_from_logits(torch.zeros(4)), 1.3862944)
    # p = [0.5, 0.25, 0.25] (logits = log p): 0.5 ln 2 + 2 * 0.25 ln 4 = 0.3465736 + 0.6931472 = 1.0397208
    logits = torch.log(t([[0.5, 0.25, 0.25]]))
    assert close(L.entropy_from_logits(logits)[0], 1.0397208)
    # a banned token (-inf) contributes 0: [0, -inf, 0] -> ln 2 = 0.6931472, gradient finite
    x = t([0.0, float("-inf"), 0.0], requires_grad=True)
    h = L.entropy_from_logits(x)
    assert close(h, 0.6931472)
    h.backward()
    assert torch.isfinite(x.grad).all()
    assert L.entropy_from_logits(torch.zeros(2, 3, 5)).shape == (2, 3)


def test_selective_log_softmax():
    # logits [0, ln 3] -> softmax [0.25, 0.75]: ids 1 -> ln 0.75 = -0.2876821, ids 0 -> ln 0.25 = -1.3862944
    logits = t([[[0.0, math.log(3.0)], [0.0, math.log(3.0)]]])
    out = L.selective_log_softmax(logits, torch.tensor([[1, 0]]))
    torch.testing.assert_close(out, t([[-0.2876821, -1.3862944]]), **TOL)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, generator=g)
    ids = torch.randint(0, 7, (2, 3), generator=g)
    ref = torch.log_softmax(x, -1).gather(-1, ids[..., None]).squeeze(-1)
    torch.testing.assert_close(L.selective_log_softmax(x, ids), ref)
    # bf16 logits: computed in float32, result float32
    out16 = L.selective_log_softmax(x.bfloat16(), ids)
    assert out16.dtype == torch.float32
    ref16 = torch.log_softmax(x.bfloat16().float(), -1).gather(-1, ids[..., None]).squeeze(-1)
    torch.testing.assert_close(out16, ref16)
    # gradient flows to the logits
    xg = x.clone().requires_grad_()
    L.selective_log_softmax(xg, ids).sum().backward()
    assert xg.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        L.selective_log_softmax(x, ids[:, :2])
