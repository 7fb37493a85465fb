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

from ._masks import AGGREGATIONS, aggregate_loss, masked_token_mean
from .advantages import group_advantages
from .anchoring import ANCHOR_MODES, anchored_rl_loss, draw_anchor_mask, expand_to_rollouts
from .diagnostics import context_kl_per_token, entropy_from_logits, selective_log_softmax
from .opsd import KL_CREDITS, generalized_jsd, opsd_advantages, opsd_policy_loss, sampled_reverse_kl
from .regularizers import entropy_bonus, kl_penalty_k3
from .policy import (
    LOG_RATIO_CLAMP,
    PROMPT_GRADIENT_FORMS,
    TRACE_RATIO_FORMS,
    TRACE_WEIGHT_CLIP,
    clipped_policy_loss,
    trace_conditioned_surrogate,
    trace_token_weights,
    trace_weighted_prompt_surrogate,
)
from .schedules import (
    REASONING_SCHEDULES,
    chord_mu,
    chord_sft_weight,
    reasoning_prefix_fraction,
    reasoning_segments_supervised,
    segment_linear_supervised,
    toolcall_weight,
)
from .sft import chord_phi, component_sft_loss

__all__ = [
    "AGGREGATIONS",
    "LOG_RATIO_CLAMP",
    "TRACE_RATIO_FORMS",
    "PROMPT_GRADIENT_FORMS",
    "TRACE_WEIGHT_CLIP",
    "REASONING_SCHEDULES",
    "group_advantages",
    "masked_token_mean",
    "aggregate_loss",
    "clipped_policy_loss",
    "trace_conditioned_surrogate",
    "trace_token_weights",
    "trace_weighted_prompt_surrogate",
    "component_sft_loss",
    "reasoning_prefix_fraction",
    "reasoning_segments_supervised",
    "segment_linear_supervised",
    "toolcall_weight",
    "chord_sft_weight",
    "chord_mu",
    "chord_phi",
    "draw_anchor_mask",
    "expand_to_rollouts",
    "anchored_rl_loss",
    "context_kl_per_token",
    "kl_penalty_k3",
    "entropy_bonus",
    "entropy_from_logits",
    "selective_log_softmax",
    "KL_CREDITS",
    "sampled_reverse_kl",
    "opsd_advantages",
    "opsd_policy_loss",
    "generalized_jsd",
]
