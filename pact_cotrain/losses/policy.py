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


TRACE_RATIO_FORMS = ("trace", "cross_context", "trace_weighted")
#: Forms whose gradient flows through the prompt-only pass on every sequence, anchored or not: the
#: caller must score the prompt-only pass on every row (and the trace-conditioned one, no grad needed,
#: on the non-anchored rows for the token weights).
PROMPT_GRADIENT_FORMS = ("trace_weighted",)
#: Cap c on the trace-based token weight of ``ratio_form="trace_weighted"`` [ours].
TRACE_WEIGHT_CLIP = 2.0


def _trace_old_logp(ratio_form, old_logp_trace, old_logp_prompt):
    if ratio_form == "trace":
        return old_logp_trace
    if ratio_form == "cross_context":
        if old_logp_prompt is None:
            raise ValueError("ratio_form='cross_context' needs old_logp_prompt")
        return old_logp_prompt
    if ratio_form == "trace_weighted":
        raise ValueError("ratio_form='trace_weighted' takes its gradient through the prompt-only pass: "
                         "use trace_weighted_prompt_surrogate or anchored_rl_loss")
    raise ValueError(f"unknown ratio_form {ratio_form!r}; expected one of {TRACE_RATIO_FORMS}")


def trace_token_weights(
    old_logp_trace: torch.Tensor,
    old_logp_prompt: torch.Tensor,
    mask: torch.Tensor,
    clip: float = TRACE_WEIGHT_CLIP,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stop-gradient token weights from the trace-conditioned pass [ours] (rejected reading 2).

        rho_it = pi_old(tau_it | x, h, tau_i<t) / pi_old(tau_it | x, tau_i<t)
        w~_it  = min(rho_it, c)                                   (c = ``clip``; rho > 0 already)
        w_it   = m_it w~_it n_i / sum_s m_is w~_is,   n_i = sum_s m_is

    Why this weight: rho is the per-token importance ratio from the prompt-only to the
    trace-conditioned policy, so ``w A grad log pi(tau_t | x)`` estimates the prompt-only gradient
    as if the tokens had been drawn where the trace puts its mass: tokens the expert trace makes
    likelier get more of the credit (or blame), tokens it contradicts less. The cap c bounds the
    variance of a few tokens that the trace makes far likelier (truncated importance weights, as
    in Retrace / V-trace; c = 2 by default). Normalising per sequence to mean 1 makes the trace a
    *token*-level redistribution of each rollout's advantage: a sequence's total weight stays
    its token count, as in GRPO, so the group advantages keep summing to zero; a sequence-level
    rescale would re-rank whole rollouts by how much the trace agrees with them, a bias on top of
    the reward. ``log rho`` is clamped to ``+-LOG_RATIO_CLAMP``.

    Both inputs are detached. Returns ``(w, rho)`` [B, T], 0 outside the mask (a row without
    masked tokens is all 0).
    """
    if not clip > 0:
        raise ValueError(f"trace weight clip must be > 0, got {clip}")
    _check_same_shape("old_logp_prompt", old_logp_prompt, old_logp_trace)
    _check_same_shape("mask", mask, old_logp_trace)
    valid = _as_bool(mask)
    zeros = torch.zeros_like(old_logp_trace)
    log_rho = torch.where(valid, old_logp_trace.detach() - old_logp_prompt.detach(), zeros)
    rho = torch.where(valid, torch.exp(log_rho.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)), zeros)
    capped = rho.clamp(max=clip)
    n_tokens = valid.sum(-1, keepdim=True)
    total = capped.sum(-1, keepdim=True)
    weights = torch.where(valid, capped * n_tokens / total.clamp_min(torch.finfo(total.dtype).tiny), zeros)
    return weights, rho


def _trace_weighted_per_token(logp_prompt, old_logp_prompt, old_logp_trace, advantages, valid, eps_low, eps_high,
                              clip):
    """Per-token ``w_it l_it`` with ``l`` the prompt-only clipped loss; (per_token, ratio, lo, hi, rho)."""
    per_token, ratio, lo, hi = _clipped_per_token(logp_prompt, old_logp_prompt, advantages, valid, eps_low, eps_high)
    old_prompt = logp_prompt.detach() if old_logp_prompt is None else old_logp_prompt
    weights, rho = trace_token_weights(old_logp_trace, old_prompt, valid, clip)
    return torch.where(valid, weights * per_token, torch.zeros_like(per_token)), ratio, lo, hi, rho


def _trace_weight_stats(rho, valid, clip, prefix: str = "") -> dict[str, torch.Tensor]:
    return {f"{prefix}trace_rho_mean": _mean_or_nan(rho, valid),
            f"{prefix}trace_weight_clip_frac": _mean_or_nan(rho > clip, valid)}


def trace_weighted_prompt_surrogate(
    logp_prompt: torch.Tensor,
    old_logp_prompt: torch.Tensor | None,
    old_logp_trace: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    clip: float = TRACE_WEIGHT_CLIP,
    aggregation: str = "token_mean",
    max_tokens: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Rejected reading 2 of spec section 2: prompt-only gradient with trace-based token weights.

        r_it = pi_theta(tau_it | x, tau_i<t) / pi_old(tau_it | x, tau_i<t)
        L    = aggregate( -w_it min(r_it A_i, clip(r_it, 1-eps_low, 1+eps_high) A_i), m )

    The gradient flows through ``logp_prompt`` only (the prompt-only [x; tau] pass); ``w`` are the
    stop-gradient weights of :func:`trace_token_weights` from ``old_logp_trace`` (pi_old on
    [x; h; tau]: on-policy, the trace-conditioned pass detached) and pi_old(.|x)
    (``old_logp_prompt``; ``None`` = on-policy, ``logp_prompt.detach()``, r == 1). ``A_i`` are the
    prompt-only group advantages. With ``w == 1`` this is :func:`clipped_policy_loss`.

    Stats: those of :func:`clipped_policy_loss`, plus ``trace_rho_mean`` (masked mean of rho) and
    ``trace_weight_clip_frac`` (share of masked tokens with rho > c).
    """
    _check_eps(eps_low, eps_high)
    _check_same_shape("mask", mask, logp_prompt)
    valid = _as_bool(mask)
    per_token, ratio, lo, hi, rho = _trace_weighted_per_token(
        logp_prompt, old_logp_prompt, old_logp_trace, advantages, valid, eps_low, eps_high, clip)
    loss = aggregate_loss(per_token, valid, aggregation, max_tokens)
    return loss, {**_policy_stats(ratio, lo, hi, valid), **_trace_weight_stats(rho, valid, clip)}


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
    contexts) and needs ``old_logp_prompt``. The other rejected reading, ``"trace_weighted"``,
    has its gradient in the prompt-only pass: :func:`trace_weighted_prompt_surrogate`.
    Stats as :func:`clipped_policy_loss`.
    """
    old = _trace_old_logp(ratio_form, old_logp_trace, old_logp_prompt)
    return clipped_policy_loss(
        logp_trace, old, advantages, mask, eps_low, eps_high, aggregation=aggregation, max_tokens=max_tokens
    )
