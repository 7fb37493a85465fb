"""Regularisers of the RL term that some baselines release with: a KL penalty to a fixed reference
policy and an entropy bonus (MatchTIR and ToolRL run verl with both; CHORD with neither)."""

from __future__ import annotations

import torch

from ._masks import _as_bool, _check_same_shape, aggregate_loss


def kl_penalty_k3(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, aggregation: str = "token_mean",
                  max_tokens: int | None = None, row_on: torch.Tensor | None = None) -> torch.Tensor:
    """KL(pi_theta || pi_ref) on sampled tokens by Schulman's k3 estimator (TRL's GRPOTrainer, verl's
    `low_var_kl`):

        k3_t = exp(ref_logp_t - logp_t) - (ref_logp_t - logp_t) - 1   >= 0,
        E_{tau_t ~ pi_theta}[k3_t] = KL(pi_theta(.|s_t) || pi_ref(.|s_t))    (unbiased when tau ~ pi_theta)

    reduced over ``mask`` by ``aggregation`` (:func:`aggregate_loss`), so that beta * this sits beside a
    policy loss reduced the same way. ``ref_logp`` is detached (the reference is fixed); the gradient flows
    through ``logp``. ``row_on`` [B] (optional) zeroes the rows the penalty does not cover while keeping
    them in the normaliser (the policy loss's rows), so one micro-batch scale serves both.
    verl clamps k3 to [-10, 10]; TRL does not: no clamp here.
    """
    _check_same_shape("ref_logp", ref_logp, logp)
    _check_same_shape("mask", mask, logp)
    on = _as_bool(mask)
    if row_on is not None:
        on = on & row_on.to(on.device).bool().unsqueeze(-1)
    # off positions get delta = 0 before exp (k3 = 0, gradient exactly 0 even where the log-probs are NaN)
    delta = torch.where(on, ref_logp.detach() - logp, torch.zeros_like(logp))
    k3 = torch.exp(delta) - delta - 1.0
    return aggregate_loss(k3, mask, aggregation, max_tokens)


def entropy_bonus(entropy: torch.Tensor, mask: torch.Tensor, aggregation: str = "token_mean",
                  max_tokens: int | None = None) -> torch.Tensor:
    """Mean policy entropy over generated tokens, the quantity an entropy bonus maximises (verl:
    `pg_loss - entropy_coeff * entropy_loss`):

        H_t = -sum_v pi_theta(v|s_t) log pi_theta(v|s_t),    L_ent = -entropy_coef * aggregate(H)

    ``entropy`` [B, T] must carry its gradient (computed from the logits without detaching).
    Returns aggregate(H) (the caller subtracts entropy_coef times it).
    """
    return aggregate_loss(entropy, mask, aggregation, max_tokens)
