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
