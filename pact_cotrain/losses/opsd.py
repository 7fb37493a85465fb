"""On-policy self-distillation (OPSD) with the expert trace as the teacher's privileged context.

Two papers define it, on the same two policies of one set of weights: the student pi_theta(.|x) (the
prompt-only, deployed policy, which samples the rollouts) and the teacher pi_theta(.|x,h) (the same
weights with the expert trace h in context, no gradient through it).

* Zhao et al., "Self-Distilled Reasoner" (arXiv 2601.18734; released siyan-zhao/OPSD): minimise the
  per-token divergence between teacher and student over the student's own rollouts. The main objective
  is the full-vocabulary generalised Jensen-Shannon divergence JSD_beta (beta = 0.5, GKD's Eq. 1,
  :func:`generalized_jsd`); a "sampled-token policy-gradient" variant uses the per-token advantage
  log pi_T(y_t) - log pi_S(y_t) on the sampled token (:func:`opsd_policy_loss`, ``kl_credit="token"``).
  No outcome reward.
* Penaloza et al., "Privileged Information Distillation" (arXiv 2602.04942, the multi-turn tool-use
  paper; released Emilianopp/Privileged-Information-Distillation): OPSD is RL with a reverse-KL penalty
  toward the trace-conditioned teacher, max E_{tau~pi_S}[R(tau)] - beta KL(pi_S || sg[pi_T]). The
  released code shapes the GRPO advantage with the episode's sampled reverse KL summed over all turns'
  generated tokens, A_i - beta sum_t k_it (``kl_credit="sequence"``), then takes the PPO clipped loss.
* prime-rl's multi-turn ``opsd`` (``ref_kl`` loss): the per-token sampled reverse KL as the advantage,
  no outcome reward (``kl_credit="token"``, ``reward_coef=0``).

Per-token sampled reverse KL (the teacher and the student both at pi_old, i.e. the batch's weights):

    k_it = log pi_old(tau_it | x, tau_i<t) - log pi_old(tau_it | x, h, tau_i<t)

E_{tau_t ~ pi_S}[k_t] = KL(pi_S(.|x,.) || pi_T(.|x,h,.)) at each prefix, which is what it estimates.
"""

from __future__ import annotations

import torch

from ._masks import _as_bool, _broadcast_advantages, _check_same_shape, _mean_or_nan
from .policy import clipped_policy_loss

#: How the teacher's per-token signal is credited (``method.opsd_kl_credit``).
KL_CREDITS = ("token", "sequence")


