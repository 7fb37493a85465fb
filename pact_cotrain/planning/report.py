"""`pact plan`'s printout: a `run.Plan` as plain text."""

from __future__ import annotations

from pact_cotrain.planning.run import PhasePlan, Plan
from pact_cotrain.training import step_prompts

KIND = {"prefill": "fwd", "decode": "fwd", "train": "fwd+bwd", "forward": "fwd"}


def _n(x: float) -> str:
    """A count in engineering units: 1.23 M, 45.6 G."""
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g}"


def _gb(x: float) -> str:
    return f"{x / 1e9:.2f} GB"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def format_plan(plan: Plan) -> str:
    s, opts = plan.shape, plan.options
    gpus = opts.gpus
    lines = [f"pact plan: config {plan.config}, model {plan.model}",
             f"  model: {s.n_params / 1e9:.3f} B parameters ({s.n_layers} layers, d {s.hidden}, d_ff {s.intermediate}, "
             f"{s.n_heads} heads / {s.n_kv_heads} KV heads x {s.head_dim}, vocabulary {s.vocab:,}, "
             f"{'tied' if s.tied_embeddings else 'untied'} embeddings); shape from {plan.shape_source}",
             f"  devices: {gpus} x {plan.device.name}, {plan.phases[0].memory.capacity / 1e9:.0f} GB each; sharding "
             f"{plan.sharding}; precision: weights {plan.precision.weights}, compute {plan.precision.compute}, "
             f"rollouts {plan.precision.rollout} ({plan.precision.why})"]
    if plan.precision.compute == "float32" and opts.device != "cpu":
        lines.append("  note: fp32 matmuls run at a fraction of bf16 speed on this GPU; dtype=bfloat16 or "
                     "train.mixed_precision=bf16 trains in bf16")
    lines += [f"  note: {note}" for note in plan.notes]
    for i, phase in enumerate(plan.phases):
        lines += [""] + _phase(plan, phase, i)
    if len(plan.phases) > 1:
        lines += ["", f"Whole run, all {len(plan.phases)} phases: {_duration(plan.total_seconds)} on {gpus} "
                      f"x {plan.device.name}"]
    lines += ["", "Formulas and assumptions: pact_cotrain/planning/tokens.py (tokens per pass) and cost.py "
                  "(FLOPs = 2 N_mm per token forward, x3 forward+backward, +1 forward when checkpointed, plus "
                  "attention 4 L d_attn per computed query-key pair, n^2 for a masked packed group of n tokens; memory; time)."]
    return "\n".join(lines)


def _phase(plan: Plan, phase: PhasePlan, index: int) -> list[str]:
    gpus = plan.options.gpus
    cfg, st = phase.cfg, phase.stats
    train, sampling = cfg["train"], cfg["sampling"]
    title = f"Phase {index + 1}: {phase.name} (config {phase.config}), " if len(plan.phases) > 1 else ""
    batch = step_prompts.describe(gpus, train["prompts_per_step"], train["k"] if phase.rollout_steps else None)
    lines = [f"{title}method {phase.method}, {phase.steps} steps ({phase.rollout_steps} with rollouts); "
             f"step: {batch}"]
    lines += [f"Data: {st.source}: {st.n_tasks} tasks ({100 * st.traced_share:.0f} % with a trace, "
              f"{len(st.tasks)} measured); tokens counted with {st.counted_with}",
              f"  mean tokens: prompt x {st.prompt:.0f} | [x; h] {st.trace_context:.0f} | trace target t "
              f"{st.trace_target:.0f} | tool response per turn r {st.tool_response:.0f}"]
    r = phase.rollout
    lines += [] if not phase.rollout_steps else [f"Rollouts: {r.source}",
              f"  per episode: {r.turns:.2f} turns, {r.generated:.0f} generated + {r.inserted:.0f} inserted = "
              f"{r.completion:.0f} completion tokens (caps: {sampling['max_turns']} turns, "
              f"{sampling['max_new_tokens_per_turn']} per turn, {sampling['max_completion_tokens']} per episode)"]
    where = f"all {gpus} GPUs" if gpus > 1 else "one device"
    lines += ["", f"Tokens and FLOPs ({where}; per step = mean over the run's steps)",
              f"  {'pass':<36}{'tokens/step':>14}{'tokens/run':>14}{'FLOPs/run':>14}"]
    steps = max(phase.steps, 1)
    tok = flo = 0.0
    for p in phase.passes.values():
        label = f"{p.name} ({KIND[p.kind]})"
        lines.append(f"  {label:<36}{_n(p.tokens / steps):>14}{_n(p.tokens):>14}{_n(p.flops):>14}")
        tok, flo = tok + p.tokens, flo + p.flops
    lines.append(f"  {'total':<36}{_n(tok / steps):>14}{_n(tok):>14}{_n(flo):>14}")
    mem = phase.memory
    lines += ["", f"Memory per GPU (the worst step: every traced prompt under [x; h], every rollout at "
                  f"max_completion_tokens; micro-batch budget {train.get('micro_batch_tokens') or 'none (whole step)'}"
                  f", {phase.micro_batches} micro-batch(es))"]
    for line in mem.lines:
        shown = _gb(line.bytes) if line.counted else f"({_gb(line.bytes)})"
        lines.append(f"  {line.name:<24}{shown:>12}   {line.note}")
    verdict = f"fits ({_gb(mem.capacity - mem.total)} free)" if mem.fits else \
        f"DOES NOT FIT (over by {_gb(mem.total - mem.capacity)})"
    lines.append(f"  {'total':<24}{_gb(mem.total):>12}   of {_gb(mem.capacity)}: {verdict}")
    lines += [f"  note: {n}" for n in mem.notes]
    if not mem.fits:
        lines.append("  to fit: train.micro_batch_tokens (smaller micro-batches), train.gradient_checkpointing=true, "
                     "more GPUs or --sharding zero3")
    secs = phase.seconds
    lines += ["", f"Time (throughput: {plan.throughput.description})",
              f"  per step: rollouts {_duration(secs['rollouts'] / steps)} + training {_duration(secs['training'] / steps)}"
              f" + optimiser {_duration(secs['optimiser'] / steps)} = {_duration(phase.total_seconds / steps)}",
              f"  whole run ({phase.steps} steps): {_duration(phase.total_seconds)}"]
    if plan.throughput.decode == "model" and phase.rollout_steps:
        lines.append("  rollouts: memory-bound decode (weights and KV cache read once per decode step); HF generate "
                     "adds launch overhead per step, vLLM comes closer: calibrate for a measured rate")
    return lines
