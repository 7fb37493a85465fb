"""FLOPs, peak memory per device and wall time of the passes `tokens.py` counts.

FLOPs (per pass; N_mm = parameters a token multiplies by, `shapes.ModelShape.matmul_params`):

    forward  = 2 (N_mm - V d) T  +  2 V d T_logits  +  4 L d_attn A
    train    = 3 forward  (backward = 2 forward),  + 1 forward with train.gradient_checkpointing

T = tokens, T_logits = positions whose logits are computed (completion / target tokens only: scoring
passes keep only those, `logits_to_keep`), A = query-key pairs the attention kernel computes (a
causal sequence of n tokens: n (n + 1) / 2, i.e. the usual 2 L n d_attn per token for QK^T and AV;
a packed group [x; c_1; ...; c_K] of n tokens under its custom mask: n^2, since a kernel given an
arbitrary mask skips no block), L = layers, V = vocabulary, d = hidden size. Rollout prefill and
decode are forward passes (causal, KV cached). Batched scoring (train.forward_per_group=false) also
computes padding and the pairs between groups that share a row: not counted.

Peak memory per device (bytes per parameter s = weights' dtype size; G = devices):

    none (DDP)  weights s N, gradients s N, AdamW 2 s N (torch keeps the moments in the weights' dtype)
    fsdp        the same, sharded over G (FSDP2 keeps parameters, gradients and moments in their dtype)
    zero2       weights s N; gradients s N / G; AdamW fp32 moments 8 N / G + fp32 master 4 N / G (s < 4)
    zero3       all of zero2's sharded over G
    + gathered parameters under zero3/fsdp: 2 layers in the compute dtype (the one computing, the next)

    activations at the largest micro-batch (T tokens, b = compute-dtype bytes):
      checkpointed:   L T d b  (each layer's input)  +  T w b  (one layer's working set, recomputed)
      otherwise:      L T w b,       w = 4 d + 5 d_attn + 2 d_kv + 4 d_ff  values saved per token and layer
      (q, k, v before and after rotary, attention output, two norms' inputs and outputs, gate, up,
      act(gate), gate*up); eager attention adds 2 n_heads n^2 b per layer for a group of n tokens
    packed-scoring mask: sum over groups of n^2 bytes (boolean [n, n], kept for the backward); none
      for a forward whose rows each hold one group with one completion (plainly causal)
    logits: T_logits V (b + 4 + 4) bytes (the head's output, its fp32 copy, the log-softmax kept for backward)
    rollouts (HF backend, not at the same time as the training activations): KV cache
      B_gen (ctx + max_completion) 2 L d_kv s_r, one decode step's logits B_gen V (s_r + 12) (the
      head's output, generate's fp32 copy, the sampling probabilities, the kept log-softmax: the
      sampled tokens' log-probs are taken step by step), and a copy of the weights in train.rollout_dtype
    vLLM (train.rollout_backend=vllm, an engine beside training on every device): gpu_memory_utilization
      x device memory when set in train.vllm; otherwise its need, weights + KV cache + 1 GiB
    runtime overhead (CUDA context, allocator slack): 2 GiB, assumed

Wall time per step = rollouts + training + optimiser:

    training   = train FLOPs per device / (peak x MFU)          (or --throughput-tflops, or calibrated)
    prefill    = prefill FLOPs / (peak x MFU)
    decode     = G_ep steps of max(weight bytes / HBM bandwidth, 2 N_mm b / (peak x MFU)) + KV bytes read / HBM
                 bandwidth: memory-bound, every episode of a generation batch advancing together (a lower
                 bound for HF generate, which adds kernel-launch overhead per step: calibrate)
    optimiser  = 28 N / G bytes (AdamW reads p, g, m, v and writes p, m, v in fp32) / HBM bandwidth
    calibrated (--calibration FILE): training at its train FLOP/s, rollouts (prefill included) at its
                 decode tokens/s, the optimiser at its bytes/s
Not modelled: communication (ZeRO-3/FSDP gathers and reduce-scatters, assumed overlapped), weight
pushes into vLLM, reward and environment time (a calibration absorbs them into its rates).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pact_cotrain.errors import UserError
from pact_cotrain.planning.shapes import ModelShape
from pact_cotrain.planning.tokens import Pass

GIB = 1024**3
SHARDINGS = ("none", "zero2", "zero3", "fsdp")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
ADAMW_BYTES_TOUCHED = 28  # fp32: read p, g, m, v; write p, m, v
RUNTIME_OVERHEAD_BYTES = 2 * GIB
VLLM_RUNTIME_BYTES = 1 * GIB
DEFAULT_MFU = 0.35


@dataclass(frozen=True)
class Device:
    name: str
    bf16_flops: float  # dense peak, FLOP/s
    fp32_flops: float  # without TF32 (PyTorch's default for matmuls)
    hbm_bytes_per_s: float
    memory_gb: float


DEVICES = {
    "h100": Device("NVIDIA H100 SXM", 989e12, 67e12, 3.35e12, 80),
    "h200": Device("NVIDIA H200", 989e12, 67e12, 4.8e12, 141),
    "a100": Device("NVIDIA A100 80GB SXM", 312e12, 19.5e12, 2.039e12, 80),
    "cpu": Device("CPU", 0.0, 0.0, 0.0, 0),  # no defaults: needs --calibration
}


@dataclass
class Precision:
    weights: str  # the weights' dtype (config `dtype`)
    compute: str  # the matmuls' dtype (autocast or the weights')
    rollout: str  # the rollout engine's weights
    why: str

    @property
    def weight_bytes(self) -> int:
        return DTYPE_BYTES[self.weights]

    @property
    def compute_bytes(self) -> int:
        return DTYPE_BYTES[self.compute]


def resolve_precision(cfg: dict, on_gpu: bool) -> Precision:
    """As `recipes/train.py` + `training/precision.py` resolve it, with bf16 native on a GPU."""
    weights = cfg.get("dtype", "float32")
    if weights not in DTYPE_BYTES:
        raise UserError(f"dtype {weights!r}: the planner knows {', '.join(DTYPE_BYTES)}")
    train = cfg["train"]
    mixed = train.get("mixed_precision") or "no"
    if mixed == "auto":
        mixed = "bf16" if on_gpu else "no"
    compute = "bfloat16" if mixed == "bf16" or weights != "float32" else "float32"
    why = f"dtype {weights}, train.mixed_precision {train.get('mixed_precision')}"
    rollout = train.get("rollout_dtype")
    if rollout == "auto":
        rollout = "bfloat16" if on_gpu else None
    if train.get("rollout_backend") == "vllm":
        rollout = rollout or (train.get("vllm") or {}).get("dtype") or "bfloat16"  # VLLMBackend's default
    return Precision(weights, compute, rollout or weights, why)


# ------------------------------------------------------------------------------------ FLOPs


def forward_flops(p: Pass, shape: ModelShape) -> float:
    head = shape.vocab * shape.hidden
    return (2 * (shape.matmul_params - head) * p.tokens + 2 * head * p.logit_tokens
            + 4 * shape.n_layers * shape.d_attn * (p.attended if p.computed is None else p.computed))


def pass_flops(p: Pass, shape: ModelShape, checkpointing: bool) -> float:
    if p.kind == "train":
        return (4 if checkpointing else 3) * forward_flops(p, shape)
    return forward_flops(p, shape)


# ------------------------------------------------------------------------------------ memory


@dataclass
class MemoryLine:
    name: str
    bytes: float
    note: str = ""
    counted: bool = True  # False: alive at another time than the peak (shown, not added)


@dataclass
class MemoryPlan:
    lines: list[MemoryLine]
    capacity: float  # bytes per device
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(line.bytes for line in self.lines if line.counted)

    @property
    def fits(self) -> bool:
        return self.total <= self.capacity


def state_bytes(shape: ModelShape, precision: Precision, sharding: str, gpus: int) -> list[MemoryLine]:
    """Weights, gradients and AdamW states per device (module docstring)."""
    n, s = shape.n_params, precision.weight_bytes
    shard = lambda sharded: gpus if sharded else 1  # noqa: E731
    if sharding in ("none", "fsdp"):
        split = shard(sharding == "fsdp")
        lines = [MemoryLine("weights", s * n / split, f"{precision.weights}"),
                 MemoryLine("gradients", s * n / split, f"{precision.weights}"),
                 MemoryLine("AdamW moments", 2 * s * n / split, f"2 x {precision.weights} (torch keeps the weights' dtype)")]
    else:
        lines = [MemoryLine("weights", s * n / shard(sharding == "zero3"), precision.weights),
                 MemoryLine("gradients", s * n / gpus, precision.weights),
                 MemoryLine("AdamW moments", 8 * n / gpus, "2 x fp32")]
        if s < 4:
            lines.append(MemoryLine("fp32 master weights", 4 * n / gpus, "DeepSpeed mixed precision"))
    if sharding in ("zero3", "fsdp") and gpus > 1:
        lines.append(MemoryLine("gathered parameters", 2 * shape.layer_params * precision.compute_bytes,
                                "2 layers at a time"))
    if sharding != "none" and gpus > 1:
        lines[0].note += f", sharded over {gpus}" if sharding in ("zero3", "fsdp") else ", replicated"
    return lines


def layer_values_per_token(shape: ModelShape) -> int:
    """w: values one layer keeps per token for its backward (module docstring)."""
    return 4 * shape.hidden + 5 * shape.d_attn + 2 * shape.d_kv + 4 * shape.intermediate


def activation_bytes(tokens: float, group_lengths: list[float], shape: ModelShape, compute_bytes: int,
                     checkpointing: bool, eager: bool) -> float:
    b, L = compute_bytes, shape.n_layers
    w = layer_values_per_token(shape)
    scores = 2 * shape.n_heads * sum(n * n for n in group_lengths) * b if eager else 0.0
    if checkpointing:
        return L * tokens * shape.hidden * b + tokens * w * b + scores
    return L * (tokens * w * b + scores)


def logits_bytes(logit_tokens: float, shape: ModelShape, compute_bytes: int) -> float:
    return logit_tokens * shape.vocab * (compute_bytes + 8)


def rollout_logits_bytes(batch: float, shape: ModelShape, rollout_bytes: int) -> float:
    """HF rollouts' log-prob memory: one decode step's B x V logits in the rollout dtype, generate's fp32
    copy, its sampling probabilities (fp32) and the log-softmax `SampledLogprobs` keeps until the next
    step; independent of the tokens per turn (no logits are kept across steps)."""
    return batch * shape.vocab * (rollout_bytes + 12)


# ------------------------------------------------------------------------------------ throughput


@dataclass
class Throughput:
    train_flops_per_s: float  # achieved, per device
    decode: str  # "model" | "calibrated"
    decode_tokens_per_s: float | None  # calibrated: generated tokens/s per device, prefill included
    optimizer_bytes_per_s: float
    prefill_flops_per_s: float
    hbm_bytes_per_s: float
    peak_flops: float
    mfu: float | None
    description: str
    calibration: dict | None = None


def throughput(device: Device, precision: Precision, tflops: float | None, calibration: dict | None,
               mfu: float = DEFAULT_MFU) -> Throughput:
    if calibration is not None:
        return Throughput(float(calibration["train_flops_per_s"]), "calibrated",
                          float(calibration["decode_tokens_per_s"]), float(calibration["optimizer_bytes_per_s"]),
                          0.0, 0.0, 0.0, None,
                          f"calibrated on {calibration.get('device', 'the calibration run')}: training "
                          f"{calibration['train_flops_per_s'] / 1e9:.1f} GFLOP/s, rollouts "
                          f"{calibration['decode_tokens_per_s']:.1f} generated tokens/s (prefill included, at "
                          f"{calibration.get('decode_batch', '?')} episodes at once), optimiser "
                          f"{calibration['optimizer_bytes_per_s'] / 1e9:.1f} GB/s", calibration)
    if device.bf16_flops == 0:
        raise UserError(f"--device {device.name.lower()} has no throughput table; give --calibration FILE "
                        f"(benchmarks/plan_validate.py writes one)")
    peak = device.bf16_flops if precision.compute != "float32" else device.fp32_flops
    achieved = tflops * 1e12 if tflops is not None else peak * mfu
    source = f"--throughput-tflops {tflops:g}" if tflops is not None else \
        f"{device.name} {precision.compute} peak {peak / 1e12:.0f} TFLOP/s x MFU {mfu:g} (assumed)"
    return Throughput(achieved, "model", None, device.hbm_bytes_per_s, peak * mfu, device.hbm_bytes_per_s, peak, mfu,
                      f"training {achieved / 1e12:.1f} TFLOP/s per device ({source}); decode memory-bound at "
                      f"{device.hbm_bytes_per_s / 1e12:.2f} TB/s HBM", None)


def load_calibration(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UserError(f"--calibration {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"--calibration {path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    missing = [k for k in ("train_flops_per_s", "decode_tokens_per_s", "optimizer_bytes_per_s") if k not in data]
    if missing:
        raise UserError(f"--calibration {path}: missing {', '.join(missing)} (benchmarks/plan_validate.py writes "
                        f"the file)")
    return data


def decode_seconds(generated_per_episode: float, episodes: float, chunk: float, context: float,
                   shape: ModelShape, precision: Precision, tp: Throughput) -> float:
    """Seconds to decode `episodes` episodes of `generated_per_episode` tokens, `chunk` at a time."""
    if tp.decode == "calibrated":
        return generated_per_episode * episodes / tp.decode_tokens_per_s
    rollout_bytes = DTYPE_BYTES[precision.rollout]
    chunks = max(episodes / chunk, 1.0) if chunk else 1.0
    batch = episodes / chunks
    weight_read = shape.n_params * rollout_bytes / tp.hbm_bytes_per_s
    compute = 2 * shape.matmul_params * batch / tp.prefill_flops_per_s
    kv_read = batch * context * shape.kv_bytes_per_token(rollout_bytes) / tp.hbm_bytes_per_s
    return chunks * generated_per_episode * (max(weight_read, compute) + kv_read)
