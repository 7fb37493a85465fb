"""Clipped policy-gradient losses: the PPO/GRPO surrogate and the trace-conditioned one."""

from __future__ import annotations

import torch

from ._masks import _as_bool, _broadcast_advantages, _check_eps, _check_same_shape, _mean_or_nan, aggregate_loss

#: ``log r`` is clamped to ``[-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP]`` before ``exp`` (as verl does)
#: so a diverged token cannot overflow; beyond the clamp the gradient through the ratio is 0.
LOG_RATIO_CLAMP = 20.0


def _clipped_per_token(
    logp: torch.Tensor,
    old_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    valid: torch.Tensor,
    eps_low: float,
    eps_high: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token clipped surrogate; 0 (and zero gradient) outside ``valid``.

    Returns (per_token_loss, ratio, clipped_low, clipped_high); the last three are for stats.
    """
    old = logp.detach() if old_logp is None else old_logp.detach()
    _check_same_shape("old_logp", old, logp)
    adv = _broadcast_advantages(advantages, logp).detach()
    zeros = torch.zeros_like(logp)
    log_ratio = torch.where(valid, logp - old, zeros).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    per_token = torch.where(valid, torch.maximum(unclipped, clipped), zeros)
    clipped_low = valid & (adv < 0) & (ratio < 1.0 - eps_low)
    clipped_high = valid & (adv > 0) & (ratio > 1.0 + eps_high)
    return per_token, ratio, clipped_low, clipped_high


def _policy_stats(ratio, clipped_low, clipped_high, valid, prefix: str = "") -> dict[str, torch.Tensor]:
    return {
        f"{prefix}clip_frac_low": _mean_or_nan(clipped_low, valid),
        f"{prefix}clip_frac_high": _mean_or_nan(clipped_high, valid),
        f"{prefix}clip_frac": _mean_or_nan(clipped_low | clipped_high, valid),
        f"{prefix}ratio_mean": _mean_or_nan(ratio, valid),
    }


def clipped_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    aggregation: str = "token_mean",
    max_tokens: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO/GRPO clipped surrogate with asymmetric (DAPO "clip-higher") bounds.

        r_it = exp(logp_it - old_logp_it)
        l_it = -min( r_it A_i , clip(r_it, 1 - eps_low, 1 + eps_high) A_i )
        L    = aggregate(l, m)                        (see :func:`aggregate_loss`)

    ``old_logp`` is detached; ``None`` means on-policy (``old = logp.detach()``, r == 1),
    where the gradient is ``dL/dlogp_it = -A_i m_it / N`` for token_mean. ``log r`` is clamped
    to ``[-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP]``.

    Stats (detached 0-dim tensors, means over the masked tokens, NaN if the mask is empty):

    * ``clip_frac_low``:  fraction of masked tokens with ``A < 0`` and ``r < 1 - eps_low``
    * ``clip_frac_high``: fraction of masked tokens with ``A > 0`` and ``r > 1 + eps_high``
    * ``clip_frac``:      fraction in either set. These are exactly the tokens where the clipped
      term is active and the gradient is zero; ``A < 0, r > 1 + eps_high`` is *not* clipped.
    * ``ratio_mean``:     masked mean of r.
    """
    _check_eps(eps_low, eps_high)
    _check_same_shape("mask", mask, logp)
    valid = _as_bool(mask)
    per_token, ratio, lo, hi = _clipped_per_token(logp, old_logp, advantages, valid, eps_low, eps_high)
    loss = aggregate_loss(per_token, valid, aggregation, max_tokens)
    return loss, _policy_stats(ratio, lo, hi, valid)


TRACE_RATIO_FORMS = ("trace", "cross_context")


def _trace_old_logp(ratio_form, old_logp_trace, old_logp_prompt):
    if ratio_form == "trace":
        return old_logp_trace
    if ratio_form == "cross_context":
        if old_logp_prompt is None:
            raise ValueError("ratio_form='cross_context' needs old_logp_prompt")
        return old_logp_prompt
    raise ValueError(f"unknown ratio_form {ratio_form!r}; expected one of {TRACE_RATIO_FORMS}")


def trace_conditioned_surrogate(
    logp_trace: torch.Tensor,
    old_logp_trace: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    ratio_form: str = "trace",
    old_logp_prompt: torch.Tensor | None = None,
    aggregation: str = "token_mean",
    max_tokens: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Trace-conditioned RL surrogate L_TC (spec section 2).

    The prompt-only rollouts tau_i are re-scored with the expert trace h in context:

        r^h_it = pi_theta(tau_it | x, h, tau_i<t) / pi_old(tau_it | x, h, tau_i<t)     (ratio_form="trace")
        L_TC   = -sum_it m_it min(r^h_it A_i, clip(r^h_it, 1-eps_low, 1+eps_high) A_i) / sum m

    ``A_i`` are the prompt-only group advantages (:func:`group_advantages`). The gradient flows
    through ``logp_trace`` only (the log-probs of the [x; h; tau] forward pass, gathered at the
    rollout's tokens); ``old_logp_trace=None`` is the single on-policy update
    (``r = exp(logp - logp.detach())``).

    ``ratio_form="cross_context"`` is the rejected ablation
    ``r = pi_theta(tau_t | x, h, .) / pi_old(tau_t | x, .)`` (importance sampling across
    contexts) and needs ``old_logp_prompt``. Stats as :func:`clipped_policy_loss`.
    """
    old = _trace_old_logp(ratio_form, old_logp_trace, old_logp_prompt)
    return clipped_policy_loss(
        logp_trace, old, advantages, mask, eps_low, eps_high, aggregation=aggregation, max_tokens=max_tokens
    )
