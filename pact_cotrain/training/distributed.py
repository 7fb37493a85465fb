"""Rollouts in every process: what makes N processes' step the single process's step (issue 12 item 2).

Under `accelerate launch --num_processes N` (or torchrun) every process rolls out its own share of the
step. TRL's RepeatSampler yields the step's N * P prompts, each repeated K times consecutively, and
accelerate hands process r the r-th run of P * K rows, so a group's K rollouts are always in one process
(`PACTTrainer._batch_tasks` checks it) and group advantages never need another process's rewards.
`train.prompts_per_step` is P, the prompts of ONE process (TRL's per_device_train_batch_size / K).

Three things make the N processes' update the update of one process given all N * P prompts:

1. Loss normalisers are step-global. Process r's loss is  L_r = sum_{i in r} c_i / D_r  (its own
   normaliser D_r, e.g. its masked token count), and DDP averages gradients over processes, so without
   a correction the update would follow  (1/N) sum_r L_r,  which is not  L = sum_i c_i / D  with
   D = sum_r D_r  unless every D_r is equal. Each process therefore multiplies its loss by

       s_r = N * D_r / D,     so that     (1/N) sum_r s_r L_r = sum_r sum_{i in r} c_i / D = L.

   D = sum_r D_r is one all-reduce per step (RL and SFT together). With `seq_mean_token_mean` and
   `token_sum_norm` every D_r is equal and s_r = 1 exactly; `token_mean` and the SFT term's N_sup need
   it. `microbatch.split_batch` multiplies its own part scales by s_r. (TRL does the same for its
   token-level losses with `num_items_in_batch` summed over processes.)
2. Random draws are the single process's. Anchoring draws b_x for all N * P prompts from the step's
   generator and process r keeps its slice; rollout chunk c of process r uses the seed that chunk
   r * C + c of the single process uses (C chunks per process), so rank r rolls out with its own seed
   and N processes with `generation_batch_size` = B reproduce one process with the same chunks.
3. Logged metrics are averaged over processes (`mean_metrics_across_processes`), so rank 0's log shows
   the step, not its own share (a scaled loss averages back to L).

vLLM in every process (TRL's colocate pattern): each process builds its own engine with
tensor_parallel_size 1 and `distributed_executor_backend="external_launcher"`, which makes vLLM use the
torch.distributed job it finds instead of starting its own (it reads RANK, LOCAL_RANK, WORLD_SIZE,
MASTER_ADDR/PORT), and its own seed offset; `vllm_process_kwargs` returns those arguments.

Sharded parameters (DeepSpeed ZeRO-2/3, FSDP) put collectives in every forward (ZeRO-3, FSDP: weight
all-gathers) or every backward (ZeRO-2/3, FSDP: gradient reduce-scatters), and a collective that one
process calls and another does not waits forever. Two things keep the counts equal:

4. Pass counts are agreed across processes (`agreed_counts`): micro-batch counts are padded to the
   largest over processes, and a process with fewer parts runs extra parts with every loss scale 0,
   whose gradient is exactly zero (`PACTTrainer.training_step`); pi_old's passes of `num_iterations`
   > 1 are agreed in one collective, the [x; h] pass included, which a process none of whose rows is
   scored in [x; h] runs on filler rows when another process runs it (`_old_logps`). Each agreement
   also checks that every process is at the same agreement site and step, and raises
   CollectiveMismatchError instead of hanging when one is not. The per-group scoring layout (a forward
   per group) is refused there, since its forward count follows the batch.
5. Rollouts never run a forward of the sharded model: HF rollouts decode with an unsharded copy, and
   vLLM receives, the full weights gathered once per step (`full_parameters`), so processes whose
   episodes end at different turns need not stay in step while decoding. The copy is built once per
   run and its weights are overwritten in place each step (no model is rebuilt or re-initialised).
"""

from __future__ import annotations

import contextlib
import math
import os
import zlib

import torch

from pact_cotrain.errors import UserError
from pact_cotrain.training import microbatch


def world(accelerator) -> tuple[int, int]:
    """(this process's index, number of processes)."""
    return accelerator.process_index, accelerator.num_processes


