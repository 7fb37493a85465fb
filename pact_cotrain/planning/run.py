"""A config -> its plan: tokens, FLOPs, memory and time of every step and of the whole run.

Phased configs (`phases:`, e.g. sft_then_matchtir) are planned phase by phase, with the stopping rules
of `recipes/phased.py` (`stop: {epochs: E}` = ceil(E * traced tasks / prompts_per_step) steps).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from pact_cotrain.errors import UserError
from pact_cotrain.planning import cost, tokens
from pact_cotrain.planning.shapes import ModelShape, model_shape
from pact_cotrain.training import step_prompts


@dataclass
class PlanOptions:
    gpus: int = 1
    gpu_memory_gb: float | None = None  # None: the device's
    device: str = "h100"
    sharding: str | None = None  # None: zero3 when gpus > 1, else none
    throughput_tflops: float | None = None
    calibration: str | None = None
    mfu: float = cost.DEFAULT_MFU
    rollout_shape: str = "caps"  # caps | traces (a calibration's measured shape wins unless given)
    chars_per_token: float | None = None
    stats: tokens.DataStats | None = None  # given lengths instead of measuring (tests)


@dataclass
class PassTotal:
    name: str
    kind: str
    tokens: float = 0.0  # over all processes
    flops: float = 0.0  # over all processes


@dataclass
class PhasePlan:
    name: str
    config: str
    cfg: dict
    method: str
    steps: int
    rollout_steps: int
    stats: tokens.DataStats
    passes: dict[str, PassTotal]  # whole run, every process
    seconds: dict[str, float]  # whole run: rollouts, training, optimiser
    memory: cost.MemoryPlan
    peak_micro_batch_tokens: float
    micro_batches: int
    rollout: tokens.RolloutShape

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    def per_step(self, value: float) -> float:
        return value / max(self.steps, 1)


@dataclass
class Plan:
    config: str
    model: str
    shape: ModelShape
    shape_source: str
    options: PlanOptions
    device: cost.Device
    sharding: str
    precision: cost.Precision
    throughput: cost.Throughput
    rollout: tokens.RolloutShape
    phases: list[PhasePlan] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def total_seconds(self) -> float:
        return sum(p.total_seconds for p in self.phases)


def phase_configs(config: str, overrides: list[str]) -> list[tuple[str, str, dict, dict | None]]:
    """[(phase name, config name, merged config, stop rule)]: one entry for a plain config."""
    from pact_cotrain.recipes.phased import read_raw
    from pact_cotrain.config import load_config

    cfg = load_config(config, overrides)
    raw = read_raw(config)
    if not raw.get("phases"):
        return [(cfg["method"]["name"], config, cfg, None)]
    out = []
    for i, phase in enumerate(raw["phases"]):
        if not isinstance(phase, dict) or "config" not in phase:
            raise UserError(f"{config}: phases[{i}]: expected a mapping with a `config` key")
        extra = list(overrides) + [f"{k}={json.dumps(v)}" for k, v in (phase.get("overrides") or {}).items()]
        out.append((phase.get("name", f"phase{i}"), phase["config"], load_config(phase["config"], extra),
                    phase.get("stop")))
    return out


def phase_steps(cfg: dict, stop: dict | None, stats: tokens.DataStats, gpus: int = 1) -> int:
    if stop and "steps" in stop:
        return int(stop["steps"])
    if stop and "epochs" in stop:  # every GPU's process takes prompts_per_step prompts a step
        return math.ceil(float(stop["epochs"]) * stats.n_traced / (cfg["train"]["prompts_per_step"] * gpus))
    return int(cfg["train"]["max_steps"])


def make_plan(config: str, overrides: list[str] = (), options: PlanOptions | None = None) -> Plan:
    from pact_cotrain.training.methods import MethodConfig

    options = options or PlanOptions()
    if options.gpus < 1:
        raise UserError(f"--gpus must be >= 1, got {options.gpus}")
    if options.device not in cost.DEVICES:
        raise UserError(f"--device {options.device!r}: known devices are {', '.join(cost.DEVICES)}")
    sharding = options.sharding or ("zero3" if options.gpus > 1 else "none")
    if sharding not in cost.SHARDINGS:
        raise UserError(f"--sharding {sharding!r}: one of {', '.join(cost.SHARDINGS)}")
    phases = phase_configs(config, list(overrides))
    for _, _, cfg, _ in phases:  # each GPU's share of train.global_prompts_per_step (refused when it does not divide)
        step_prompts.resolve(cfg, options.gpus)
    first = phases[0][2]
    shape, shape_source = model_shape(str(first["model"]))
    device = cost.DEVICES[options.device]
    on_gpu = options.device != "cpu"
    precision = cost.resolve_precision(first, on_gpu)
    calibration = cost.load_calibration(options.calibration) if options.calibration else None
    tp = cost.throughput(device, precision, options.throughput_tflops, calibration, options.mfu)
    capacity = (options.gpu_memory_gb if options.gpu_memory_gb is not None else device.memory_gb) * 1e9
    if capacity <= 0:
        raise UserError("--gpu-memory GB is needed for --device cpu (the memory to plan against)")
    tokenizer, counted_with = (None, "") if options.stats else \
        tokens.counting_tokenizer(str(first["model"]), options.chars_per_token)
    plan = None
    measured: dict = {}
    for name, config_name, cfg, stop in phases:
        method = MethodConfig(**cfg["method"])
        key = (repr(sorted(cfg["data"].items())), method.trace_view)
        if options.stats is None and key not in measured:
            measured[key] = tokens.measure_data(cfg, tokenizer, counted_with, method.trace_view)
        stats = options.stats or measured[key]
        sampling = cfg["sampling"]
        if calibration is not None and calibration.get("rollout") and options.rollout_shape == "caps":
            shape_r = tokens.measured_shape(sampling, calibration["rollout"], options.calibration)
        elif options.rollout_shape == "traces":
            shape_r = tokens.trace_shape(sampling, stats)
        elif options.rollout_shape == "caps":
            shape_r = tokens.caps_shape(sampling, stats)
        else:
            raise UserError(f"--rollout-shape {options.rollout_shape!r}: caps or traces")
        if plan is None:
            plan = Plan(config, str(first["model"]), shape, shape_source, options, device, sharding, precision, tp,
                        shape_r)
        plan.phases.append(plan_phase(name, config_name, cfg, method, stats, shape_r, stop, plan, capacity, on_gpu))
    if first["train"].get("lora"):
        plan.notes.append("train.lora is not modelled: memory and FLOPs are full fine-tuning's (an upper bound)")
    if sharding in ("zero3", "fsdp") and options.gpus > 1 and first["train"].get("rollout_backend", "hf") == "hf":
        plan.notes.append(f"{sharding} with HF rollouts: each GPU gathers the full weights once a step into an "
                          "unsharded copy it decodes with (counted as the rollout weights copy)")
    return plan


def plan_phase(name, config_name, cfg, method, stats, rollout, stop, plan: Plan, capacity: float,
               on_gpu: bool) -> PhasePlan:
    from pact_cotrain.training.methods import plan_step

    train = cfg["train"]
    steps = phase_steps(cfg, stop, stats, plan.options.gpus)
    iterations = int(train.get("num_iterations", 1) or 1)
    per_group = train.get("forward_per_group")
    inputs = tokens.StepInputs(train["prompts_per_step"], train["k"], iterations, method.anchor_mode, method.surrogate,
                               stats, rollout, {method.trace_view: stats.trace_context},
                               (not on_gpu) if per_group is None else bool(per_group), train.get("micro_batch_tokens"),
                               method.trace_view)
    G = plan.options.gpus
    checkpointing = bool(train.get("gradient_checkpointing", True))
    totals: dict[str, PassTotal] = {}
    seconds = {"rollouts": 0.0, "training": 0.0, "optimiser": 0.0}
    optimiser = optimiser_seconds(plan)
    signatures: dict[tuple, object] = {}
    rollout_steps = 0
    for step in range(steps):
        step_plan = plan_step(method, step, max(steps, 1))
        rollout_step = step % iterations == 0
        passes = tokens.step_passes(step_plan, inputs, rollout_step)
        rollout_steps += int(step_plan.rl and rollout_step)
        for p in passes:
            total = totals.setdefault(p.name, PassTotal(p.name, p.kind))
            total.tokens += G * p.tokens
            total.flops += G * cost.pass_flops(p, plan.shape, checkpointing)
        for key, value in step_seconds(passes, cfg, inputs, plan, optimiser).items():
            seconds[key] += value
        signatures.setdefault((step_plan.rl, step_plan.sft_coef > 0, step_plan.anchor_q, step_plan.rollout_trace_view),
                              step_plan)
    memory, peak_tokens, parts = peak_memory(cfg, inputs, list(signatures.values()), plan, capacity, on_gpu)
    ordered = {n: totals[n] for n in tokens.PASS_ORDER if n in totals}
    return PhasePlan(name, config_name, cfg, method.name, steps, rollout_steps, stats, ordered, seconds, memory,
                     peak_tokens, parts, rollout)


def step_seconds(passes: list[tokens.Pass], cfg: dict, inputs: tokens.StepInputs, plan: Plan,
                 optimiser: float) -> dict[str, float]:
    """One step's seconds on one device: rollouts, training passes, optimiser (cost.py's time model)."""
    checkpointing = bool(cfg["train"].get("gradient_checkpointing", True))
    training = sum(cost.pass_flops(p, plan.shape, checkpointing) for p in passes if p.kind in ("train", "forward"))
    return {"rollouts": rollout_seconds(passes, cfg, inputs, plan),
            "training": training / plan.throughput.train_flops_per_s, "optimiser": optimiser}


def rollout_seconds(passes, cfg: dict, inputs: tokens.StepInputs, plan: Plan) -> float:
    tp = plan.throughput
    decode = next((p for p in passes if p.kind == "decode"), None)
    prefill = next((p for p in passes if p.kind == "prefill"), None)
    if decode is None:
        return 0.0
    episodes = inputs.prompts * inputs.k
    chunk = cfg["sampling"].get("generation_batch_size") or episodes
    context = decode.attended / max(decode.tokens, 1e-9)  # mean attended positions of a decoded token
    seconds = cost.decode_seconds(inputs.shape.generated, episodes, chunk, context, plan.shape, plan.precision, tp)
    if tp.decode == "model" and prefill is not None:
        seconds += cost.forward_flops(prefill, plan.shape) / tp.prefill_flops_per_s
    return seconds


def optimiser_seconds(plan: Plan) -> float:
    shard = plan.options.gpus if plan.sharding != "none" else 1
    return cost.ADAMW_BYTES_TOUCHED * plan.shape.n_params / shard / plan.throughput.optimizer_bytes_per_s


def peak_memory(cfg: dict, inputs: tokens.StepInputs, step_plans: list, plan: Plan, capacity: float,
                on_gpu: bool) -> tuple[cost.MemoryPlan, float, int]:
    """Memory per device at the worst step of the phase (module docstrings of tokens.py / cost.py)."""
    from pact_cotrain.planning.layout import forward_layout

    train, sampling = cfg["train"], cfg["sampling"]
    shape, precision = plan.shape, plan.precision
    checkpointing = bool(train.get("gradient_checkpointing", True))
    per_group = inputs.per_group
    eager = train.get("attn_implementation") == "eager"
    budget = train.get("micro_batch_tokens")
    worst, worst_tokens, n_parts = None, 0.0, 0
    for step_plan in step_plans:
        rollout_items, sft_items = tokens.peak_items(step_plan, inputs, sampling["max_completion_tokens"])
        for part in forward_layout(rollout_items, sft_items, budget, per_group):
            act = cost.activation_bytes(part.tokens, part.group_lengths if eager else [], shape,
                                        precision.compute_bytes, checkpointing, eager)
            lines = [cost.MemoryLine("activations", act, f"{part.tokens:,.0f} tokens in the largest micro-batch"
                                     + (", checkpointed" if checkpointing else "")),
                     cost.MemoryLine("logits", cost.logits_bytes(part.logit_tokens, shape, precision.compute_bytes),
                                     f"{part.logit_tokens:,.0f} positions x {shape.vocab:,} vocabulary"),
                     cost.MemoryLine("packed-scoring mask", part.mask_bytes, "boolean, per packed row")]
            if worst is None or sum(line.bytes for line in lines) > sum(line.bytes for line in worst):
                worst, worst_tokens = lines, part.tokens
            n_parts = max(n_parts, part.count)
    lines = cost.state_bytes(shape, precision, plan.sharding, plan.options.gpus) + (worst or [])
    notes = []
    rl = any(p.rl for p in step_plans)
    episodes = inputs.prompts * inputs.k
    chunk = sampling.get("generation_batch_size") or episodes
    context = max(inputs.stats.prompt, inputs.stats.trace_context if any(p.rollout_trace_view for p in step_plans) else 0)
    kv = chunk * (context + sampling["max_completion_tokens"]) * shape.kv_bytes_per_token(
        cost.DTYPE_BYTES[precision.rollout])
    if rl and train.get("rollout_backend") == "vllm":
        vllm = train.get("vllm") or {}
        need = shape.n_params * cost.DTYPE_BYTES[precision.rollout] + kv + cost.VLLM_RUNTIME_BYTES
        if vllm.get("gpu_memory_utilization") is not None:
            share = float(vllm["gpu_memory_utilization"]) * capacity
            lines.append(cost.MemoryLine("vLLM engine", share, f"gpu_memory_utilization "
                                         f"{vllm['gpu_memory_utilization']} (its need: {need / 1e9:.1f} GB)"))
        else:
            lines.append(cost.MemoryLine("vLLM engine", need, "weights + KV cache of the step's episodes + 1 GiB"))
            if on_gpu:
                notes.append(f"vLLM reserves gpu_memory_utilization x memory (0.9 by default) whatever it needs: set "
                             f"train.vllm.gpu_memory_utilization={math.ceil(100 * need / capacity) / 100:.2f} "
                             f"(its need, {need / 1e9:.1f} GB)")
    elif rl:
        # a copy when it is cast, and under ZeRO-3 / FSDP always (the weights are gathered into it)
        copied = precision.rollout != precision.weights or (plan.sharding in ("zero3", "fsdp") and plan.options.gpus > 1)
        rollout_copy = shape.n_params * cost.DTYPE_BYTES[precision.rollout] if copied else 0
        step_logits = cost.rollout_logits_bytes(chunk, shape, cost.DTYPE_BYTES[precision.rollout])
        rollout_phase = kv + rollout_copy + step_logits
        training_phase = sum(line.bytes for line in (worst or []))
        lines.append(cost.MemoryLine("rollout KV cache", kv, f"{chunk} episodes x {context + sampling['max_completion_tokens']:,.0f}"
                                     f" tokens, {precision.rollout}"))
        lines.append(cost.MemoryLine("rollout log-probs", step_logits, f"one decode step's {chunk} x {shape.vocab:,} "
                                     f"logits ({precision.rollout}, fp32 copy, probabilities, kept log-softmax)"))
        if rollout_copy:
            lines.append(cost.MemoryLine("rollout weights copy", rollout_copy, precision.rollout))
        # The KV cache and the training activations are not alive at once: count only the larger phase.
        if rollout_phase < training_phase:
            for line in lines[-(3 if rollout_copy else 2):]:
                line.note += " (freed before training: not added)"
                line.counted = False
        else:
            for line in worst or []:
                line.note += " (the rollouts peak higher: not added)"
                line.counted = False
    if on_gpu:
        lines.append(cost.MemoryLine("runtime overhead", cost.RUNTIME_OVERHEAD_BYTES, "CUDA context, allocator (assumed)"))
    return cost.MemoryPlan(lines, capacity, notes), worst_tokens, n_parts
