"""Tests for pact_cotrain.losses' schedules (reasoning prefix, tool-call weight, CHORD's mu) and the
anchoring draws: expected values worked out by hand."""

from __future__ import annotations

import pytest
import torch

from pact_cotrain import losses as L


def close(a, b, tol=1e-5):
    return abs(float(a.detach() if torch.is_tensor(a) else a) - b) < tol


# ------------------------------------------------------------------ schedules


def test_reasoning_prefix_fraction_staged():
    # total 9: stages of 3 steps: 0-2 -> 1.0, 3-5 -> 0.5, 6-8 -> 0.0
    got = [L.reasoning_prefix_fraction(s, 9) for s in range(9)]
    assert got == [1.0] * 3 + [0.5] * 3 + [0.0] * 3
    # total 10: stage = floor(3 s / 10): s=3 -> 0, s=4 -> 1, s=6 -> 1, s=7 -> 2, s=9 -> 2
    assert [L.reasoning_prefix_fraction(s, 10) for s in (3, 4, 6, 7, 9)] == [1.0, 0.5, 0.5, 0.0, 0.0]
    assert L.reasoning_prefix_fraction(100, 10) == 0.0  # past the end: last stage


def test_reasoning_prefix_fraction_other_modes():
    # linear over 11 steps: 1 - s/10
    assert L.reasoning_prefix_fraction(0, 11, "linear") == 1.0
    assert close(L.reasoning_prefix_fraction(2, 11, "linear"), 0.8)
    assert close(L.reasoning_prefix_fraction(5, 11, "linear"), 0.5)
    assert L.reasoning_prefix_fraction(10, 11, "linear") == 0.0
    assert L.reasoning_prefix_fraction(0, 1, "linear") == 1.0  # single step: the start value
    for s in (0, 4, 9):
        assert L.reasoning_prefix_fraction(s, 10, "full") == 1.0
        assert L.reasoning_prefix_fraction(s, 10, "none") == 0.0
    with pytest.raises(ValueError):
        L.reasoning_prefix_fraction(0, 10, "cosine")
    with pytest.raises(ValueError):
        L.reasoning_prefix_fraction(-1, 10)
    with pytest.raises(ValueError):
        L.reasoning_prefix_fraction(0, 0)


@pytest.mark.parametrize(
    "fraction, expected",
    [
        (1.0, [1, 2, 3, 4, 5]),
        (0.0, [0, 0, 0, 0, 0]),
        # n*0.5 = 0.5, 1, 1.5, 2, 2.5 -> half up: 1, 1, 2, 2, 3
        (0.5, [1, 1, 2, 2, 3]),
        # n*0.25 = 0.25, 0.5, 0.75, 1.0, 1.25 -> 0, 1, 1, 1, 1
        (0.25, [0, 1, 1, 1, 1]),
        # n*0.75 = 0.75, 1.5, 2.25, 3.0, 3.75 -> 1, 2, 2, 3, 4
        (0.75, [1, 2, 2, 3, 4]),
        # n*0.3 = 0.3, 0.6, 0.9, 1.2, 1.5 -> 0, 1, 1, 1, 2
        (0.3, [0, 1, 1, 1, 2]),
        # n*(1/6): 0.17, 0.33, 0.5, 0.67, 0.83 -> 0, 0, 1, 1, 1
        (1 / 6, [0, 0, 1, 1, 1]),
    ],
)
def test_reasoning_segments_supervised_rounding(fraction, expected):
    assert [L.reasoning_segments_supervised(n, fraction) for n in range(1, 6)] == expected


def test_reasoning_segments_supervised_spec_and_errors():
    # spec: 4 segments, L4 / L2 / L0
    assert [L.reasoning_segments_supervised(4, f) for f in (1.0, 0.5, 0.0)] == [4, 2, 0]
    assert L.reasoning_segments_supervised(0, 0.5) == 0
    # float residue: linear fraction at step 5 of 7 is 1 - 5/6 = 0.16666666666666663, and
    # 3 * that = 0.4999999999999999 (< 0.5 in floating point) -> still rounds half up to 1
    f = L.reasoning_prefix_fraction(5, 7, "linear")
    assert 3 * f < 0.5
    assert L.reasoning_segments_supervised(3, f) == 1
    for bad in ((3, 1.5), (3, -0.1), (-1, 0.5)):
        with pytest.raises(ValueError):
            L.reasoning_segments_supervised(*bad)


