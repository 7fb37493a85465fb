"""Per-token log-probs of given completions after given contexts, in one batched forward pass.

Contexts are left-padded and completions right-padded, so every completion starts at the same
column and only the completion's logits are materialised (`logits_to_keep`). The same function
scores rollouts after the prompt-only context, the same rollout tokens after the trace-conditioned
context, and expert traces for SFT.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pact_cotrain.losses import entropy_from_logits, selective_log_softmax


@dataclass
class PaddedPairs:
    input_ids: torch.Tensor  # [B, P + C]
    attention_mask: torch.Tensor  # [B, P + C]
    completion_mask: torch.Tensor  # [B, C] 1 on real completion tokens
    completion_width: int


def pad_pairs(contexts: list[list[int]], completions: list[list[int]], pad_id: int) -> PaddedPairs:
    p_width = max(len(c) for c in contexts)
    c_width = max(max(len(c) for c in completions), 1)
    rows, masks, comp_masks = [], [], []
    for ctx, comp in zip(contexts, completions):
        left, right = p_width - len(ctx), c_width - len(comp)
        rows.append([pad_id] * left + ctx + comp + [pad_id] * right)
        masks.append([0] * left + [1] * (len(ctx) + len(comp)) + [0] * right)
        comp_masks.append([1] * len(comp) + [0] * right)
    return PaddedPairs(torch.tensor(rows), torch.tensor(masks), torch.tensor(comp_masks, dtype=torch.float),
                       c_width)


def completion_logps(model, contexts: list[list[int]], completions: list[list[int]], pad_id: int,
                     temperature: float | torch.Tensor = 1.0, with_entropy: bool = False):
    """Return (logp [B, C], completion_mask [B, C], entropy [B, C] or None).

    logp[b, t] = log softmax(logits / T_b)[completion[b][t]] given context[b] + completion[b][:t], with
    T_b = temperature, or temperature[b] when a tensor of one temperature per row is given.
    """
    device = next(model.parameters()).device
    batch = pad_pairs(contexts, completions, pad_id)
    ids, attn = batch.input_ids.to(device), batch.attention_mask.to(device)
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    width = batch.completion_width
    # Logits at positions [-width-1, -1) predict the completion tokens.
    logits = model(input_ids=ids, attention_mask=attn, position_ids=position_ids,
                   logits_to_keep=width + 1).logits[:, :-1, :]
    if torch.is_tensor(temperature):
        temperature = temperature.to(device=logits.device, dtype=torch.float).view(-1, 1, 1)
    logits = logits.float() / temperature
    targets = ids[:, -width:]
    logp = selective_log_softmax(logits, targets)
    entropy = entropy_from_logits(logits.detach()) if with_entropy else None
    return logp, batch.completion_mask.to(device), entropy


@dataclass
class PackedGroup:
    """One context followed by several completions that each see the context and themselves only."""

    context: list[int]
    completions: list[list[int]]
    temperature: float = 1.0


def packed_completion_logps(model, groups: list[PackedGroup], pad_id: int, with_entropy: bool = False):
    """Shared-prefix scoring: each group is ONE row `[context ; c_1 ; c_2 ; ...]` with a block attention
    mask (c_k attends to the context and causally to itself) and positions that restart after the
    context for every completion, so each c_k is scored exactly as `[context ; c_k]` would be, while the
    context is computed once per group instead of once per completion (with gradients through it).

    Returns, per group, a list of (logp [len(c_k)], entropy [len(c_k)] or None) in completion order.
    """
    device = next(model.parameters()).device
    rows, positions, segments = [], [], []
    for g in groups:
        ids, pos, seg = list(g.context), list(range(len(g.context))), [0] * len(g.context)
        for k, comp in enumerate(g.completions, start=1):
            ids += comp
            pos += range(len(g.context), len(g.context) + len(comp))
            seg += [k] * len(comp)
        rows.append(ids)
        positions.append(pos)
        segments.append(seg)
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    pos = torch.zeros((len(rows), length), dtype=torch.long)
    seg = torch.full((len(rows), length), -1, dtype=torch.long)  # -1: padding
    for b, (r, p, s) in enumerate(zip(rows, positions, segments)):
        ids[b, : len(r)], pos[b, : len(r)], seg[b, : len(r)] = torch.tensor(r), torch.tensor(p), torch.tensor(s)
    q_seg, k_seg = seg[:, :, None], seg[:, None, :]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    allowed = causal & ((k_seg == 0) | (k_seg == q_seg)) & (k_seg >= 0)
    allowed |= torch.eye(length, dtype=torch.bool)  # padding rows attend to themselves (no empty softmax)
    min_context = min(len(g.context) for g in groups)
    keep = length - min_context + 1  # logits from the last context token of the shortest context on
    logits = model(input_ids=ids.to(device), attention_mask=allowed[:, None].to(device),
                   position_ids=pos.to(device), logits_to_keep=keep).logits
    offset = length - keep  # column j of `logits` is sequence position offset + j

    results = []
    for b, g in enumerate(groups):
        # Token at position i is predicted at position i-1, except a completion's first token, which is
        # predicted at the context's last position.
        start = len(g.context)
        out = []
        for comp in g.completions:
            if not comp:
                out.append((torch.zeros(0, device=device), None))
                continue
            predict_at = torch.tensor([len(g.context) - 1] + list(range(start, start + len(comp) - 1)), device=device)
            row_logits = logits[b, predict_at - offset].float() / g.temperature
            targets = torch.tensor(comp, device=device)
            logp = selective_log_softmax(row_logits, targets)
            entropy = entropy_from_logits(row_logits.detach()) if with_entropy else None
            out.append((logp, entropy))
            start += len(comp)
        results.append(out)
    return results
