"""How a step's scoring work is laid out in forward passes: micro-batches and packed-scoring masks.

The same packing as the trainer: `training.microbatch.plan_micro_batches` splits the step under
`train.micro_batch_tokens` (the whole step in one part without a budget); within a part, each
context group is `[context ; c_1 ; c_2 ; ...]` (`training.scoring.pack_groups`). The boolean mask
of a group of n tokens is n x n bytes; with one forward per group (`train.forward_per_group`, the
CPU default) a lone completion is a plain causal row and gets no mask; batched, groups share rows
(`scoring.pack_rows`) and the mask is rows x L^2 for the longest row L, or nothing when every row is
one group with one completion (`scoring.PackedLayout.plain_causal`: SFT traces alone in a forward).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PartSize:
    tokens: float  # forward tokens (each distinct context once)
    logit_tokens: float  # completion / target positions
    group_lengths: list[float]  # tokens of each context group
    mask_bytes: float
    count: int  # micro-batches in the step


def forward_layout(rollout_items: list[list], sft_items: list[list], budget: int | None,
                   per_group: bool) -> list[PartSize]:
    """One `PartSize` per micro-batch of the step whose items (`training.microbatch.Piece` lists) are given."""
    from pact_cotrain.training.microbatch import forward_tokens, plan_micro_batches
    from pact_cotrain.training.scoring import pack_rows

    items = list(rollout_items) + list(sft_items)
    if not items:
        return []
    if budget is None:
        parts = [list(range(len(items)))]
    else:
        n_rows = len(rollout_items)
        parts = [list(p.rows) + [n_rows + j for j in p.sft]
                 for p in plan_micro_batches(rollout_items, sft_items, int(budget))]
    out = []
    for part in parts:
        pieces = [piece for i in part for piece in items[i]]
        groups: dict = {}
        for piece in pieces:
            context, completions = groups.setdefault(piece.key, (piece.context_len, []))
            completions.append(piece.completion_len)
        lengths = [ctx + sum(comps) for ctx, comps in groups.values()]
        completions = [len(comps) for _, comps in groups.values()]
        if per_group:
            mask = sum(n * n for n, count in zip(lengths, completions) if count > 1)
        else:
            rows = pack_rows([max(int(n), 1) for n in lengths])
            # no mask when every row is one group with one completion (`PackedLayout.plain_causal`)
            plain = all(len(row) == 1 and completions[row[0]] == 1 for row in rows)
            mask = 0.0 if plain else len(rows) * max(sum(lengths[i] for i in row) for row in rows) ** 2
        out.append(PartSize(forward_tokens([items[i] for i in part]), sum(p.completion_len for p in pieces),
                            lengths, float(mask), len(parts)))
    return out