def test_toolcall_weight_modes():
    # linear over 11 steps: 0.8 - 0.6 s/10
    assert close(L.toolcall_weight(0, 11), 0.8)
    assert close(L.toolcall_weight(1, 11), 0.74)
    assert close(L.toolcall_weight(5, 11), 0.5)
    assert close(L.toolcall_weight(10, 11), 0.2)
    assert close(L.toolcall_weight(50, 11), 0.2)
    # custom start/end: 1.0 -> 0.0 over 5 steps, step 1 -> 0.75
    assert close(L.toolcall_weight(1, 5, start=1.0, end=0.0), 0.75)
    # staged, total 9: 0.8 x3, 0.5 x3, 0.2 x3
    assert [L.toolcall_weight(s, 9, "staged") for s in range(9)] == [0.8] * 3 + [0.5] * 3 + [0.2] * 3
    assert L.toolcall_weight(4, 9, "staged", mid=0.6) == 0.6
    assert L.toolcall_weight(7, 9, "constant") == 0.8
    assert L.toolcall_weight(7, 9, "none") == 0.0
    with pytest.raises(ValueError):
        L.toolcall_weight(0, 9, "cosine")


def test_chord_sft_weight():
    # linear over 5 steps: 1 - s/4
    assert [L.chord_sft_weight(s, 5) for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    # cosine: (1 + cos(pi p))/2, p = s/4: s=1 -> (1 + 0.7071068)/2 = 0.8535534; s=2 -> 0.5; s=4 -> 0
    assert close(L.chord_sft_weight(0, 5, mode="cosine"), 1.0)
    assert close(L.chord_sft_weight(1, 5, mode="cosine"), 0.8535534)
    assert close(L.chord_sft_weight(2, 5, mode="cosine"), 0.5)
    assert close(L.chord_sft_weight(4, 5, mode="cosine"), 0.0)
    # start 0.5 -> end 0.1, cosine at p=0.5: 0.1 + 0.4*0.5 = 0.3
    assert close(L.chord_sft_weight(2, 5, start=0.5, end=0.1, mode="cosine"), 0.3)
    assert L.chord_sft_weight(3, 5, mode="constant") == 1.0
    with pytest.raises(ValueError):
        L.chord_sft_weight(0, 5, mode="step")


# ------------------------------------------------------------------ anchoring draws


def test_draw_anchor_mask_reproducible_and_extremes():
    a = L.draw_anchor_mask(64, 0.3, torch.Generator().manual_seed(7))
    b = L.draw_anchor_mask(64, 0.3, torch.Generator().manual_seed(7))
    assert a.dtype == torch.bool and a.shape == (64,) and torch.equal(a, b)
    assert not L.draw_anchor_mask(100, 0.0, torch.Generator().manual_seed(1)).any()
    assert L.draw_anchor_mask(100, 1.0, torch.Generator().manual_seed(1)).all()
    # frequency: 20000 draws at q=0.3, binomial sd = sqrt(0.3*0.7/20000) = 0.0032 -> within 0.02
    freq = L.draw_anchor_mask(20000, 0.3, torch.Generator().manual_seed(3)).float().mean()
    assert abs(float(freq) - 0.3) < 0.02
    with pytest.raises(ValueError):
        L.draw_anchor_mask(4, 1.5)


def test_expand_to_rollouts_shares_draw_within_group():
    per_prompt = torch.tensor([True, False, True])
    assert L.expand_to_rollouts(per_prompt, 2).tolist() == [True, True, False, False, True, True]
    drawn = L.expand_to_rollouts(L.draw_anchor_mask(16, 0.5, torch.Generator().manual_seed(0)), 4)
    grouped = drawn.view(16, 4)
    assert (grouped == grouped[:, :1]).all()
