"""Component-aware SFT on the expert trace (spec section 3), and CHORD's token weight phi."""

from __future__ import annotations

import torch

from ._masks import _as_bool, _check_same_shape, _mean_or_nan


def chord_phi(logp: torch.Tensor) -> torch.Tensor:
    """CHORD-phi's per-token weight of the expert SFT term (Zhang et al., 2025, arXiv 2508.11408):

        phi_t = p_t (1 - p_t),    p_t = exp(logp_t) = pi_theta(y*_t | context)

    the model's probability of the expert token t. phi peaks at p = 1/2 and vanishes for tokens
    the model already predicts (p -> 1) and for tokens far from its distribution (p -> 0).
    Detached: phi only weights -logp_t and carries no gradient (the released Trinity-RFT
    `SFTPhiLossFn` computes `-logprob * phi.detach()`). Masked-off positions may hold any value.
    """
    p = logp.detach().exp()
    return p * (1.0 - p)


def component_sft_loss(
    logp: torch.Tensor,
    reasoning_mask: torch.Tensor,
    toolcall_mask: torch.Tensor,
    toolcall_weight: float,
    reasoning_weight: float = 1.0,
    answer_mask: torch.Tensor | None = None,
    answer_weight: float | None = None,
    phi: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Component-aware SFT on the expert trace (spec section 3).

        L_SFT = -[ w_r sum_{t in R} logp_t + lambda sum_{t in C} logp_t + w_a sum_{t in Ans} logp_t ] / N_sup

    ``logp`` [B, T] are the log-probs of the trace tokens under the prompt-only context
    ``pi_theta(h_t | x, h_<t)``. R = ``reasoning_mask`` (the caller already restricted it to
    the supervised leading segments, see :func:`reasoning_segments_supervised`),
    C = ``toolcall_mask`` (full tool-call spans), Ans = ``answer_mask`` (final answer).
    Tool responses, template tokens and unsupervised reasoning segments are in no mask.
    Masks are binary and expected disjoint (a token in two masks would get the sum of weights).

    * ``lambda = toolcall_weight`` (see :func:`toolcall_weight`), ``w_r = reasoning_weight``.
    * ``answer_weight=None`` defaults to ``toolcall_weight`` (spec: "default to the tool-call
      weight"); ``answer_mask=None`` means no answer term.
    * ``N_sup`` = number of tokens of the whole batch that are in a mask whose weight is > 0
      (a component with weight 0 is not supervised and does not dilute the others), clamped
      to >= 1; nothing supervised gives loss 0.
    * ``phi=True`` (CHORD-phi): every supervised token's weight is multiplied by
      :func:`chord_phi` (detached), ``L = -sum_t w_t phi_t logp_t / N_sup``; N_sup unchanged (the
      released CHORD code takes the plain masked mean of ``-logp phi``).

    Stats (detached): ``n_supervised``; ``n_reasoning`` / ``n_toolcall`` / ``n_answer``
    (mask sizes); ``logp_reasoning_mean`` / ``logp_toolcall_mean`` / ``logp_answer_mean``
    (mean logp over each mask, regardless of its weight; NaN when empty or absent).
    """
    weights = {"reasoning_weight": reasoning_weight, "toolcall_weight": toolcall_weight}
    if answer_weight is None:
        answer_weight = toolcall_weight
    if answer_mask is not None:
        weights["answer_weight"] = answer_weight
    for name, w in weights.items():
        if w < 0:
            raise ValueError(f"{name} must be >= 0, got {w}")

    components = [("reasoning", reasoning_mask, reasoning_weight), ("toolcall", toolcall_mask, toolcall_weight)]
    if answer_mask is not None:
        components.append(("answer", answer_mask, answer_weight))

    token_weight = torch.zeros_like(logp)
    supervised = torch.zeros_like(logp, dtype=torch.bool)
    stats: dict[str, torch.Tensor] = {}
    for name, mask, w in components:
        _check_same_shape(f"{name}_mask", mask, logp)
        on = _as_bool(mask)
        token_weight = token_weight + on.to(logp.dtype) * w
        if w > 0:
            supervised = supervised | on
        stats[f"n_{name}"] = on.sum().detach()
        stats[f"logp_{name}_mean"] = _mean_or_nan(logp, on)
    if answer_mask is None:
        stats["n_answer"] = torch.zeros((), dtype=torch.long, device=logp.device)
        stats["logp_answer_mean"] = torch.full((), float("nan"), dtype=logp.dtype, device=logp.device)

    if phi:  # phi only where supervised: off-mask log-probs may be NaN and must stay gradient-free
        weight_phi = torch.where(supervised, chord_phi(logp), torch.zeros_like(logp))
        token_weight = token_weight * weight_phi
        stats["phi_mean"] = _mean_or_nan(weight_phi, supervised)
    n_supervised = supervised.sum()
    weighted = torch.where(supervised, token_weight * logp, torch.zeros_like(logp))
    loss = -weighted.sum() / n_supervised.clamp(min=1).to(logp.dtype)
    stats["n_supervised"] = n_supervised.detach()
    return loss, stats
