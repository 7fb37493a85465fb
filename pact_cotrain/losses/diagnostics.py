"""Diagnostics and log-prob utilities."""

from __future__ import annotations

import torch

from ._masks import _check_same_shape, aggregate_loss


def over_reliance_gap(logp_trace: torch.Tensor, logp_prompt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean per-token log-likelihood gain from having the trace in context (detached 0-dim tensor).

        gap = sum_it m_it [log pi(tau_it | x, h, .) - log pi(tau_it | x, .)] / max(sum m, 1)

    Large and growing values mean the policy leans on h more than the deployed path can.
    """
    _check_same_shape("logp_prompt", logp_prompt, logp_trace)
    _check_same_shape("mask", mask, logp_trace)
    diff = (logp_trace.detach() - logp_prompt.detach())
    return aggregate_loss(diff, mask, "token_mean").detach()


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax over the last dim: ``H = -sum_v p_v log p_v``; [..., V] -> [...].

    ``-inf`` logits (banned tokens) contribute 0, with finite gradient.
    """
    log_p = torch.log_softmax(logits, dim=-1)
    p = log_p.exp()
    safe_log_p = torch.where(torch.isfinite(log_p), log_p, torch.zeros_like(log_p))
    return -(p * safe_log_p).sum(dim=-1)


def selective_log_softmax(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits)[..., ids]`` without materialising a full log-softmax at once.

        logp_t = logits_t[id_t] - logsumexp_v logits_t[v]

    ``logits`` [..., V], ``ids`` [...] (integer). The logsumexp runs one leading row at a time
    to bound peak memory. For float32/float64 the result has the logits' dtype; half
    precision (bf16/fp16) rows are upcast to float32 first (logsumexp in bf16 loses too much)
    and the result is float32.
    """
    if logits.dim() < 2:
        raise ValueError("logits must be [..., T, V] with at least 2 dims")
    if ids.shape != logits.shape[:-1]:
        raise ValueError(f"ids has shape {tuple(ids.shape)}, expected {tuple(logits.shape[:-1])}")
    ids = ids.long().unsqueeze(-1)
    if logits.dtype in (torch.float32, torch.float64):
        picked = logits.gather(-1, ids).squeeze(-1)
        lse = torch.stack([torch.logsumexp(row, dim=-1) for row in logits])
        return picked - lse
    rows = []
    for row, row_ids in zip(logits, ids):
        row = row.float()
        rows.append(row.gather(-1, row_ids).squeeze(-1) - torch.logsumexp(row, dim=-1))
    return torch.stack(rows)