# ----------------------------------------------------------------------------------- random draws


def rollout_chunk_seed(seed: int, chunk: int, chunks_per_process: int, rank: int) -> int:
    """The seed of this process's rollout chunk `chunk`: the single process's chunk rank * C + chunk."""
    return microbatch.chunk_seed(seed, rank * chunks_per_process + chunk)


def local_share(draw: torch.Tensor, rank: int, n_processes: int) -> torch.Tensor:
    """Process `rank`'s slice of a draw made for the whole step (N equal shares, in rank order)."""
    if draw.shape[0] % n_processes:
        raise ValueError(f"a step-wide draw of {draw.shape[0]} entries does not split into {n_processes} shares")
    share = draw.shape[0] // n_processes
    return draw[rank * share : (rank + 1) * share]


# ----------------------------------------------------------------------------------- normalisers


def rl_raw_normaliser(mask: torch.Tensor, aggregation: str, max_tokens: int | None) -> float:
    """D_r before the clamp to >= 1 that only `token_mean` applies: what sums over processes."""
    return microbatch.rl_normaliser(mask, aggregation, max_tokens, clamp=False)


def sft_raw_normaliser(batch: dict, toolcall_weight: float, answer_weight: float) -> float:
    """N_sup of this process's traces (0 without any), before the clamp to >= 1."""
    if "sft_targets" not in batch:
        return 0.0
    return microbatch.sft_normaliser(batch, toolcall_weight, answer_weight, clamp=False)


def process_scale(local_raw: float, total_raw: float, n_processes: int, clamp: bool) -> float:
    """s_r = N * D_r / D (module docstring). `clamp`: both normalisers are max(., 1), as the loss's own
    (a process with no tokens has a zero loss; its scale is then harmless)."""
    local, total = (max(local_raw, 1.0), max(total_raw, 1.0)) if clamp else (local_raw, total_raw)
    if total == 0:
        return 1.0
    return n_processes * local / total


def all_reduce_sum(accelerator, values: list[float]) -> list[float]:
    """Sums over processes (float64, so integer token counts add exactly)."""
    t = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t.tolist()


def loss_scales(accelerator, batch: dict, rl: bool, aggregation: str, max_tokens: int | None,
                sft_weights: tuple[float, float] | None) -> dict:
    """{"rl_loss_scale": s_r, "sft_loss_scale": s_r} for this process's step batch; {} with one process.

    Every process must call this once per built batch, in the same order (one all-reduce), whether or
    not it holds RL rows or SFT traces itself: `rl` and `sft_weights` follow the step's plan, which is
    the same in every process."""
    n = accelerator.num_processes
    if n == 1:
        return {}
    rl_local = rl_raw_normaliser(batch["loss_mask"], aggregation, max_tokens) if rl else 0.0
    sft_local = sft_raw_normaliser(batch, *sft_weights) if sft_weights is not None else 0.0
    rl_total, sft_total = all_reduce_sum(accelerator, [rl_local, sft_local])
    out = {}
    if rl:
        out["rl_loss_scale"] = process_scale(rl_local, rl_total, n, clamp=aggregation == "token_mean")
    if sft_weights is not None and "sft_targets" in batch:
        out["sft_loss_scale"] = process_scale(sft_local, sft_total, n, clamp=True)
    return out


# ----------------------------------------------------------------------------------- sharded parameters


def sharding(accelerator) -> str | None:
    """"zero2", "zero3" or "fsdp" when gradients or weights are sharded over several processes; None
    under DDP and with one process (no collective outside the last backward's all-reduce)."""
    from accelerate.utils import DistributedType

    if accelerator.num_processes == 1:
        return None
    if accelerator.distributed_type == DistributedType.FSDP:
        return "fsdp"
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        stage = accelerator.state.deepspeed_plugin.zero_stage
        return f"zero{stage}" if stage >= 2 else None
    return None


class CollectiveMismatchError(RuntimeError):
    """Processes reached an agreement point at different places or steps: they would hang."""


AGREEMENT_SLOTS = 4  # counts per agreement; fixed, so processes at different sites still match one all-gather


