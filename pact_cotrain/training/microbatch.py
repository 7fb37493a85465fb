"""Exact micro-batched optimisation of one step (issue 12 item 1), and chunked rollout generation.

One optimiser step's work, its rollout rows (each scored after the prompt-only context, the
trace-conditioned one, or both) and its SFT traces, is split into micro-batches whose forward
passes hold at most ``train.micro_batch_tokens`` tokens; each micro-batch is run forward and
backward on its own and the gradients accumulate. Every loss is linear in its rows once its
normaliser D is fixed,

    L = sum_i c_i / D,      so      L = sum_parts (D_part / D_step) * L_part,

where ``L_part = sum_{i in part} c_i / D_part`` is what the loss function returns on the part alone
(its own normaliser). So each part's loss is multiplied by ``D_part / D_step`` (``rl_loss_scale``,
``sft_loss_scale``) and the accumulated gradient is the unsplit step's. D per loss:

* RL, ``token_mean``:           max(sum of the step's masked rollout tokens, 1)
* RL, ``seq_mean_token_mean``:  the step's number of rollout rows B
* RL, ``token_sum_norm``:       B * max_tokens (Dr. GRPO's constant budget)
* SFT:                          max(N_supervised of the step's traces, 1) (``component_sft_loss``)

L = rl_coef * L_RL + sft_coef * L_SFT keeps its coefficients; each term has its own scale.

Packing: consecutive rows go into a part while its forward-token count, every distinct context
once plus every completion (the tokens of PACT's shared-prefix layout ``[x; c_1; c_2; ...]``, see
``scoring.pack_groups``), stays within the budget. A group's K rollouts may land in two parts; each
part then holds the group's context once, and lays its own rows out after it, so the shared
``[x; h]`` prefix layout works inside every part (the context's gradient accumulates over both).
A single row or trace longer than the budget gets a part of its own.

Only the functions at the bottom touch the trainer's accelerator; the rest are pure.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch

from pact_cotrain import losses

# How each field of a step's batch (PACTTrainer._build_batch) is split. A field missing here is
# refused (`split_batch`), so a new field cannot be silently given to every part whole.
ROLLOUT_LISTS = ("prompt_contexts", "trace_contexts", "completions")
ROLLOUT_TENSORS = ("sampling_logps", "loss_mask", "advantages", "anchor", "old_logp_prompt", "old_logp_trace",
                   "teacher_logp", "ref_logp_prompt")
SFT_LISTS = ("sft_contexts", "sft_targets")
SFT_TENSORS = ("sft_reasoning_mask", "sft_toolcall_mask", "sft_answer_mask")
# The step's, given whole to every part: the plan and ids, and what only the step's metrics read
# (reward mean/std over all K of a group, the rollouts' own metrics, the rollout wall time).
STEP_FIELDS = ("plan", "task_ids", "step", "episodes", "rewards", "rollout_seconds")
MICRO_BATCH_FIELDS = ("micro_batch", "row_group", "rl_loss_scale", "sft_loss_scale")
# With several processes the step's batch carries its process's share N * D_r / D of each loss
# (`distributed.loss_scales`); every part's own scale D_part / D_r is multiplied by it.
PROCESS_SCALES = ("rl_loss_scale", "sft_loss_scale")

# Metrics a part appends that add up to the step's value (losses already carry their scale, token
# and row counts, the step's time); every other metric is averaged over the parts, as TRL does
# over gradient-accumulation steps.
SUMMED_METRICS = ("loss/rl", "loss/sft", "rollout_tokens", "rollout_tokens_per_second", "sft/n_supervised",
                  "rl/grpo/n_tokens", "rl/tc/n_tokens", "step_time", "forward_tokens")


@dataclass(frozen=True)
class Piece:
    """One forward pass's share of a row: its context (named by `key`, counted once per part) and
    its completion's tokens."""

    key: Hashable
    context_len: int
    completion_len: int


@dataclass(frozen=True)
class MicroBatch:
    rows: tuple[int, ...]  # the step's rollout rows in this part
    sft: tuple[int, ...]  # the step's SFT traces in this part


