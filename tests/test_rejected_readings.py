"""The spec's second rejected reading (section 2) as an ablation switch: a prompt-only gradient with
stop-gradient token weights from the trace-conditioned pass (``method.surrogate=trace_weighted``).
Every expected value below is computed by hand in the comments."""

import math

import pytest
import torch

from pact_cotrain import losses as L
from pact_cotrain.training.methods import MethodConfig

LN = math.log
NAN = float("nan")


def t(rows, grad=False):
    return torch.tensor(rows, dtype=torch.float, requires_grad=grad)


# Two sequences; row 1's last position is outside the mask and holds junk (NaN) in every input.
MASK = [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]
ADV = [1.0, -2.0]
P = [[-1.0, -2.0, -1.0], [-2.0, -2.0, NAN]]  # log pi_theta(tau_t | x): the prompt-only pass
# log rho = log pi_old(.|x,h) - log pi_old(.|x) = [ln 3, 0, ln 0.5] and [ln 0.25, ln 0.25, junk]
LOG_RHO = [[LN(3.0), 0.0, LN(0.5)], [LN(0.25), LN(0.25), NAN]]
T = [[p + r for p, r in zip(pr, rr)] for pr, rr in zip(P, LOG_RHO)]  # log pi_old(tau_t | x, h) on-policy
# Off-policy pi_old(.|x): log r = P - O = [ln 1.5, 0, 0] and [0, ln 0.5, junk]
O = [[-1.0 - LN(1.5), -2.0, -1.0], [-2.0, -2.0 - LN(0.5), NAN]]


def close(a, b, tol=1e-6):
    return abs(float(torch.as_tensor(a).detach()) - float(b)) < tol


def test_trace_token_weights_clip_then_normalise_per_sequence():
    w, rho = L.trace_token_weights(t(T), t(P), t(MASK), clip=2.0)
    # row 0: rho 3, 1, 0.5 -> capped 2, 1, 0.5 (sum 3.5, 3 tokens) -> 2*3/3.5, 1*3/3.5, 0.5*3/3.5
    # row 1: rho 0.25, 0.25 -> equal, mean 1 over its 2 tokens; the junk position gets 0
    expected = [[12 / 7, 6 / 7, 3 / 7], [1.0, 1.0, 0.0]]
    assert torch.allclose(w, torch.tensor(expected), atol=1e-6)
    assert torch.allclose(rho, torch.tensor([[3.0, 1.0, 0.5], [0.25, 0.25, 0.0]]), atol=1e-6)
    # Per sequence the weights average 1 over the masked tokens: the trace only redistributes credit.
    assert torch.allclose((w * t(MASK)).sum(-1), t(MASK).sum(-1))
    # A larger cap keeps rho = 3: row 0 becomes 3, 1, 0.5 over 4.5 -> 2, 2/3, 1/3.
    w_big, _ = L.trace_token_weights(t(T), t(P), t(MASK), clip=10.0)
    assert torch.allclose(w_big[0], torch.tensor([2.0, 2 / 3, 1 / 3]), atol=1e-6)
    with pytest.raises(ValueError):
        L.trace_token_weights(t(T), t(P), t(MASK), clip=0.0)


def test_trace_weighted_surrogate_on_policy_value_and_gradient():
    logp, trace = t(P, grad=True), t(T, grad=True)
    loss, stats = L.trace_weighted_prompt_surrogate(logp, None, trace, t(ADV), t(MASK))
    # r == 1: l = -A w. Row 0: -(12 + 6 + 3)/7 = -3; row 1: 2 * (1 + 1) = 4. Token mean over 5: 1/5.
    assert close(loss, 0.2)
    loss.backward()
    # dL/dlogp = -A w / 5; the trace-conditioned pass gets no gradient at all.
    expected = [[-12 / 35, -6 / 35, -3 / 35], [0.4, 0.4, 0.0]]
    assert torch.allclose(logp.grad, torch.tensor(expected), atol=1e-6)
    assert trace.grad is None
    assert close(stats["trace_rho_mean"], (3 + 1 + 0.5 + 0.25 + 0.25) / 5)
    assert close(stats["trace_weight_clip_frac"], 1 / 5)  # only rho = 3 is above c = 2


def test_trace_weighted_surrogate_off_policy_clips_the_prompt_ratio():
    logp = t(P, grad=True)
    loss, stats = L.trace_weighted_prompt_surrogate(logp, t(O), t(T), t(ADV), t(MASK))
    # Weights from pi_old: log rho = T - O. Row 0: ln 4.5, 0, ln 0.5 -> capped 2, 1, 0.5 -> 12/7, 6/7, 3/7.
    # Row 1: ln 0.25, ln 0.125 -> 0.25, 0.125 (sum 0.375, 2 tokens) -> 4/3, 2/3.
    # Row 0 (A = 1): r = 1.5 > 1.28 is clipped: -1.28 * 12/7; then -6/7, -3/7        -> sum -3.48
    # Row 1 (A = -2): r = 1: 2 * 4/3 = 8/3; r = 0.5 < 0.8 clipped: 2 * 0.8 * 2/3 = 16/15 -> sum 56/15
    assert close(loss, (-3.48 + 56 / 15) / 5)
    loss.backward()
    expected = [[0.0, -6 / 35, -3 / 35], [8 / 15, 0.0, 0.0]]  # clipped tokens: zero gradient
    assert torch.allclose(logp.grad, torch.tensor(expected), atol=1e-6)
    assert close(stats["clip_frac"], 2 / 5)
    assert close(stats["trace_rho_mean"], (4.5 + 1 + 0.5 + 0.25 + 0.125) / 5)