def pads_passes(accelerator, force: bool = False) -> bool:
    """Whether pass counts must be equal across processes: under sharding (every forward or backward is
    a collective), or with `force` (tests, under DDP)."""
    return force or sharding(accelerator) is not None


def agreed_counts(accelerator, site: str, step: int, counts: dict[str, int], force: bool = False) -> dict[str, int]:
    """The number of passes of each kind in `counts` that EVERY process runs here: the largest over
    processes (a process with fewer runs fillers), when pass counts must be equal (`pads_passes`); this
    process's own otherwise (no collective).

    One all-gather carries (site, step, counts) of every process; it is also the check that the processes
    agree where they are: a process that reached another agreement site, or this one at another step, has
    run a different sequence of passes, and every process raises CollectiveMismatchError naming both
    instead of waiting forever on a collective the other never calls."""
    if len(counts) > AGREEMENT_SLOTS:
        raise ValueError(f"at most {AGREEMENT_SLOTS} counts per agreement, got {sorted(counts)}")
    if not pads_passes(accelerator, force):
        return dict(counts)
    site_id = zlib.crc32(site.encode())
    values = [site_id, step, *counts.values()] + [0] * (AGREEMENT_SLOTS - len(counts))
    local = torch.tensor(values, dtype=torch.int64, device=accelerator.device)
    gathered = [torch.empty_like(local) for _ in range(accelerator.num_processes)]
    torch.distributed.all_gather(gathered, local)
    rows = [g.tolist() for g in gathered]
    if any(row[:2] != rows[0][:2] for row in rows):
        where = {r: (row[1], "here" if row[0] == site_id else "elsewhere") for r, row in enumerate(rows)}
        raise CollectiveMismatchError(
            f"process {torch.distributed.get_rank()} is at {site!r} of step {step}, but the processes are at "
            f"(step, site) {where}: they ran different sequences of passes and would wait forever on a "
            f"collective (training/distributed.py, item 4)")
    return {key: max(row[2 + i] for row in rows) for i, key in enumerate(counts)}


def padded_count(accelerator, n_local: int, force: bool = False, site: str = "parts", step: int = 0) -> int:
    """The number of forward/backward parts every process runs: the largest `n_local` over processes
    under sharding (or with `force`), this process's own otherwise (no collective); `agreed_counts`."""
    return agreed_counts(accelerator, site, step, {"parts": n_local}, force)["parts"]


def zero_weight(part: dict) -> dict:
    """A part that runs the same forward and backward as `part` and contributes exactly nothing: every
    loss scale 0 (0 x a finite gradient is 0)."""
    return {**part, "rl_loss_scale": 0.0, "sft_loss_scale": 0.0}


def check_scoring_layout(accelerator, forward_per_group: bool) -> None:
    if forward_per_group and sharding(accelerator) in ("zero3", "fsdp"):
        raise UserError("train.forward_per_group=true under ZeRO-3 or FSDP: a forward per prompt group makes "
                        "the processes' weight all-gathers differ in number; drop the key (one packed forward)")


@contextlib.contextmanager
def full_parameters(accelerator, model):
    """(name, full tensor) of every parameter of `model` (the prepared, wrapped model) on every process,
    in checkpoint naming, valid inside the block. FSDP: torch's full state dict (an all-gather per
    parameter). ZeRO-3: DeepSpeed's GatheredParameters, as TRL's `unwrap_model_for_generation`. Other
    launches already hold full parameters. Every process must enter it at the same point."""
    unwrapped = accelerator.unwrap_model(model)
    kind = sharding(accelerator)
    if kind == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=False))
        yield list(state.items())
    elif kind == "zero3":
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters())):
            yield [(name, p.data) for name, p in unwrapped.named_parameters()]
    else:
        yield [(name, p.detach()) for name, p in unwrapped.named_parameters()]


