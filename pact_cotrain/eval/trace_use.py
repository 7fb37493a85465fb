"""Does a model use an expert trace in context? `pact diagnose trace-use --model M --data F`.

On the traced tasks of F, K episodes per task are sampled prompt-only (x) and K with the trace h in
context ([x; h], the hint baseline's rollout context), under the same caps and temperature. Reported:

(a) success with h against without, paired per task:
        d_i = s_i(x, h) - s_i(x),   s_i = share of task i's K episodes with `metric` >= `success_at`
    mean d with a 95 % paired bootstrap interval over tasks (study.stats.paired_bootstrap: the same tasks
    drawn for both contexts) and the paired t-test's p (t = mean d / (sd d / sqrt n), df n - 1:
    scipy.stats.ttest_rel). d > 0: the model can turn a trace in
    context into success.

(b) KL(pi(.|x) || pi(.|x,h)) per token on the prompt-only episodes:
        KL_hat = sum_{i,t} m_it [log pi(tau_it | x, tau_i<t) - log pi(tau_it | x, h, tau_i<t)] / sum m,
    tau_i ~ pi(.|x), m the generated tokens (tool responses excluded), both log-probs from one scoring
    forward of the same weights at the sampling temperature (losses.context_kl_per_token). A Monte-Carlo
    (k1) estimate of the mean per-token KL between the two contexts on the prompt-only policy's own paths:
    0 when h changes nothing. 95 % percentile bootstrap interval over tasks (numpy; the ratio of the
    resampled tasks' sums).

(c) the share of K-groups whose `metric` values are not all equal (any reward variance: group-relative
    RL has a signal there), for the prompt-only groups (what GRPO and PACT's advantages see) and with h.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from pact_cotrain.data.trace_format import Task
from pact_cotrain.errors import UserError
from pact_cotrain.progress import Progress


@dataclass
class TraceUseSettings:
    k: int = 4
    temperature: float = 1.0
    max_turns: int = 4
    max_new_tokens_per_turn: int = 224
    max_completion_tokens: int = 1024
    trace_view: str = "full"
    metric: str = "solve_f1"
    success_at: float = 1.0
    seed: int = 0
    n_resamples: int = 2000
    tasks_per_batch: int = 4  # tasks rolled out together (K episodes each, per context): bounds the padded batch


def success_comparison(with_trace: list[float], prompt_only: list[float], seed: int = 0,
                       n_resamples: int = 2000) -> dict:
    """(a) from per-task success rates, paired by task."""
    from scipy import stats as scipy_stats

    from pact_cotrain.study.stats import paired_bootstrap

    a, b = np.asarray(with_trace, float), np.asarray(prompt_only, float)
    diff = a - b
    out = {"n_tasks": len(a), "success_with_trace": float(a.mean()), "success_prompt_only": float(b.mean()),
           "mean_difference": float(diff.mean()), "difference_ci95": [float(diff.mean())] * 2, "paired_t_p": None}
    if len(a) > 1 and diff.std() > 0:
        boot = paired_bootstrap(a[None, :], b[None, :], n_boot=n_resamples, rng=seed)
        out["difference_ci95"] = [boot.low, boot.high]
        out["paired_t_p"] = float(scipy_stats.ttest_rel(a, b).pvalue)
    return out


def context_kl(per_task_sums: list[float], per_task_tokens: list[int], seed: int = 0, n_resamples: int = 2000) -> dict:
    """(b) pooled over tasks: sum of per-token log-ratios over the number of generated tokens."""
    sums, tokens = np.asarray(per_task_sums, float), np.asarray(per_task_tokens, float)
    if tokens.sum() == 0:
        return {"kl_per_token": None, "ci95": None, "tokens": 0}
    ci = None
    if len(sums) > 1:
        draws = np.random.default_rng(seed).integers(len(sums), size=(n_resamples, len(sums)))
        ratios = sums[draws].sum(1) / np.maximum(tokens[draws].sum(1), 1.0)
        ci = [float(np.quantile(ratios, 0.025)), float(np.quantile(ratios, 0.975))]
    return {"kl_per_token": float(sums.sum() / tokens.sum()), "tokens": int(tokens.sum()), "ci95": ci}


def share_with_variance(groups: list[list[float]]) -> float:
    """(c) share of groups whose values are not all equal."""
    return sum(max(g) != min(g) for g in groups) / len(groups) if groups else float("nan")


def _kl_sums(policy, tokenizer, episodes, by_id: dict, view: str, temperature: float) -> dict[str, list[float]]:
    """Per task: [sum over generated tokens of log pi(tau|x) - log pi(tau|x,h), number of those tokens]."""
    from pact_cotrain.losses import context_kl_per_token
    from pact_cotrain.render import prompt_ids
    from pact_cotrain.training.scoring import PackedGroup, packed_completion_logps

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: dict[str, list[float]] = {}
    for ep in episodes:
        if not ep.completion_ids:
            continue
        task = by_id[ep.task_id]
        with_h = prompt_ids(tokenizer, task, view, ep.env_messages, ep.env_tools)
        with torch.no_grad():  # one forward per context (no padding between them)
            scored = packed_completion_logps(policy, [PackedGroup(ep.prompt_ids, [ep.completion_ids], temperature),
                                                      PackedGroup(with_h, [ep.completion_ids], temperature)],
                                             pad, forward_per_group=True)
        lx, lh = scored[0][0][0], scored[1][0][0]
        mask = torch.tensor(ep.generated_mask, dtype=torch.float, device=lx.device).unsqueeze(0)
        n = int(mask.sum())
        mean = float(context_kl_per_token(lx.unsqueeze(0), lh.unsqueeze(0), mask))
        entry = out.setdefault(ep.task_id, [0.0, 0])
        entry[0] += mean * n
        entry[1] += n
    return out


def trace_use(policy, tokenizer, tasks: list[Task], settings: TraceUseSettings | None = None) -> dict:
    """The three measurements of the module docstring on the traced tasks of `tasks`."""
    from pact_cotrain.recipes.train import env_factory_for
    from pact_cotrain.rollout.engine import RolloutEngine, SamplingConfig

    s = settings or TraceUseSettings()
    traced = [t for t in tasks if t.trace]
    if not traced:
        raise UserError("trace-use: the data has no task with an expert trace (`trace`)")
    sampling = SamplingConfig(temperature=s.temperature, max_turns=s.max_turns,
                              max_new_tokens_per_turn=s.max_new_tokens_per_turn,
                              max_completion_tokens=s.max_completion_tokens)
    engine = RolloutEngine(policy, tokenizer, env_factory_for(traced, s.max_turns), sampling)
    by_id = {t.id: t for t in traced}
    prompt_eps, trace_eps, sums = [], [], {}
    # Tasks in batches, both contexts per batch: a progress line with an ETA comes after every batch, and
    # the padded batch stays small. Each batch's seeds follow from `seed` and its index (reproducible).
    with Progress("trace-use", total=len(traced), unit="task") as bar:
        for index, start in enumerate(range(0, len(traced), s.tasks_per_batch)):
            batch = traced[start:start + s.tasks_per_batch]
            prompt_only = engine.rollout(batch, k=s.k, seed=s.seed + 2 * index)
            prompt_eps += prompt_only
            trace_eps += engine.rollout(batch, k=s.k, seed=s.seed + 2 * index + 1, context_trace_view=s.trace_view)
            sums.update(_kl_sums(policy, tokenizer, prompt_only, by_id, s.trace_view, s.temperature))
            bar.advance(len(batch))

    def values(episodes) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for ep in episodes:
            out.setdefault(ep.task_id, []).append(float(ep.metrics.get(s.metric, 0.0)))
        return out

    vx, vh = values(prompt_eps), values(trace_eps)
    ids = [t.id for t in traced]
    rate = lambda v: sum(x >= s.success_at for x in v) / len(v)  # noqa: E731
    success = success_comparison([rate(vh[i]) for i in ids], [rate(vx[i]) for i in ids], s.seed, s.n_resamples)
    kl = context_kl([sums.get(i, [0.0, 0])[0] for i in ids], [sums.get(i, [0.0, 0])[1] for i in ids],
                    s.seed, s.n_resamples)
    return {
        "settings": asdict(s),
        "success": success,
        "kl_prompt_vs_trace_context": kl,
        "groups_with_reward_variance": {"prompt_only": share_with_variance([vx[i] for i in ids]),
                                        "with_trace": share_with_variance([vh[i] for i in ids])},
        "mean_metric": {"prompt_only": float(np.mean([x for i in ids for x in vx[i]])),
                        "with_trace": float(np.mean([x for i in ids for x in vh[i]]))},
    }


def format_report(result: dict, model: str, data: str) -> str:
    s, a, kl, var = (result["settings"], result["success"], result["kl_prompt_vs_trace_context"],
                     result["groups_with_reward_variance"])
    ci = lambda c: "n/a" if c is None else f"[{c[0]:+.3f}, {c[1]:+.3f}]"  # noqa: E731
    p = "n/a" if a["paired_t_p"] is None else f"{a['paired_t_p']:.3g}"
    kl_value = "n/a" if kl["kl_per_token"] is None else f"{kl['kl_per_token']:.4f}"
    return "\n".join([
        f"trace-use: {model} on {data}: {a['n_tasks']} traced tasks x K={s['k']}, T={s['temperature']}, "
        f"success = {s['metric']} >= {s['success_at']}",
        f"(a) success with h in context {a['success_with_trace']:.3f}, prompt-only {a['success_prompt_only']:.3f}; "
        f"paired difference {a['mean_difference']:+.3f}, 95% bootstrap CI {ci(a['difference_ci95'])}, paired t p = {p}",
        f"(b) KL(pi(.|x) || pi(.|x,h)) per generated token on prompt-only rollouts: {kl_value} nats "
        f"(95% CI {ci(kl['ci95'])}, {kl['tokens']} tokens)",
        f"(c) K-groups with any reward variance: prompt-only {var['prompt_only']:.3f}, with h {var['with_trace']:.3f}",
        f"    mean {s['metric']}: prompt-only {result['mean_metric']['prompt_only']:.3f}, "
        f"with h {result['mean_metric']['with_trace']:.3f}",
    ])


def run_trace_use(model: str, data: str, settings: TraceUseSettings, n_tasks: int | None = None,
                  out: str | None = None, dtype: str = "float32") -> dict:
    import json

    from pact_cotrain.data.trace_format import load_tasks
    from pact_cotrain.recipes.common import load_model_and_tokenizer

    tasks = load_tasks(data)  # a bad row is refused here, before the model loads
    if n_tasks is not None:
        tasks = [t for t in tasks if t.trace][:n_tasks]
    policy, tokenizer = load_model_and_tokenizer(model, dtype=dtype)
    result = trace_use(policy, tokenizer, tasks, settings)
    result.update({"model": model, "data": data})
    print(format_report(result, model, data), flush=True)
    if out:
        with open(out, "w") as handle:
            json.dump(result, handle, indent=1)
    return result
