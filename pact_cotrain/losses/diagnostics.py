"""Diagnostics and log-prob utilities."""

from __future__ import annotations

import torch

from ._masks import _check_same_shape, aggregate_loss


def context_kl_per_token(logp_prompt: torch.Tensor, logp_trace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token KL(pi(.|x) || pi(.|x,h)) estimated on prompt-only rollouts (detached 0-dim tensor).

        KL_hat = sum_it m_it [log pi(tau_it | x, tau_i<t) - log pi(tau_it | x, h, tau_i<t)] / max(sum m, 1)

    with tau_i ~ pi(.|x) (the prompt-only policy's own samples) and both log-probs from the same
    weights. On such samples the bracket's expectation at each step is KL(pi(.|x, tau_<t) ||
    pi(.|x, h, tau_<t)) >= 0, so KL_hat is a Monte-Carlo (k1) estimate of the mean per-token KL
    between the two contexts: how much having the trace h in context changes the policy on the
    paths it takes without it. 0 when h changes nothing. It says nothing about whether the change
    helps (the trace-use diagnostic's success rates do). Single samples can be negative; the
    estimate is unbiased only when tau was drawn from the weights that give logp_prompt.
    """
    _check_same_shape("logp_trace", logp_trace, logp_prompt)
    _check_same_shape("mask", mask, logp_prompt)
    diff = logp_prompt.detach() - logp_trace.detach()
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
