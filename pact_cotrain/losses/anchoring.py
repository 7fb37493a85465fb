"""Prompt-only anchoring (spec section 4): the anchor draw and the anchored RL loss."""

from __future__ import annotations

import torch

from ._masks import _as_bool, _check_eps, _check_same_shape, _mean_or_nan, aggregate_loss
from .policy import (
    TRACE_WEIGHT_CLIP,
    _clipped_per_token,
    _policy_stats,
    _trace_old_logp,
    _trace_weight_stats,
    _trace_weighted_per_token,
)


def draw_anchor_mask(n_prompts: int, q: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``b_x ~ Bernoulli(q)`` per prompt (spec section 4): BoolTensor [n_prompts].

    Drawn as ``U[0,1) < q`` on the generator's device (CPU without one), so q = 0 never and
    q = 1 always anchors, and the same generator state gives the same draw.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    device = generator.device if generator is not None else None
    return torch.rand(n_prompts, generator=generator, device=device) < q


def expand_to_rollouts(per_prompt: torch.Tensor, group_size: int) -> torch.Tensor:
    """Repeat each prompt's entry for its K = ``group_size`` rollouts (group-contiguous layout).

    ``[b_0, b_1] -> [b_0]*K + [b_1]*K``: all rollouts of a prompt share its anchoring draw.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    return per_prompt.repeat_interleave(group_size, dim=0)


ANCHOR_MODES = ("sample", "mixture")


def anchored_rl_loss(
    logp_prompt: torch.Tensor | None,
    old_logp_prompt: torch.Tensor | None,
    logp_trace: torch.Tensor | None,
    old_logp_trace: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    anchor: torch.Tensor | None,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    mode: str = "sample",
    q: float | None = None,
    ratio_form: str = "trace",
    aggregation: str = "token_mean",
    max_tokens: int | None = None,
    trace_weight_clip: float = TRACE_WEIGHT_CLIP,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """RL loss with prompt-only anchoring (spec section 4).

    ``mode="sample"`` (the spec's form): ``anchor`` [B] bool, one entry per *sequence*
    (expand the per-prompt draw with :func:`expand_to_rollouts`). Per token,

        l_it = b_i l^GRPO_it + (1 - b_i) l^TC_it
        L_RL = aggregate(l, m)           over ALL masked tokens of the batch

    where ``l^GRPO`` is the clipped loss of the prompt-only pass (``logp_prompt`` /
    ``old_logp_prompt``) and ``l^TC`` the trace-conditioned one (``logp_trace`` /
    ``old_logp_trace``, or the cross-context ratio). With token_mean this is the token-count
    weighted combination ``(N_a Lbar_GRPO + N_t Lbar_TC) / (N_a + N_t)``, with ``N_a`` / ``N_t``
    the masked tokens of anchored / other sequences and ``Lbar`` their token means, i.e. the
    per-prompt mixture of the spec with every token weighted equally.

    Selection uses ``torch.where``: an anchored sequence gets gradient only through
    ``logp_prompt``, any other only through ``logp_trace``; the unselected pass's rows are
    ignored and may hold anything (zeros, NaN), so a caller that ran a pass on a subset only
    can scatter it into a full [B, T] tensor. ``logp_trace=None`` is allowed when every
    sequence is anchored, ``logp_prompt=None`` when none is.

    ``mode="mixture"`` (extension): the deterministic ``L = q L_GRPO + (1 - q) L_TC`` with
    both losses over all sequences (``anchor`` is ignored, ``q`` required). ``logp_trace`` may
    be None when q == 1, ``logp_prompt`` when q == 0.

    ``ratio_form="trace_weighted"`` (rejected reading 2 of spec section 2): ``l^TC`` is replaced by
    the prompt-only clipped loss times stop-gradient token weights from the trace-conditioned pass
    (:func:`trace_weighted_prompt_surrogate`, cap ``trace_weight_clip``), so every sequence's
    gradient flows through ``logp_prompt``, which must then hold every row the TC branch uses;
    ``logp_trace`` (detached) or ``old_logp_trace`` gives pi_old(.|x,h) for the weights.

    Stats: ``anchor_frac`` (fraction of sequences anchored; q in mixture mode), and for each
    branch ``grpo/`` and ``tc/``: ``loss`` (token mean of that branch's per-token loss over its
    tokens), ``n_tokens``, and the :func:`clipped_policy_loss` stats over its tokens (NaN when
    the branch has no tokens).
    """
    _check_eps(eps_low, eps_high)
    ref = logp_prompt if logp_prompt is not None else logp_trace
    if ref is None:
        raise ValueError("need at least one of logp_prompt, logp_trace")
    _check_same_shape("mask", mask, ref)
    _check_same_shape("logp_trace", logp_trace, ref)
    valid = _as_bool(mask)
    prompt_gradient = ratio_form == "trace_weighted"
    # What the TC branch needs: the trace pass; for trace_weighted, the prompt pass (the gradient) and
    # pi_old(.|x,h) for the weights (on-policy: the trace pass, detached).
    tc_source = logp_trace
    if prompt_gradient:
        trace_old = old_logp_trace if old_logp_trace is not None else logp_trace
        tc_source = trace_old if logp_prompt is not None else None
    tc_needs = "logp_prompt and logp_trace (or old_logp_trace)" if prompt_gradient else "logp_trace"

    if mode == "sample":
        if anchor is None:
            raise ValueError("mode='sample' needs an anchor mask")
        anchor = _as_bool(anchor).to(ref.device)
        if anchor.shape != (ref.shape[0],):
            raise ValueError(
                f"anchor has shape {tuple(anchor.shape)}, expected [{ref.shape[0]}] "
                "(one entry per sequence; use expand_to_rollouts)"
            )
        valid_grpo = valid & anchor.unsqueeze(-1)
        valid_tc = valid & ~anchor.unsqueeze(-1)
        if logp_prompt is None and bool(anchor.any()):
            raise ValueError("logp_prompt is None but some sequences are anchored")
        if tc_source is None and not bool(anchor.all()):
            raise ValueError(f"some sequences are not anchored but {tc_needs} is missing")
        weight_grpo, weight_tc = 1.0, 1.0
        anchor_frac = anchor.float().mean()
    elif mode == "mixture":
        if q is None or not 0.0 <= q <= 1.0:
            raise ValueError(f"mode='mixture' needs q in [0, 1], got {q}")
        if logp_prompt is None and q > 0:
            raise ValueError("logp_prompt is None but q > 0")
        if tc_source is None and q < 1:
            raise ValueError(f"q < 1 but {tc_needs} is missing")
        valid_grpo = valid_tc = valid
        weight_grpo, weight_tc = q, 1.0 - q
        anchor_frac = torch.tensor(float(q), device=ref.device)
    else:
        raise ValueError(f"unknown anchoring mode {mode!r}; expected one of {ANCHOR_MODES}")

    per_token = torch.zeros_like(ref)
    stats: dict[str, torch.Tensor] = {"anchor_frac": anchor_frac.detach()}
    branches = []
    if logp_prompt is not None:
        branches.append(("grpo/", logp_prompt, old_logp_prompt, valid_grpo, weight_grpo))
    if tc_source is not None:
        if prompt_gradient:  # gradient via the prompt pass; the trace side only weighs the tokens
            branches.append(("tc/", logp_prompt, old_logp_prompt, valid_tc, weight_tc))
        else:
            old_tc = _trace_old_logp(ratio_form, old_logp_trace, old_logp_prompt)
            branches.append(("tc/", logp_trace, old_tc, valid_tc, weight_tc))
    for prefix, logp, old, branch_valid, weight in branches:
        if prefix == "tc/" and prompt_gradient:
            pt, ratio, lo, hi, rho = _trace_weighted_per_token(logp, old, tc_source, advantages, branch_valid,
                                                               eps_low, eps_high, trace_weight_clip)
            stats.update(_trace_weight_stats(rho, branch_valid, trace_weight_clip, prefix))
        else:
            pt, ratio, lo, hi = _clipped_per_token(logp, old, advantages, branch_valid, eps_low, eps_high)
        per_token = per_token + weight * pt
        stats[f"{prefix}loss"] = _mean_or_nan(pt, branch_valid)
        stats[f"{prefix}n_tokens"] = branch_valid.sum().detach()
        stats.update(_policy_stats(ratio, lo, hi, branch_valid, prefix))
    for prefix in ("grpo/", "tc/"):  # a skipped pass: empty stats, same keys every call
        if f"{prefix}loss" not in stats:
            nan = torch.full((), float("nan"), device=ref.device)
            stats[f"{prefix}loss"] = nan
            stats[f"{prefix}n_tokens"] = torch.zeros((), dtype=torch.long, device=ref.device)
            for key in ("clip_frac_low", "clip_frac_high", "clip_frac", "ratio_mean"):
                stats[f"{prefix}{key}"] = nan

    loss = aggregate_loss(per_token, valid, aggregation, max_tokens)
    return loss, stats
