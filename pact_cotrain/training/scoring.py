"""Per-token log-probs of given completions after given contexts, in one batched forward pass.

Contexts are left-padded and completions right-padded, so every completion starts at the same
column and only the completion's logits are materialised (`logits_to_keep`). The same function
scores rollouts after the prompt-only context, the same rollout tokens after the trace-conditioned
context, and expert traces for SFT.

Shared-prefix packing needs a custom 4-D attention mask, given in the form the model's attention
implementation reads (`custom_mask`); implementations that cannot take one are refused.
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


def pack_rows(lengths: list[int]) -> list[list[int]]:
    """Group indices into rows, first-fit by decreasing length, each row at most as long as the longest
    group: short groups (an SFT trace, a prompt-only group) then share a row instead of each being
    padded to the longest one. Deterministic."""
    capacity = max(lengths)
    rows: list[list[int]] = []
    used: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        slot = next((r for r, u in enumerate(used) if u + lengths[index] <= capacity), None)
        if slot is None:
            rows.append([])
            used.append(0)
            slot = len(rows) - 1
        rows[slot].append(index)
        used[slot] += lengths[index]
    return rows


@dataclass
class PackedLayout:
    input_ids: torch.Tensor  # [R, L]
    position_ids: torch.Tensor  # [R, L]
    group_ids: torch.Tensor  # [R, L] the group each column holds (-1: padding)
    segment_ids: torch.Tensor  # [R, L] 0: the group's context, k: its completion k
    keep: list[int]  # the columns whose logits are computed
    # per group, per completion: (row, indices into `keep` of the positions predicting its tokens)
    predict: list[list[tuple[int, list[int]]]]
    # Every row holds one group with at most one non-empty completion: its real tokens attend causally
    # to all real tokens before them, and right padding comes after them, so no mask is needed.
    plain_causal: bool

    # per row, per group: (context_start, context_end, [(start, end) of each completion]) in columns
    spans: list[list[tuple[int, int, list[tuple[int, int]]]]]

    def attention(self, device=None) -> torch.Tensor:
        """[R, L, L] bool, query i may attend to key j, built on `device`: c_k attends to its own group's
        context and causally to itself; padding attends to itself (no empty softmax).

        Filled block by block (a context's causal block, each completion's context block and causal
        block), so the work is the mask's own entries and a few kernels per group, not a handful of
        full [R, L, L] comparisons."""
        rows, length = self.group_ids.shape
        allowed = torch.zeros(rows, length, length, dtype=torch.bool, device=device)
        for r, groups in enumerate(self.spans):
            end = 0
            for start, context_end, completions in groups:
                _causal_block(allowed[r, start:context_end, start:context_end])
                for c_start, c_end in completions:
                    allowed[r, c_start:c_end, start:context_end] = True
                    _causal_block(allowed[r, c_start:c_end, c_start:c_end])
                end = max([context_end] + [e for _, e in completions])
            padding = allowed[r, end:, end:]
            padding.diagonal().fill_(True)
        return allowed


def _causal_block(block: torch.Tensor) -> None:
    block.fill_(True)
    block.tril_()


def pack_groups(groups: list[PackedGroup], pad_id: int) -> PackedLayout:
    """Lay groups side by side in rows (`pack_rows`), each as `[context ; c_1 ; c_2 ; ...]`: c_k attends to
    its own group's context and causally to itself, with positions restarting after the context. Only
    per-column group and segment ids are built here; the mask, where one is needed, is built on the
    model's device (`PackedLayout.attention`)."""
    sizes = [len(g.context) + sum(len(c) for c in g.completions) for g in groups]
    rows = pack_rows(sizes)
    length = max(sum(sizes[i] for i in row) for row in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    pos = torch.zeros((len(rows), length), dtype=torch.long)
    grp = torch.full((len(rows), length), -1, dtype=torch.long)  # -1: padding
    seg = torch.zeros((len(rows), length), dtype=torch.long)  # 0: context, k: completion k
    columns: list[list[tuple[int, list[int]]]] = [[] for _ in groups]
    spans: list[list[tuple[int, int, list[tuple[int, int]]]]] = []
    for b, row in enumerate(rows):
        column = 0
        spans.append([])
        for index in row:
            g = groups[index]
            completion_spans = []
            tokens, positions, segments = list(g.context), list(range(len(g.context))), [0] * len(g.context)
            for k, comp in enumerate(g.completions, start=1):
                # A completion's first token is predicted at the context's last position, the others at
                # the token before them.
                first = column + len(tokens)
                columns[index].append((b, [column + len(g.context) - 1] + list(range(first, first + len(comp) - 1))
                                       if comp else []))
                tokens += comp
                completion_spans.append((first, first + len(comp)))
                positions += range(len(g.context), len(g.context) + len(comp))
                segments += [k] * len(comp)
            span = slice(column, column + len(tokens))
            ids[b, span], pos[b, span], seg[b, span] = torch.tensor(tokens), torch.tensor(positions), torch.tensor(segments)
            grp[b, span] = index
            spans[b].append((column, column + len(g.context), completion_spans))
            column += len(tokens)
    plain = all(len(row) == 1 and sum(1 for c in groups[row[0]].completions if c) <= 1 for row in rows)
    keep = sorted({c for per_group in columns for _, cols in per_group for c in cols})
    at = {c: j for j, c in enumerate(keep)}
    predict = [[(b, [at[c] for c in cols]) for b, cols in per_group] for per_group in columns]
    return PackedLayout(ids, pos, grp, seg, keep, predict, plain, spans)


# How each attention implementation reads a 4-D mask, which transformers hands to it unchanged
# (`masking_utils._preprocess_mask_arguments` returns a 4-D mask as it is, "already prepared, or custom"):
#   sdpa   `attn_mask` of torch's scaled_dot_product_attention: a boolean, True = may attend;
#   eager  added to the scores (`attn_weights + attention_mask`): 0 where it may attend, the dtype's
#          minimum elsewhere. A boolean would add 1 or 0 and mask nothing.
# Refused: the flash_attention_* kernels take only a 2-D padding mask (sequence lengths), which cannot say
# that completions share a context but not each other; flex_attention would add a tensor mask like eager
# (its `score_mod`) but compiles a kernel per shape, and crashed natively on this CPU, so it is unverified.
CUSTOM_MASK_KINDS = {"sdpa": "boolean", "eager": "additive"}


def attn_implementation(model) -> str | None:
    """The attention implementation the model dispatches to (`config._attn_implementation`)."""
    return getattr(model.config, "_attn_implementation", None)


def check_custom_mask_support(implementation: str | None) -> None:
    """Refuse an attention implementation that cannot take the custom [R, 1, L, L] mask of packed scoring."""
    if implementation not in CUSTOM_MASK_KINDS:
        raise ValueError(
            f"attention implementation {implementation!r} cannot take the custom 4-D mask that packed scoring "
            f"needs (completions that share a context but not each other); use one of "
            f"{', '.join(sorted(CUSTOM_MASK_KINDS))} (config key train.attn_implementation)")


def custom_mask(allowed: torch.Tensor, implementation: str | None, dtype: torch.dtype) -> torch.Tensor:
    """The [R, L, L] boolean `allowed` (query i may attend to key j) as the [R, 1, L, L] mask
    `implementation` reads: the boolean itself for sdpa; for additive kernels
    m_ij = 0 if allowed_ij else finfo(dtype).min, in the dtype of the scores it is added to."""
    check_custom_mask_support(implementation)
    if CUSTOM_MASK_KINDS[implementation] == "boolean":
        return allowed[:, None]
    blocked = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=allowed.device)
    return torch.where(allowed, torch.zeros((), dtype=dtype, device=allowed.device), blocked)[:, None]