def sampled_reverse_kl(student_logp: torch.Tensor, teacher_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token sampled reverse KL ``k_t = log pi_S(y_t) - log pi_T(y_t)`` on the mask, 0 elsewhere (detached).

    ``student_logp`` / ``teacher_logp`` [B, T] are the log-probs of the sampled tokens under the prompt-only
    context and under the trace-conditioned one. Off-mask entries may hold anything (NaN, -inf).
    """
    _check_same_shape("teacher_logp", teacher_logp, student_logp)
    _check_same_shape("mask", mask, student_logp)
    valid = _as_bool(mask)
    diff = student_logp.detach() - teacher_logp.detach()
    return torch.where(valid, diff, torch.zeros_like(diff))


def opsd_advantages(student_logp: torch.Tensor, teacher_logp: torch.Tensor, mask: torch.Tensor,
                    advantages: torch.Tensor | None = None, kl_coef: float = 1.0, reward_coef: float = 0.0,
                    kl_credit: str = "token") -> torch.Tensor:
    """Per-token advantages [B, T] of OPSD (detached; 0 off the mask).

        token:     A_it = reward_coef * A_i - kl_coef * k_it
        sequence:  A_it = reward_coef * A_i - kl_coef * sum_s m_is k_is        (the same for every t of row i)

    ``k`` from :func:`sampled_reverse_kl`; ``A_i`` the group advantages of the outcome reward ([B] or
    [B, T]; needed when ``reward_coef != 0``).
    """
    if kl_credit not in KL_CREDITS:
        raise ValueError(f"unknown OPSD kl_credit {kl_credit!r}; expected one of {KL_CREDITS}")
    if kl_coef < 0 or reward_coef < 0:
        raise ValueError(f"OPSD kl_coef and reward_coef must be >= 0, got {kl_coef} and {reward_coef}")
    valid = _as_bool(mask)
    k = sampled_reverse_kl(student_logp, teacher_logp, mask)
    signal = k if kl_credit == "token" else k.sum(-1, keepdim=True).expand_as(k)
    adv = -kl_coef * signal
    if reward_coef != 0:
        if advantages is None:
            raise ValueError("OPSD with reward_coef != 0 needs the outcome advantages")
        adv = adv + reward_coef * _broadcast_advantages(advantages, k).detach().to(k.dtype)
    return torch.where(valid, adv, torch.zeros_like(adv))


def opsd_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor | None,
    teacher_logp: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor | None = None,
    kl_coef: float = 1.0,
    reward_coef: float = 0.0,
    kl_credit: str = "token",
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    aggregation: str = "token_mean",
    max_tokens: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """OPSD on the sampled tokens of prompt-only rollouts, as a clipped policy-gradient loss.

        k_it  = log pi_old(tau_it | x, .) - log pi_old(tau_it | x, h, .)            (no gradient)
        A_it  = reward_coef A_i - kl_coef k_it                    (kl_credit="token")
              = reward_coef A_i - kl_coef sum_s m_is k_is          (kl_credit="sequence")
        r_it  = pi_theta(tau_it | x, .) / pi_old(tau_it | x, .)
        L     = aggregate( -min(r_it A_it, clip(r_it, 1-eps_low, 1+eps_high) A_it), m )

    ``logp`` are the student's log-probs (prompt-only pass, with gradient); ``old_logp`` pi_old's on the same
    context (``None``: on-policy, ``logp.detach()``, r == 1); ``teacher_logp`` the trace-conditioned pass's
    (no gradient). The student side of ``k`` is pi_old (``old_logp``, else ``logp.detach()``), so ``k`` is a
    fixed per-token reward of the batch, as in both released codes. ``m`` marks generated tokens only
    (tool responses and inserted template tokens are 0). On-policy with token credit and no reward the
    gradient is ``sum_t m_t k_t grad log pi_theta(tau_t|x) / N``, the score-function gradient of the
    per-token reverse KL(pi_S || pi_T) with the teacher held fixed.

    Stats: those of :func:`clipped_policy_loss`, plus ``reverse_kl`` (masked mean of k: mean per-token
    sampled KL(pi_S || pi_T)) and ``reverse_kl_seq`` (mean over rows with a masked token of sum_t k_t).
    """
    _check_same_shape("mask", mask, logp)
    old = logp.detach() if old_logp is None else old_logp.detach()
    adv = opsd_advantages(old, teacher_logp, mask, advantages, kl_coef, reward_coef, kl_credit)
    loss, stats = clipped_policy_loss(logp, old_logp, adv, mask, eps_low, eps_high, aggregation=aggregation,
                                      max_tokens=max_tokens)
    valid = _as_bool(mask)
    k = sampled_reverse_kl(old, teacher_logp, mask)
    rows = valid.any(-1)
    stats["reverse_kl"] = _mean_or_nan(k, valid)
    stats["reverse_kl_seq"] = _mean_or_nan(k.sum(-1), rows)
    return loss, stats


def generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
                    beta: float = 0.5, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Zhao et al.'s full-vocabulary OPSD divergence (GKD's generalised JSD, arXiv 2306.13649 Eq. 1).

        p_T = softmax(z_T / temperature),  p_S = softmax(z_S / temperature),  M = beta p_T + (1 - beta) p_S
        JSD_beta(t) = beta KL(p_T || M) + (1 - beta) KL(p_S || M)
                     (beta = 0: KL(p_T || p_S), forward;  beta = 1: KL(p_S || p_T), reverse)
        L = sum_t m_t JSD_beta(t) / max(sum_t m_t, 1)

    ``student_logits`` / ``teacher_logits`` [..., V] at the rollout's generated positions; the teacher's are
    detached. Returns (loss, per-token JSD [...], detached). Memory: both distributions are held in full,
    2 x N x V floats for N scored tokens (Qwen3, V = 151,936: 1.2 MB a token in fp32); not wired into the
    trainer (see the trainer's ``opsd`` branch, which uses the sampled-token form of the tool-use paper).
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"JSD beta must be in [0, 1], got {beta}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"teacher_logits has shape {tuple(teacher_logits.shape)}, "
                         f"expected {tuple(student_logits.shape)}")
    _check_same_shape("mask", mask, student_logits[..., 0])
    log_s = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    log_t = torch.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)

    def kl(log_p, log_q):  # sum_v p (log p - log q), 0 log 0 = 0
        p = log_p.exp()
        return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(-1)

    if beta == 0.0:
        per_token = kl(log_t, log_s)
    elif beta == 1.0:
        per_token = kl(log_s, log_t)
    else:
        b = torch.tensor(beta, dtype=log_s.dtype, device=log_s.device)
        log_m = torch.logsumexp(torch.stack([log_t + torch.log(b), log_s + torch.log1p(-b)]), dim=0)
        per_token = beta * kl(log_t, log_m) + (1.0 - beta) * kl(log_s, log_m)
    valid = _as_bool(mask)
    per_token = torch.where(valid, per_token, torch.zeros_like(per_token))
    loss = per_token.sum() / valid.sum().clamp(min=1).to(per_token.dtype)
    return loss, per_token.detach()