def _cost(pieces: Sequence[Piece], seen: set) -> int:
    """Tokens `pieces` add to a part that already holds the contexts `seen`."""
    contexts = {p.key: p.context_len for p in pieces if p.key not in seen}
    return sum(contexts.values()) + sum(p.completion_len for p in pieces)


def pack_by_budget(items: Sequence[Sequence[Piece]], budget: int) -> list[list[int]]:
    """Consecutive items into parts of at most `budget` forward tokens, in order ("next fit").

    cost(part) = sum over the distinct contexts of its pieces of context_len + sum of completion_len,
    i.e. the tokens `scoring.pack_groups` lays out for the part. An item whose cost alone exceeds the
    budget is a part by itself; an item of no pieces (nothing to score) costs nothing."""
    if budget < 1:
        raise ValueError(f"train.micro_batch_tokens must be >= 1, got {budget}")
    parts: list[list[int]] = []
    seen: set = set()  # the contexts the current part already holds
    used = 0
    for index, pieces in enumerate(items):
        cost = _cost(pieces, seen)
        if not parts or (parts[-1] and used + cost > budget):
            parts.append([])
            seen, used = set(), 0
            cost = _cost(pieces, seen)
        parts[-1].append(index)
        seen |= {p.key for p in pieces}
        used += cost
    return parts


def forward_tokens(items: Sequence[Sequence[Piece]]) -> int:
    """Tokens of one forward over all `items` (each distinct context once): the unsplit step's size."""
    seen: set = set()
    total = 0
    for pieces in items:
        total += _cost(pieces, seen)
        seen |= {p.key for p in pieces}
    return total


