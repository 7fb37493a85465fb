"""Schedules (pure python): reasoning prefix, tool-call weight, CHORD SFT weight."""

from __future__ import annotations

import math


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


#: Reasoning schedules (``method.reasoning_schedule``). All but ``segment_linear`` are one fraction for
#: every block (:func:`reasoning_segments_supervised` turns it into a count); ``segment_linear`` is a
#: count per block, from the block's own segment count (:func:`segment_linear_supervised`).
REASONING_SCHEDULES = ("staged", "linear", "segment_linear", "full", "none")

#: The spec's reasoning blocks have four segments S1..S4 (L4 -> L2 -> L0): the block size whose
#: ``segment_linear`` count :func:`reasoning_prefix_fraction` reports as that schedule's fraction.
SPEC_SEGMENTS_PER_BLOCK = 4


def segment_linear_supervised(n_segments: int, step: int, total_steps: int) -> int:
    """Leading segments of an ``n_segments``-block supervised at ``step`` under ``segment_linear``.

        k(step) = n - min(floor((n + 1) * step / total_steps), n)

    The block steps down one segment at a time, L_n -> L_(n-1) -> ... -> L_0, through n + 1
    equal stages of training (``_stage`` with n + 1 stages: the same stage rule as ``"staged"``,
    with every level instead of L4 / L2 / L0), so each block anneals from all of its own segments
    to none whatever its length. Examples: 4 segments over 9 steps give 4 4 3 3 2 2 1 1 0;
    3 segments over 9 steps 3 3 3 2 2 1 1 0 0; a 1-step run supervises every segment.
    With fewer steps than levels (total_steps < n + 1) some levels are skipped and L_0 may not be
    reached (4 segments over 3 steps: 4 3 1), as a stage can't be shorter than one step.
    """
    if n_segments < 0:
        raise ValueError(f"n_segments must be >= 0, got {n_segments}")
    if n_segments == 0:
        _check_step(step, total_steps)
        return 0
    return n_segments - _stage(step, total_steps, n_segments + 1)


def reasoning_prefix_fraction(step: int, total_steps: int, mode: str = "staged") -> float:
    """Fraction of each expert reasoning block's segments that are SFT targets at ``step``.

    * ``"staged"`` (spec: L4 -> L2 -> L0): 1.0, 0.5, 0.0 in three equal stages (see ``_stage``).
    * ``"linear"``: ``1 - step / (total_steps - 1)``: 1.0 at step 0, 0.0 at the last step.
    * ``"segment_linear"``: the fraction of a 4-segment block (``SPEC_SEGMENTS_PER_BLOCK``) under
      :func:`segment_linear_supervised`, for logging only: this schedule is a count per block, so
      use :func:`segment_linear_supervised` (not this fraction) for blocks of other sizes.
    * ``"full"``: always 1.0;  ``"none"``: always 0.0.

    Turn the fraction into a segment count with :func:`reasoning_segments_supervised`.
    """
    if mode == "staged":
        return (1.0, 0.5, 0.0)[_stage(step, total_steps)]
    if mode == "segment_linear":
        n = SPEC_SEGMENTS_PER_BLOCK
        return segment_linear_supervised(n, step, total_steps) / n
    if mode == "linear":
        return _linear(1.0, 0.0, _progress(step, total_steps))
    if mode in ("full", "none"):
        _check_step(step, total_steps)
        return 1.0 if mode == "full" else 0.0
    raise ValueError(f"unknown reasoning schedule {mode!r}; expected one of {REASONING_SCHEDULES}")


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


def chord_mu(step: int, peak: float = 0.9, valley: float = 0.05, warmup_steps: int = 0,
             decay_steps: int = 0) -> float:
    """CHORD's global SFT weight mu (Zhang et al., 2025, arXiv 2508.11408; released Trinity-RFT
    `mu_schedule_function`), in L_CHORD = (1 - mu) L_GRPO + mu L_SFT:

        mu(s) = peak * s / W                                              s < W        (warm-up)
        mu(s) = valley + (peak - valley) (1 + cos(pi (s - W) / D)) / 2      W <= s < W + D (decay)
        mu(s) = valley                                                     s >= W + D   (valley)

    with W = ``warmup_steps`` and D = ``decay_steps`` (optimiser steps, 0-based ``step``).
    Warm-up starts at mu = 0, i.e. RL weight 1; mu = 1 (RL weight exactly 0) only with peak = 1.
    """
    if step < 0 or warmup_steps < 0 or decay_steps < 0:
        raise ValueError(f"step, warmup_steps and decay_steps must be >= 0, got {step}, {warmup_steps}, {decay_steps}")
    for name, value in (("peak", peak), ("valley", valley)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"CHORD mu {name} must be in [0, 1], got {value}")
    if step < warmup_steps:
        return peak * step / warmup_steps
    if step >= warmup_steps + decay_steps:
        return valley
    return valley + (peak - valley) * 0.5 * (1.0 + math.cos(math.pi * (step - warmup_steps) / decay_steps))
