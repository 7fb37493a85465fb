"""Batched and shared-prefix (packed) scoring agree with scoring each sequence alone."""

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


def test_packed_groups_match_single_sequences(model):
    groups = [PackedGroup([5, 6, 7, 8, 9, 10], [[20, 21, 22], [23], [24, 25, 26, 27]], 0.8),
              PackedGroup([11, 12], [[30, 31], [32, 33, 34]], 1.0)]
    results = packed_completion_logps(model, groups, pad_id=0, with_entropy=True)
    for g, res in zip(groups, results):
        for comp, (logp, entropy) in zip(g.completions, res):
            torch.testing.assert_close(logp, alone(model, g.context, comp, g.temperature), atol=1e-5, rtol=1e-4)
            assert entropy.shape == logp.shape


def test_packed_gradient_matches_unpacked(tokenizer):
    from pact_cotrain.testing import tiny_llama

    context, comps = [5, 6, 7, 8], [[20, 21, 22], [23, 24]]
    grads = []
    for packed in (True, False):
        model = tiny_llama(tokenizer)
        if packed:
            total = sum(lp.sum() for lp, _ in packed_completion_logps(model, [PackedGroup(context, comps)], 0)[0])
        else:
            total = sum(alone(model, context, c).sum() for c in comps)
        total.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)
