"""Private helpers shared by the losses, and the token aggregations (:func:`aggregate_loss`).

The conventions and the aggregations are described in the package docstring
(:mod:`pact_cotrain.losses`).
"""

from __future__ import annotations

import torch

AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "token_sum_norm")

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _as_bool(mask: torch.Tensor) -> torch.Tensor:
    return mask if mask.dtype == torch.bool else mask != 0


def _check_same_shape(name: str, tensor: torch.Tensor | None, ref: torch.Tensor) -> None:
    if tensor is not None and tensor.shape != ref.shape:
        raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {tuple(ref.shape)}")


def _broadcast_advantages(advantages: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, 1] (broadcast over tokens); [B, T] passes through."""
    if advantages.dim() == 1:
        if advantages.shape[0] != ref.shape[0]:
            raise ValueError(f"advantages has {advantages.shape[0]} entries for {ref.shape[0]} sequences")
        return advantages.unsqueeze(-1)
    if advantages.shape != ref.shape:
        raise ValueError(f"advantages has shape {tuple(advantages.shape)}, expected [B] or {tuple(ref.shape)}")
    return advantages


def _mean_or_nan(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Detached mean of ``values`` over ``valid``; NaN when ``valid`` is empty (0/0)."""
    values = values.detach()
    if not values.is_floating_point():
        values = values.float()
    total = torch.where(valid, values, torch.zeros_like(values)).sum()
    return total / valid.sum().to(total.dtype)


def _check_eps(eps_low: float, eps_high: float) -> None:
    if not 0.0 <= eps_low < 1.0:
        raise ValueError(f"eps_low must be in [0, 1), got {eps_low}")
    if eps_high < 0.0:
        raise ValueError(f"eps_high must be >= 0, got {eps_high}")


def masked_token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token-mean over the whole batch: ``sum(values * mask) / max(sum(mask), 1)``.

    Positions where the mask is 0 are excluded with ``torch.where`` (non-finite values there
    neither poison the result nor the gradient). An empty mask gives 0.
    """
    _check_same_shape("mask", mask, values)
    m = mask.to(values.dtype)
    total = torch.where(_as_bool(mask), values * m, torch.zeros_like(values)).sum()
    return total / m.sum().clamp(min=1.0)


def aggregate_loss(
    values: torch.Tensor,
    mask: torch.Tensor,
    aggregation: str = "token_mean",
    max_tokens: int | None = None,
) -> torch.Tensor:
    """Reduce per-token losses ``values`` [B, T] to a scalar over ``mask``.

        token_mean:           sum_{i,t} m l / max(sum_{i,t} m, 1)
        seq_mean_token_mean:  (1/B) sum_i [ sum_t m l / max(sum_t m, 1) ]
        token_sum_norm:       sum_{i,t} m l / (B * max_tokens)

    See the module docstring for when each is used.
    """
    _check_same_shape("mask", mask, values)
    valid = _as_bool(mask)
    v = torch.where(valid, values, torch.zeros_like(values))
    if aggregation == "token_mean":
        return v.sum() / valid.sum().clamp(min=1).to(v.dtype)
    if aggregation == "seq_mean_token_mean":
        per_seq = v.sum(dim=-1) / valid.sum(dim=-1).clamp(min=1).to(v.dtype)
        return per_seq.mean()
    if aggregation == "token_sum_norm":
        if max_tokens is None or max_tokens <= 0:
            raise ValueError("aggregation='token_sum_norm' needs a positive max_tokens")
        return v.sum() / (v.shape[0] * max_tokens)
    raise ValueError(f"unknown aggregation {aggregation!r}; expected one of {AGGREGATIONS}")