def unsharded_copy(accelerator, model, dtype: torch.dtype) -> torch.nn.Module:
    """A plain (unsharded) instance of the policy's architecture on this process's device, its parameters
    in `dtype` and left uninitialised (`load_full_parameters` fills them): what HF rollouts decode with
    under sharding. Built once per run (`RolloutPolicyMixin._rollout_policy`). Buffers keep the precision
    the model computes them in (rotary frequencies stay fp32), as the unsharded rollout copy's do."""
    from transformers import PreTrainedModel
    from transformers.initialization import no_init_weights

    unwrapped = accelerator.unwrap_model(model)
    if hasattr(unwrapped, "peft_config"):
        raise UserError("LoRA with ZeRO-3 or FSDP and HF rollouts is not wired in; use DDP or ZeRO-2")
    # FSDP2 swaps the class for a generated FSDP<Cls>; build the model class it wraps.
    from torch.distributed.fsdp import FSDPModule

    cls = next(c for c in type(unwrapped).__mro__ if issubclass(c, PreTrainedModel) and not issubclass(c, FSDPModule))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters are created in `dtype`, not made in fp32 and cast
    try:
        with no_init_weights(), torch.device(accelerator.device):
            copy = cls(unwrapped.config)
    finally:
        torch.set_default_dtype(previous)
    copy.eval()
    for param in copy.parameters():
        param.requires_grad_(False)
    return copy


@torch.no_grad()
def load_full_parameters(target: torch.nn.Module, named: list[tuple[str, torch.Tensor]]) -> None:
    """Copy gathered full parameters into `target` by name (tied weights come once); every parameter of
    `target` must be there."""
    by_name = dict(named)
    missing = [name for name, _ in target.named_parameters() if name not in by_name]
    if missing:
        raise RuntimeError(f"gathered parameters lack {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    for name, param in target.named_parameters():
        param.copy_(by_name[name])


# ----------------------------------------------------------------------------------- metrics


def mean_metrics_across_processes(accelerator, metrics: dict[str, list[float]]) -> None:
    """Replace each metric's list by one value: the mean over processes of each process's mean (NaN
    entries skipped, as TRL's `log` does; a process without the metric is left out). Every process
    must call it at the same log (TRL's `log` runs in all of them)."""
    if accelerator.num_processes == 1:
        return
    local = {}
    for key, values in metrics.items():
        valid = [v for v in values if not math.isnan(v)]
        local[key] = sum(valid) / len(valid) if valid else math.nan
    gathered: list[dict] = [None] * accelerator.num_processes
    torch.distributed.all_gather_object(gathered, local)
    for key in sorted({key for part in gathered for key in part}):
        values = [part[key] for part in gathered if key in part and not math.isnan(part[key])]
        metrics[key] = [sum(values) / len(values)] if values else [math.nan]


# ----------------------------------------------------------------------------------- vLLM


def vllm_process_kwargs(accelerator, seed: int, user_kwargs: dict) -> dict:
    """The VLLMBackend arguments that give this process its own colocated engine (TRL's colocate mode
    with tensor_parallel_size 1): {} with one process.

    `external_launcher` makes vLLM join the torch.distributed job already running (every process is
    its own data-parallel replica) instead of initialising one of its own on the same MASTER_PORT; the
    engine core must stay in this process for that (VLLMBackend's default, in_process=True)."""
    rank, n = world(accelerator)
    if n == 1:
        return {}
    tp = user_kwargs.get("tensor_parallel_size", 1)
    if tp != 1:
        raise UserError(f"train.vllm.tensor_parallel_size={tp} with {n} processes: each process holds its own "
                        f"engine with tensor_parallel_size 1 (drop the key, or run one process)")
    if user_kwargs.get("in_process") is False:
        raise UserError("train.vllm.in_process=false with several processes: a colocated engine must run "
                        "in its training process (drop the key)")
    # vLLM reads these when the engine is built; torchrun and accelerate launch set them, a custom
    # launcher might not (TRL sets them the same way).
    os.environ["RANK"] = str(rank)
    os.environ["LOCAL_RANK"] = str(accelerator.local_process_index)
    os.environ["WORLD_SIZE"] = str(n)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        raise UserError("train.rollout_backend=vllm with several processes needs MASTER_PORT set "
                        "(accelerate launch and torchrun set it)")
    return {"distributed_executor_backend": "external_launcher", "tensor_parallel_size": 1, "seed": seed + rank}