def _layout_logits(model, layout: PackedLayout, device) -> torch.Tensor:
    """Logits at `layout.keep`. Plainly causal rows (one SFT trace, one completion after its context) are
    passed without a mask, so attention takes the fused causal path, which skips the upper triangle, and
    no [L, L] mask is built at all; any implementation serves them. Other layouts get the mask, built on
    `device`, in the form the model's implementation reads."""
    mask = None
    if not layout.plain_causal:
        # The dtype of the hidden states, hence of the eager scores the mask is added to (under autocast
        # the lower-precision scores are promoted to it, as for transformers' own eager mask).
        inner = getattr(model, "module", model)  # under DDP the config and embeddings sit on .module
        dtype = inner.get_input_embeddings().weight.dtype
        mask = custom_mask(layout.attention(device), attn_implementation(inner), dtype)
    return model(input_ids=layout.input_ids.to(device), attention_mask=mask, position_ids=layout.position_ids.to(device),
                 logits_to_keep=torch.tensor(layout.keep, device=device)).logits


def packed_completion_logps(model, groups: list[PackedGroup], pad_id: int, with_entropy: bool = False,
                            forward_per_group: bool = False, entropy_grad: bool = False):
    """Shared-prefix scoring: each c_k of a group is scored exactly as `[context ; c_k]` would be, while
    the context is computed once per group instead of once per completion (with gradients through it).

    `forward_per_group=False`: one forward over all groups; short groups share rows, so the batch holds
    little padding when group lengths differ (`pack_groups`). `True`: one forward per group at its own
    length, so no padding at all and no attention between rows' neighbours; better where batching buys
    nothing (CPU), worse where each forward has a fixed cost (GPU launches, FSDP all-gathers).

    Returns, per group, a list of (logp [len(c_k)], entropy [len(c_k)] or None) in completion order.
    The entropy is detached unless `entropy_grad` (an entropy bonus differentiates it).
    """
    device = next(model.parameters()).device
    if forward_per_group:
        passes = [(pack_groups([g], pad_id), [g]) for g in groups]
    else:
        passes = [(pack_groups(groups, pad_id), groups)]
    results = []
    for layout, members in passes:
        logits = _layout_logits(model, layout, device)
        for g, per_comp in zip(members, layout.predict):
            out = []
            for comp, (b, cols) in zip(g.completions, per_comp):
                if not comp:
                    out.append((torch.zeros(0, device=device), None))
                    continue
                row_logits = logits[b, torch.tensor(cols, device=device)].float() / g.temperature
                logp = selective_log_softmax(row_logits, torch.tensor(comp, device=device))
                entropy = entropy_from_logits(row_logits if entropy_grad else row_logits.detach()) \
                    if with_entropy else None
                out.append((logp, entropy))
            results.append(out)
    return results