def rollout_pieces(batch: dict, k: int, prompt_rows: torch.Tensor | None,
                   trace_rows: torch.Tensor | None) -> list[list[Piece]]:
    """Per rollout row, its scoring passes: after the prompt-only context where `prompt_rows`, after the
    trace-conditioned one where `trace_rows` (the rows `PACTTrainer._scoring_rows` selects). Row i
    belongs to group i // k, whose rows share each context."""
    out = []
    for i, completion in enumerate(batch["completions"]):
        pieces = []
        for kind, rows, contexts in (("prompt", prompt_rows, "prompt_contexts"), ("trace", trace_rows, "trace_contexts")):
            if rows is not None and bool(rows[i]):
                pieces.append(Piece((kind, i // k), len(batch[contexts][i]), len(completion)))
        out.append(pieces)
    return out


def sft_pieces(batch: dict) -> list[list[Piece]]:
    """Each SFT trace is its own group: [context ; target]."""
    return [[Piece(("sft", j), len(ctx), len(target))]
            for j, (ctx, target) in enumerate(zip(batch.get("sft_contexts", []), batch.get("sft_targets", [])))]


def plan_micro_batches(rollout_items: list[list[Piece]], sft_items: list[list[Piece]], budget: int) -> list[MicroBatch]:
    """Rollout rows first, then SFT traces, packed in order under `budget` (`pack_by_budget`)."""
    n_rows = len(rollout_items)
    parts = pack_by_budget(list(rollout_items) + list(sft_items), budget)
    return [MicroBatch(tuple(i for i in p if i < n_rows), tuple(i - n_rows for i in p if i >= n_rows)) for p in parts]


def rl_normaliser(mask: torch.Tensor, aggregation: str, max_tokens: int | None, clamp: bool = True) -> float:
    """D of `losses.aggregate_loss` over the rows of `mask` [B, T] (see the module docstring). `clamp`:
    token_mean's max(., 1), as the loss applies it; without it, the count that sums over processes."""
    rows = mask.shape[0]
    if aggregation == "token_mean":
        count = int((mask != 0).sum())
        return float(max(count, 1) if clamp else count)
    if aggregation == "seq_mean_token_mean":
        return float(rows)
    if aggregation == "token_sum_norm":
        if max_tokens is None or max_tokens <= 0:
            raise ValueError("aggregation='token_sum_norm' needs a positive max_tokens")
        return float(rows * max_tokens)
    raise ValueError(f"micro-batching cannot normalise aggregation {aggregation!r} over a step; "
                     f"known: {losses.AGGREGATIONS} (set train.micro_batch_tokens=null)")


def sft_normaliser(batch: dict, toolcall_weight: float, answer_weight: float, clamp: bool = True) -> float:
    """N_sup of `losses.component_sft_loss` over the traces of `batch`, clamped to >= 1 as it is (`clamp`;
    without it, the count that sums over processes): the loss itself counts it (on zero log-probs), so
    the rule (which components count) is the loss's own."""
    mask = batch["sft_toolcall_mask"]
    _, stats = losses.component_sft_loss(torch.zeros(mask.shape), batch["sft_reasoning_mask"], mask,
                                         toolcall_weight, 1.0, batch["sft_answer_mask"], answer_weight)
    count = int(stats["n_supervised"])
    return float(max(count, 1) if clamp else count)


def _width(sequences: list[list[int]]) -> int:
    return max(max((len(s) for s in sequences), default=0), 1)


def _rows(tensor: torch.Tensor, rows: list[int], width: int) -> torch.Tensor:
    """Rows of a [N] or [N, T] tensor; a 2-D one cut to `width` columns (its rows' padding beyond the
    longest sequence of the part is zero and in no mask)."""
    picked = tensor[torch.tensor(rows, dtype=torch.long)]
    return picked[:, :width] if picked.dim() == 2 else picked


def slice_batch(batch: dict, part: MicroBatch, k: int) -> dict:
    """The sub-batch of one part: its rollout rows (with `row_group`, each row's group in the step, so
    that rows of one group share one context however the part re-indexes them) and its SFT traces.
    The step's fields are shared; a kind of rows the part lacks is left out entirely."""
    out = {key: batch[key] for key in STEP_FIELDS if key in batch}
    out["micro_batch"] = True
    rows, sft = list(part.rows), list(part.sft)
    if rows:
        width = _width([batch["completions"][i] for i in rows])
        for key in ROLLOUT_LISTS:
            if key in batch:
                out[key] = [batch[key][i] for i in rows]
        for key in ROLLOUT_TENSORS:
            if key in batch:
                out[key] = _rows(batch[key], rows, width)
        out["row_group"] = [i // k for i in rows]
    if sft:
        width = _width([batch["sft_targets"][j] for j in sft])
        for key in SFT_LISTS:
            out[key] = [batch[key][j] for j in sft]
        for key in SFT_TENSORS:
            out[key] = _rows(batch[key], sft, width)
    return out


def split_batch(batch: dict, budget: int, k: int, prompt_rows: torch.Tensor | None, trace_rows: torch.Tensor | None,
                aggregation: str, max_tokens: int | None, sft_weights: tuple[float, float] | None) -> list[dict]:
    """The step's batch as micro-batches under `budget` tokens, each with its loss scales
    D_part / D_step (module docstring). `prompt_rows` / `trace_rows`: the rows scored in each context
    (None: none, or no RL this step); `sft_weights`: (tool-call, answer) weights of the step's SFT
    term, None when the step has none."""
    known = set(ROLLOUT_LISTS + ROLLOUT_TENSORS + SFT_LISTS + SFT_TENSORS + STEP_FIELDS + PROCESS_SCALES)
    unknown = sorted(set(batch) - known)
    if unknown:
        raise ValueError(f"micro-batching does not know how to split the batch field(s) {unknown}: "
                         "name them in pact_cotrain/training/microbatch.py")
    rl = "advantages" in batch and (prompt_rows is not None or trace_rows is not None)
    sft = sft_weights is not None and "sft_targets" in batch
    parts = plan_micro_batches(rollout_pieces(batch, k, prompt_rows, trace_rows) if rl else [],
                               sft_pieces(batch) if sft else [], budget)
    rl_total = rl_normaliser(batch["loss_mask"], aggregation, max_tokens) if rl else 1.0
    sft_total = sft_normaliser(batch, *sft_weights) if sft else 1.0
    out = []
    for part in parts:
        sub = slice_batch(batch, part, k)
        # times the process's own share of the step (1 with one process; distributed.loss_scales)
        if part.rows:
            sub["rl_loss_scale"] = (rl_normaliser(sub["loss_mask"], aggregation, max_tokens) / rl_total
                                    * batch.get("rl_loss_scale", 1.0))
        if part.sft:
            sub["sft_loss_scale"] = sft_normaliser(sub, *sft_weights) / sft_total * batch.get("sft_loss_scale", 1.0)
        out.append(sub)
    return out


def rows_by_budget(batch: dict, budget: int | None, k: int, kind: str) -> list[list[int]]:
    """Rollout rows in parts under `budget` for one context `kind` ("prompt" | "trace") alone: pi_old's
    no-grad pass when a batch is reused (num_iterations > 1). `budget=None`: every row at once."""
    n = len(batch["completions"])
    if budget is None:
        return [list(range(n))]
    every = torch.ones(n, dtype=torch.bool)
    items = rollout_pieces(batch, k, every if kind == "prompt" else None, every if kind == "trace" else None)
    return pack_by_budget(items, budget)


def generation_chunks(n_prompts: int, k: int, generation_batch_size: int | None) -> list[slice]:
    """Prompts per `RolloutEngine.rollout` call: `generation_batch_size` rollouts (whole groups of K)
    at a time, so decoding memory does not grow with the step's size. None: every prompt at once."""
    if generation_batch_size is None:
        return [slice(0, n_prompts)]
    if generation_batch_size < k or generation_batch_size % k:
        raise ValueError(f"sampling.generation_batch_size ({generation_batch_size}) must be a multiple of "
                         f"train.k ({k}): a group's K rollouts are generated together")
    per_chunk = generation_batch_size // k
    return [slice(start, min(start + per_chunk, n_prompts)) for start in range(0, n_prompts, per_chunk)]


def chunk_seed(seed: int, chunk: int) -> int:
    """The rollout seed of chunk `chunk`: the step's own for the first (so one chunk is today's
    rollout), distinct for the others (a repeated seed would replay the same random draws)."""
    return seed if chunk == 0 else (seed + 1_000_003 * chunk) % (2**31 - 1)


# --------------------------------------------------------------------------------------------
# metrics and accumulation (the trainer's state)
# --------------------------------------------------------------------------------------------


def metric_lengths(metrics: dict) -> dict[str, int]:
    return {key: len(values) for key, values in metrics.items()}


def drop_new_metrics(metrics: dict, before: dict[str, int]) -> None:
    """Remove what was appended since `before` (a zero-weight filler part's metrics)."""
    for key in list(metrics):
        if key not in before:
            del metrics[key]
        else:
            del metrics[key][before[key]:]


def part_tokens(part: dict) -> int:
    """A part's size, every context and completion it carries: picks the cheapest filler part."""
    return sum(len(c) for key in ("prompt_contexts", "trace_contexts", "completions", "sft_contexts", "sft_targets")
               for c in part.get(key, []))


def merge_step_metrics(metrics: dict, before: dict[str, int]) -> None:
    """Fold what the parts appended to each metric list since `before` into one entry per step: the
    sum for SUMMED_METRICS, the mean otherwise (so a step weighs once in the logged average)."""
    for key, values in metrics.items():
        start = before.get(key, 0)
        if len(values) - start <= 1:
            continue
        new = values[start:]
        del values[start:]
        values.append(sum(new) if key in SUMMED_METRICS else sum(new) / len(new))


@contextlib.contextmanager
def accumulation_context(accelerator, model, last: bool):
    """Around a part's forward and backward: for every part but the last, no gradient all-reduce
    (accelerate's `no_sync`: DDP, FSDP) and accelerate's `sync_gradients` off, which under DeepSpeed
    makes `backward` accumulate without an engine step, as the Trainer's own accumulation loop does."""
    if last:
        yield
        return
    from accelerate.utils import DistributedType

    state = accelerator.gradient_state
    previous = state.sync_gradients
    state._set_sync_gradients(False)
    try:
        if accelerator.distributed_type == DistributedType.DEEPSPEED:
            yield
        else:
            with accelerator.no_sync(model):
                yield
    finally:
        state._set_sync_gradients(previous)