def test_unit_weights_recover_the_prompt_only_clipped_loss():
    # pi_old(.|x,h) == pi_old(.|x): w == 1 and the loss is plain GRPO on the prompt-only pass.
    ref, _ = L.clipped_policy_loss(t(P), t(O), t(ADV), t(MASK))
    loss, _ = L.trace_weighted_prompt_surrogate(t(P), t(O), t(O), t(ADV), t(MASK))
    assert close(loss, ref)


def test_anchored_loss_routes_every_gradient_through_the_prompt_pass():
    logp = t(P, grad=True)
    trace = t([[NAN, NAN, NAN], T[1]], grad=True)  # anchored row 0 was not scored under [x; h]
    anchor = torch.tensor([True, False])
    loss, stats = L.anchored_rl_loss(logp, t(O), trace, None, t(ADV), t(MASK), anchor, ratio_form="trace_weighted")
    # Row 0 is anchored: plain GRPO, -1.28 - 1 - 1 = -3.28. Row 1: trace-weighted, 56/15 (as above).
    assert close(loss, (-3.28 + 56 / 15) / 5)
    loss.backward()
    expected = [[0.0, -0.2, -0.2], [8 / 15, 0.0, 0.0]]
    assert torch.allclose(logp.grad, torch.tensor(expected), atol=1e-6)
    assert trace.grad is None or not trace.grad.any()
    assert close(stats["tc/loss"], 56 / 15 / 2) and close(stats["grpo/loss"], -3.28 / 3)
    assert close(stats["tc/trace_rho_mean"], (0.25 + 0.125) / 2)
    # The same inputs under the spec's form put row 1's gradient into the trace pass instead.
    logp2, trace2 = t(P, grad=True), t([[NAN, NAN, NAN], T[1]], grad=True)
    L.anchored_rl_loss(logp2, t(O), trace2, None, t(ADV), t(MASK), anchor)[0].backward()
    assert trace2.grad[1].abs().sum() > 0 and not logp2.grad[1].any()


def test_anchored_loss_trace_weighted_mixture_and_missing_passes():
    logp = t(P, grad=True)
    # Mixture, q = 0.25: 0.25 L_GRPO + 0.75 L_weighted over both rows, old pi(.|x,h) given directly.
    loss, _ = L.anchored_rl_loss(logp, t(O), None, t(T), t(ADV), t(MASK), None, mode="mixture", q=0.25,
                                 ratio_form="trace_weighted")
    grpo, _ = L.clipped_policy_loss(t(P), t(O), t(ADV), t(MASK))
    weighted, _ = L.trace_weighted_prompt_surrogate(t(P), t(O), t(T), t(ADV), t(MASK))
    assert close(loss, 0.25 * grpo + 0.75 * weighted)
    anchor = torch.tensor([False, False])
    with pytest.raises(ValueError, match="logp_prompt"):  # the prompt pass is what this form trains
        L.anchored_rl_loss(None, None, t(T), None, t(ADV), t(MASK), anchor, ratio_form="trace_weighted")
    with pytest.raises(ValueError, match="logp_trace"):  # and pi_old(.|x,h) is what weighs the tokens
        L.anchored_rl_loss(t(P), None, None, None, t(ADV), t(MASK), anchor, ratio_form="trace_weighted")
    with pytest.raises(ValueError, match="prompt-only pass"):
        L.trace_conditioned_surrogate(t(T), None, t(ADV), t(MASK), ratio_form="trace_weighted")


def test_method_config_accepts_the_switch_and_rejects_unknown_ones():
    assert MethodConfig(surrogate="trace_weighted").surrogate in L.PROMPT_GRADIENT_FORMS
    with pytest.raises(ValueError):
        MethodConfig(surrogate="bogus")
    with pytest.raises(ValueError, match="anchor_mode=sample"):
        MethodConfig(surrogate="trace_weighted", anchor_mode="mixture", anchor_q=0.0)


def test_trainer_scores_the_prompt_pass_on_every_row_for_trace_weighted(tmp_path, tokenizer, monkeypatch):
    from pact_cotrain.config import load_config
    from pact_cotrain.recipes.train import build_trainer
    from pact_cotrain.testing import tiny_llama

    calls = []
    original = L.anchored_rl_loss

    def recording(logp_prompt, old_logp_prompt, logp_trace, old_logp_trace, advantages, mask, anchor, *args, **kw):
        calls.append((logp_prompt, logp_trace, mask, anchor, kw))
        return original(logp_prompt, old_logp_prompt, logp_trace, old_logp_trace, advantages, mask, anchor,
                        *args, **kw)

    monkeypatch.setattr(L, "anchored_rl_loss", recording)
    small = ["train.k=2", "train.prompts_per_step=2", "data.n_train=8", "sampling.max_new_tokens_per_turn=12",
             "sampling.max_completion_tokens=48", "sampling.max_turns=2", "train.report_to=[]",
             "train.disable_tqdm=true", "train.save_steps=0", "train.max_steps=2", f"output_dir={tmp_path}/run",
             "method.surrogate=trace_weighted", "method.anchor_q=0.0"]  # no anchored row: all weighted
    trainer = build_trainer(load_config("pact", small), model=tiny_llama(tokenizer), tokenizer=tokenizer)
    trainer.train()
    assert trainer.state.global_step == 2 and calls
    for logp_prompt, logp_trace, mask, anchor, kw in calls:
        assert kw["ratio_form"] == "trace_weighted" and not anchor.any()
        assert logp_prompt is not None and logp_trace is not None
        assert logp_prompt.requires_grad
        # every row's generated tokens were scored by the prompt-only pass (log-probs < 0 there)
        assert bool((logp_prompt[mask.bool()] < 0).all())
