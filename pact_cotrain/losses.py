"""PACT losses, advantages and schedules: pure tensor functions.

Method spec: ``docs/pact-method.md`` (PACT, arXiv 2606.16215). Every loss here is a pure
function of tensors: no model, no tokenizer, no trainer state. The trainer runs the forward
passes, builds the masks and calls these.

Conventions
-----------
* Per-token tensors (log-probs, masks) are ``[B, T]``: B sequences, T positions, already
  shifted so that position t holds ``log pi(y_t | y_<t)`` of the token at t.
* Masks are binary, float or bool. Everywhere except :func:`masked_token_mean` (which applies
  its literal formula) a mask entry counts as "on" iff it is non-zero. Masked-off positions
  are removed with ``torch.where``, never by multiplication alone, so they receive *exactly*
  zero gradient even when the log-probs there are huge, ``-inf`` or NaN (padding, tool
  responses, rows of a pass that was not run).
* Advantages are per sequence, ``[B]``, broadcast over tokens; ``[B, T]`` is accepted too.
* "old" log-probs are always detached inside the losses; ``None`` means "the on-policy single
  update", i.e. ``old = logp.detach()`` so the ratio is exactly 1 with gradient
  ``d r / d logp = 1`` (spec section 2).
* Stats are dicts of detached 0-dim tensors (no host sync inside the loss; call ``float()`` or
  ``.item()`` when logging). A mean over an empty set is NaN (log with a nan-aware mean), while
  a *loss* over an empty mask is 0.

Aggregation (``aggregation=`` of the policy losses; see :func:`aggregate_loss`)
------------------------------------------------------------------------------
* ``"token_mean"`` (default; DAPO): ``sum_{i,t} m_it l_it / max(sum_{i,t} m_it, 1)``.
  Every generated token of the batch weighs the same.
* ``"seq_mean_token_mean"`` (original GRPO): ``(1/B) sum_i [sum_t m_it l_it / max(sum_t m_it, 1)]``.
  Every sequence weighs the same; a sequence with no masked token contributes 0 but still
  counts in B.
* ``"token_sum_norm"`` (Dr. GRPO): ``sum_{i,t} m_it l_it / (B * max_tokens)`` with a constant
  per-sequence budget ``max_tokens`` given by the caller (TRL's ``dr_grpo`` uses
  ``B * max_completion_length`` the same way).

All three are linear in the per-token losses for a fixed mask. With gradient accumulation the
denominators are per call (per micro-batch); a caller that wants one global token count
rescales the returned loss by ``local_count / global_count``.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "AGGREGATIONS",
    "LOG_RATIO_CLAMP",
    "group_advantages",
    "masked_token_mean",
    "aggregate_loss",
    "clipped_policy_loss",
    "trace_conditioned_surrogate",
    "component_sft_loss",
    "reasoning_prefix_fraction",
    "reasoning_segments_supervised",
    "toolcall_weight",
    "chord_sft_weight",
    "draw_anchor_mask",
    "expand_to_rollouts",
    "anchored_rl_loss",
    "over_reliance_gap",
    "entropy_from_logits",
    "selective_log_softmax",
]

AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "token_sum_norm")

#: ``log r`` is clamped to ``[-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP]`` before ``exp`` (as verl does)
#: so a diverged token cannot overflow; beyond the clamp the gradient through the ratio is 0.
LOG_RATIO_CLAMP = 20.0


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


# --------------------------------------------------------------------------------------------
# advantages and aggregation
# --------------------------------------------------------------------------------------------


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    eps: float = 1e-6,
    normalize_std: bool = True,
) -> torch.Tensor:
    """Group-normalised advantages over the K = ``group_size`` rollouts of each prompt (spec section 1).

        A_i = (R_i - mean_g(R)) / (std_g(R) + eps)        (normalize_std=True)
        A_i =  R_i - mean_g(R)                            (normalize_std=False)

    ``rewards`` is ``[B]`` with ``B = n_groups * group_size``, group-contiguous (rollouts
    ``g*K .. g*K+K-1`` belong to prompt g). ``std_g`` is the *unbiased* (Bessel-corrected,
    ``torch.std`` default) standard deviation, as TRL's GRPOTrainer uses (its ``nanstd``).
    Note TRL's epsilon is 1e-4; the default here is 1e-6.

    Every member of a group whose rewards are all exactly equal gets an advantage of exactly
    0 (not a rounding residue of ``R - mean``), in both modes. ``group_size == 1`` therefore
    gives all zeros (a single rollout has no baseline). Returns a float tensor ``[B]``
    (the rewards' dtype if floating, else the default float dtype).
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [B], got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.shape[0] % group_size != 0:
        raise ValueError(f"{rewards.shape[0]} rewards cannot be split into groups of {group_size}")
    if not rewards.is_floating_point():
        rewards = rewards.to(torch.get_default_dtype())
    grouped = rewards.view(-1, group_size)
    constant = (grouped == grouped[:, :1]).all(dim=1, keepdim=True)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if normalize_std and group_size > 1:
        centred = centred / (grouped.std(dim=1, keepdim=True) + eps)
    return torch.where(constant, torch.zeros_like(centred), centred).reshape(-1)


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


# --------------------------------------------------------------------------------------------
# clipped policy-gradient losses
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# component-aware SFT on the expert trace
# --------------------------------------------------------------------------------------------


def component_sft_loss(
    logp: torch.Tensor,
    reasoning_mask: torch.Tensor,
    toolcall_mask: torch.Tensor,
    toolcall_weight: float,
    reasoning_weight: float = 1.0,
    answer_mask: torch.Tensor | None = None,
    answer_weight: float | None = None,
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

    n_supervised = supervised.sum()
    weighted = torch.where(supervised, token_weight * logp, torch.zeros_like(logp))
    loss = -weighted.sum() / n_supervised.clamp(min=1).to(logp.dtype)
    stats["n_supervised"] = n_supervised.detach()
    return loss, stats


# --------------------------------------------------------------------------------------------
# schedules (pure python)
# --------------------------------------------------------------------------------------------


def _check_step(step: int, total_steps: int) -> None:
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")


def _progress(step: int, total_steps: int) -> float:
    """0.0 at step 0, 1.0 at the last step ``total_steps - 1`` (and after); 0.0 if total_steps == 1."""
    _check_step(step, total_steps)
    if total_steps == 1:
        return 0.0
    return min(step, total_steps - 1) / (total_steps - 1)


def _stage(step: int, total_steps: int, n_stages: int = 3) -> int:
    """Stage k in 0..n_stages-1 holds the steps with ``floor(n_stages * step / total_steps) == k``.

    Equal stages when ``n_stages`` divides ``total_steps``; otherwise they differ by at most
    one step. Steps past the end stay in the last stage.
    """
    _check_step(step, total_steps)
    return min(n_stages * step // total_steps, n_stages - 1)


def _linear(start: float, end: float, p: float) -> float:
    return start + (end - start) * p


def reasoning_prefix_fraction(step: int, total_steps: int, mode: str = "staged") -> float:
    """Fraction of each expert reasoning block's segments that are SFT targets at ``step``.

    * ``"staged"`` (spec: L4 -> L2 -> L0): 1.0, 0.5, 0.0 in three equal stages (see ``_stage``).
    * ``"linear"``: ``1 - step / (total_steps - 1)``: 1.0 at step 0, 0.0 at the last step.
    * ``"full"``: always 1.0;  ``"none"``: always 0.0.

    Turn the fraction into a segment count with :func:`reasoning_segments_supervised`.
    """
    if mode == "staged":
        return (1.0, 0.5, 0.0)[_stage(step, total_steps)]
    if mode == "linear":
        return _linear(1.0, 0.0, _progress(step, total_steps))
    if mode in ("full", "none"):
        _check_step(step, total_steps)
        return 1.0 if mode == "full" else 0.0
    raise ValueError(f"unknown reasoning schedule {mode!r}; expected staged, linear, full or none")


def reasoning_segments_supervised(n_segments: int, fraction: float) -> int:
    """How many *leading* segments of a reasoning block to supervise.

        k = floor(n_segments * fraction + 1/2)         (round half up), clamped to [0, n]

    So 4 segments give 4 / 2 / 0 at fractions 1 / 0.5 / 0 (the spec's L4, L2, L0), and an odd
    count rounds the half up (3 segments at 0.5 -> 2; 1 segment at 0.5 -> 1). A 1e-9 tolerance
    absorbs float error: the linear schedule's ``1 - 5/6 = 0.16666666666666663`` times 3
    segments is ``0.4999999999999999`` and still rounds up to 1. Fraction 1.0
    gives all segments, 0.0 none; small positive fractions may give 0 (e.g. 4 * 0.1 -> 0).
    """
    if n_segments < 0:
        raise ValueError(f"n_segments must be >= 0, got {n_segments}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    k = math.floor(n_segments * fraction + 0.5 + 1e-9)
    return max(0, min(n_segments, k))


def toolcall_weight(
    step: int,
    total_steps: int,
    mode: str = "linear",
    start: float = 0.8,
    end: float = 0.2,
    mid: float = 0.5,
) -> float:
    """Tool-call SFT weight lambda(step) (spec section 3: 0.8 -> 0.5 -> 0.2, linear reported).

    * ``"linear"``: ``start + (end - start) * step / (total_steps - 1)``: ``start`` at step 0,
      ``end`` at the last step ``total_steps - 1`` (and after); ``start`` if total_steps == 1.
      With the defaults the midpoint is 0.5, matching the spec's 0.8 -> 0.5 -> 0.2.
    * ``"staged"``: ``start``, ``mid``, ``end`` in three equal stages.
    * ``"constant"``: ``start``;  ``"none"``: 0.0 (no tool-call supervision).
    """
    if mode == "linear":
        return _linear(start, end, _progress(step, total_steps))
    if mode == "staged":
        return (start, mid, end)[_stage(step, total_steps)]
    if mode in ("constant", "none"):
        _check_step(step, total_steps)
        return start if mode == "constant" else 0.0
    raise ValueError(f"unknown tool-call schedule {mode!r}; expected linear, staged, constant or none")


def chord_sft_weight(
    step: int,
    total_steps: int,
    start: float = 1.0,
    end: float = 0.0,
    mode: str = "linear",
) -> float:
    """SFT weight mu(step) for the CHORD baseline (SFT and RL mixed with a decaying weight).

        L_CHORD = (1 - mu) L_RL + mu L_SFT

    * ``"linear"``: ``start + (end - start) p``
    * ``"cosine"``: ``end + (start - end) (1 + cos(pi p)) / 2``
    * ``"constant"``: ``start``

    with ``p = step / (total_steps - 1)`` in [0, 1] (``start`` at step 0, ``end`` at the last
    step). The RL weight is ``1 - mu``; this is our reading of CHORD's global coefficient,
    without its token-level weighting.
    """
    p = _progress(step, total_steps)
    if mode == "linear":
        return _linear(start, end, p)
    if mode == "cosine":
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * p))
    if mode == "constant":
        return start
    raise ValueError(f"unknown CHORD schedule {mode!r}; expected linear, cosine or constant")


# --------------------------------------------------------------------------------------------
# prompt-only anchoring
# --------------------------------------------------------------------------------------------


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
        if logp_trace is None and not bool(anchor.all()):
            raise ValueError("logp_trace is None but some sequences are not anchored")
        weight_grpo, weight_tc = 1.0, 1.0
        anchor_frac = anchor.float().mean()
    elif mode == "mixture":
        if q is None or not 0.0 <= q <= 1.0:
            raise ValueError(f"mode='mixture' needs q in [0, 1], got {q}")
        if logp_prompt is None and q > 0:
            raise ValueError("logp_prompt is None but q > 0")
        if logp_trace is None and q < 1:
            raise ValueError("logp_trace is None but q < 1")
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
    if logp_trace is not None:
        old_tc = _trace_old_logp(ratio_form, old_logp_trace, old_logp_prompt)
        branches.append(("tc/", logp_trace, old_tc, valid_tc, weight_tc))
    for prefix, logp, old, branch_valid, weight in branches:
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


# --------------------------------------------------------------------------------------------
# diagnostics and log-prob utilities
# --------------------------------------------------------------------------------------------


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
