"""Batched and shared-prefix (packed) scoring agree with scoring each sequence alone."""

import pytest
import torch

from pact_cotrain.training.scoring import PackedGroup, completion_logps, packed_completion_logps


def alone(model, context, completion, temperature=1.0):
    ids = torch.tensor([context + completion])
    logits = model(ids).logits[0, len(context) - 1 : -1].float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)


def test_padded_batch_matches_single_sequences(model):
    contexts = [[5, 6, 7, 8, 9], [10, 11]]
    completions = [[20, 21, 22], [30, 31, 32, 33, 34]]
    logp, mask, _ = completion_logps(model, contexts, completions, pad_id=0, temperature=0.7)
    for b in range(2):
        n = len(completions[b])
        torch.testing.assert_close(logp[b, :n], alone(model, contexts[b], completions[b], 0.7), atol=1e-5, rtol=1e-4)
        assert mask[b].tolist() == [1.0] * n + [0.0] * (logp.shape[1] - n)


@pytest.mark.parametrize("forward_per_group", [False, True])
def test_packed_groups_match_single_sequences(model, forward_per_group):
    # The last group is one SFT-like trace: alone in its forward, it takes the unmasked causal path.
    groups = [PackedGroup([5, 6, 7, 8, 9, 10], [[20, 21, 22], [23], [24, 25, 26, 27]], 0.8),
              PackedGroup([11, 12], [[30, 31], [32, 33, 34]], 1.0), PackedGroup([13, 14, 15], [[40, 41]], 1.0)]
    results = packed_completion_logps(model, groups, pad_id=0, with_entropy=True, forward_per_group=forward_per_group)
    assert len(results) == len(groups)
    for g, res in zip(groups, results):
        for comp, (logp, entropy) in zip(g.completions, res):
            torch.testing.assert_close(logp, alone(model, g.context, comp, g.temperature), atol=1e-5, rtol=1e-4)
            assert entropy.shape == logp.shape


def test_packed_gradient_matches_unpacked(tokenizer):
    from pact_cotrain.testing import tiny_llama

    context, comps = [5, 6, 7, 8], [[20, 21, 22], [23, 24]]
    groups = [PackedGroup(context, comps), PackedGroup([9, 10, 11], [[25, 26]])]
    grads = []
    for packed in ("rows", "per_group", None):
        model = tiny_llama(tokenizer)
        if packed:
            results = packed_completion_logps(model, groups, 0, forward_per_group=packed == "per_group")
            total = sum(lp.sum() for res in results for lp, _ in res)
        else:
            total = sum(alone(model, g.context, c).sum() for g in groups for c in g.completions)
        total.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[2], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grads[1], grads[2], atol=1e-5, rtol=1e-4)


def test_pack_rows_shares_rows_without_exceeding_the_longest_group():
    from pact_cotrain.training.scoring import pack_rows

    assert pack_rows([10, 4, 6, 3, 3]) == [[0], [2, 1], [3, 4]]
    assert pack_rows([5]) == [[0]]
    for lengths in ([7, 7, 7], [1, 2, 3, 4, 5, 6], [9, 1, 1, 1, 8]):
        rows = pack_rows(lengths)
        assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in r) <= max(lengths) for r in rows)


def test_groups_sharing_a_row_do_not_see_each_other(model):
    # The second and third groups are short enough to share one row: each must still be scored alone.
    groups = [PackedGroup([5, 6, 7, 8, 9, 10, 11, 12], [[20, 21, 22], [23, 24]]),
              PackedGroup([13, 14], [[30, 31, 32]]),
              PackedGroup([15], [[40], [], [41, 42]], 0.5)]
    from pact_cotrain.training.scoring import pack_rows

    assert len(pack_rows([13, 5, 4])) == 2  # the layout this test relies on
    results = packed_completion_logps(model, groups, pad_id=0)
    for g, res in zip(groups, results):
        for comp, (logp, _) in zip(g.completions, res):
            if comp:
                torch.testing.assert_close(logp, alone(model, g.context, comp, g.temperature), atol=1e-5, rtol=1e-4)
            else:
                assert logp.numel() == 0


def test_forward_per_group_passes_no_mask_for_a_lone_trace(model):
    """One forward per group; a group with one completion is plain causal, so it gets no dense mask
    (the fused causal attention path) while a K-completion group keeps its block mask."""
    masks = []
    original = model.forward

    def recording(*args, **kwargs):
        masks.append(kwargs.get("attention_mask"))
        return original(*args, **kwargs)

    model.forward = recording
    try:
        packed_completion_logps(model, [PackedGroup([5, 6, 7], [[20, 21], [22]]), PackedGroup([8, 9], [[30, 31, 32]])],
                                pad_id=0, forward_per_group=True)
    finally:
        model.forward = original
    assert len(masks) == 2
    assert masks[0] is not None and masks[0].shape == (1, 1, 6, 6)
    assert masks[1] is None


def _record_masks(model):
    masks, original = [], model.forward

    def recording(*args, **kwargs):
        masks.append(kwargs.get("attention_mask"))
        return original(*args, **kwargs)

    model.forward = recording
    return masks


def test_batched_lone_traces_get_no_mask_and_stay_exact(model):
    """One forward over several one-completion groups (SFT traces) of different lengths: every row is plainly
    causal with right padding, so no mask is built at all (issue 30 item 7), and each is scored as alone."""
    groups = [PackedGroup([5, 6, 7, 8, 9, 10, 11], [[20, 21, 22, 23]]), PackedGroup([12, 13], [[30, 31]]),
              PackedGroup([14, 15, 16, 17, 18, 19], [[40, 41, 42], []])]
    from pact_cotrain.training.scoring import pack_groups

    layout = pack_groups(groups, pad_id=0)
    assert layout.plain_causal and layout.input_ids.shape[0] == 3  # three rows, two of them padded
    masks = _record_masks(model)
    try:
        results = packed_completion_logps(model, groups, pad_id=0, forward_per_group=False)
    finally:
        del model.forward
    assert masks == [None]
    for g, res in zip(groups, results):
        for comp, (logp, _) in zip(g.completions, res):
            if comp:
                torch.testing.assert_close(logp, alone(model, g.context, comp, g.temperature), atol=1e-5, rtol=1e-4)


def test_mask_equals_its_definition_and_is_built_on_the_given_device():
    """`PackedLayout.attention`: allowed[r, i, j] = causal and same group and (j in the context or in i's own
    completion), padding attending to itself, checked entry by entry against that definition."""
    from pact_cotrain.training.scoring import pack_groups

    groups = [PackedGroup([5, 6, 7, 8, 9, 10, 11, 12], [[20, 21, 22], [23, 24]]), PackedGroup([13, 14], [[30, 31, 32]]),
              PackedGroup([15], [[40], [], [41, 42]])]
    layout = pack_groups(groups, pad_id=0)
    assert not layout.plain_causal
    allowed = layout.attention()
    rows, length = layout.group_ids.shape
    for r in range(rows):
        grp, seg = layout.group_ids[r].tolist(), layout.segment_ids[r].tolist()
        for i in range(length):
            for j in range(length):
                want = (i == j) or (j <= i and grp[i] == grp[j] >= 0 and (seg[j] == 0 or seg[i] == seg[j]))
                assert bool(allowed[r, i, j]) == want, (r, i, j)
    assert layout.attention("meta").device.type == "meta"  # built where it is asked for, not on the host
