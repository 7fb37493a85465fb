"""Training-curve plots and the demo report (markdown), from a trainer's log history."""

from __future__ import annotations

import json

# (log key, panel title, y-axis label, what it says in plain words)
CURVES = [
    ("loss", "total loss", "loss", "the objective the optimiser minimises: SFT term plus RL term"),
    ("loss/sft", "SFT loss", "nats/token", "how unlikely the expert traces are under the model; falls as it imitates them"),
    ("loss/rl", "RL loss", "loss", "the policy-gradient term; 0 when every group's rewards are equal"),
    ("reward", "rollout reward (mean)", "Solve-F1", "how well the model's own rollouts solve their tasks"),
    ("rollout/solve_r", "rollout Solve-R", "recall", "share of the needed tool calls the rollouts made"),
    ("rollout/n_calls", "calls per rollout", "calls", "how many tool calls a rollout makes"),
    ("diag/kl_prompt_vs_trace_context_per_token", "KL(pi(.|x) || pi(.|x,h)) per token", "nats/token",
     "how much the expert trace in the prompt changes the policy on its own prompt-only rollouts; 0 = no change"),
    ("entropy", "entropy", "nats/token", "how spread the model's next-token choices are; a collapse to 0 means no exploration"),
    ("rl/groups_all_equal", "groups with equal rewards", "share of groups",
     "share of prompts whose rollouts all got the same reward, so the RL term learns nothing from them"),
]


def plot_training_curves(history: list[dict], path: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(3, 3, figsize=(13, 9))
    for ax, (key, label, unit, _) in zip(axes.flat, CURVES):
        points = [(h["step"], h[key]) for h in history if key in h and h[key] is not None]
        if points:
            ax.plot(*zip(*points), marker=".")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("optimiser step", fontsize=8)
        ax.set_ylabel(unit, fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


_ROWS = [("solve_r", "Solve-R"), ("solve_p", "Solve-P"), ("solve_f1", "Solve-F1"),
         ("answer_correct", "answer accuracy"), ("valid_call_episodes", "episodes with a valid tool call"),
         ("valid_call_blocks", "valid share of call blocks"), ("n_calls", "calls per episode")]


def zero_rl_gradient_steps(history: list[dict]) -> list[int]:
    """Steps whose every group had all-equal rewards (all advantages 0: the RL term gave no gradient)."""
    return [h["step"] for h in history if h.get("rl/groups_all_equal") == 1.0]


def binomial_se(p: float, n: int) -> float:
    """Standard error of a share p measured on n independent episodes: sqrt(p(1-p)/n)."""
    return (p * (1 - p) / n) ** 0.5 if n else float("nan")


def paired_bootstrap_se(before: list[float], after: list[float], draws: int = 2000, seed: int = 0) -> float:
    """Standard error of mean(after) - mean(before) over the same tasks, by resampling tasks."""
    import random

    if len(before) != len(after) or len(before) < 2:
        return float("nan")
    rng, n = random.Random(seed), len(before)
    diffs = [a - b for a, b in zip(after, before)]
    means = []
    for _ in range(draws):
        means.append(sum(diffs[rng.randrange(n)] for _ in range(n)) / n)
    centre = sum(means) / draws
    return (sum((m - centre) ** 2 for m in means) / (draws - 1)) ** 0.5


def _noise_line(n_eval, after, per_task) -> str:
    """`per_task`: {"before"/"warmup"/"after": per-task Solve-F1 list, same task order}."""
    accuracy = after.get("answer_correct", 0.0)
    line = (f"With {n_eval} tasks a share has a binomial standard error sqrt(p(1-p)/n) of at most "
            f"{binomial_se(0.5, n_eval):.3f} (p = 0.5); for the final answer accuracy ({accuracy:.3f}) it is "
            f"{binomial_se(accuracy, n_eval):.3f}.")
    per_task = per_task or {}
    changes = [("warmup", "PACT's change (after PACT minus after warm-up)"), ("before", "the whole change")]
    parts = [f"{label} {paired_bootstrap_se(per_task[start], per_task['after']):.3f}"
             for start, label in changes if start in per_task and "after" in per_task]
    if parts:
        line += (" Paired bootstrap standard errors of the Solve-F1 changes (same tasks, resampled 2,000 times): "
                 + "; ".join(parts) + ". A change smaller than about twice its standard error is within noise.")
    return line


def write_demo_report(path, cfg, before, after, history, steps_planned, steps_done, train_seconds, total_seconds,
                      n_eval, warmup=None, model_dir="runs/demo/final", per_task_f1=None) -> None:
    """`per_task_f1`: {"before", "warmup", "after": per-task Solve-F1 list, same task order}, for the bootstrap;
    `warmup["eval"]`, when present, is the evaluation after the warm-up (a third column)."""
    train_logs = [h for h in history if "loss" in h]
    zero = zero_rl_gradient_steps(train_logs)
    positive = sum(1 for h in train_logs if h.get("reward", 0.0) > 0)
    lines = [
        "# PACT demo: SmolLM2-135M-Instruct on toolworld (CPU)",
        "",
        f"- model: `{model_dir}` (Hugging Face checkpoint with its tokenizer; load with `from_pretrained`)",
        f"- steps: {steps_done} of {steps_planned} planned PACT steps completed, each "
        f"{cfg['train']['prompts_per_step']} prompts x {cfg['train']['k']} rollouts"
        + (f", after a format warm-up of {warmup['steps']} of {warmup['planned']} SFT steps on toolworld's "
           f"warm-up split ({warmup['seconds'] / 60:.1f} min)" if warmup else ", no warm-up"),
        f"- RL term: reward above 0 in {positive} of {len(train_logs)} steps; zero gradient (all rewards equal "
        f"in every group) at steps {', '.join(map(str, zero)) if zero else 'none'}",
        f"- evaluation: {n_eval} held-out toolworld test tasks (entities disjoint from training), greedy, "
        f"prompt-only, at most {after.get('max_turns', '?')} assistant turns. " + _noise_line(n_eval, after, per_task_f1),
        "",
    ]
    warmed = (warmup or {}).get("eval")
    if warmed:  # three evaluations: what the warm-up taught, then what PACT added to it
        lines += ["| metric | base model | after warm-up | after PACT | PACT's change | whole change |",
                  "|---|---|---|---|---|---|"]
        for key, label in _ROWS:
            b, w, a = before.get(key, 0.0), warmed.get(key, 0.0), after.get(key, 0.0)
            lines.append(f"| {label} | {b:.3f} | {w:.3f} | {a:.3f} | {a - w:+.3f} | {a - b:+.3f} |")
    else:
        lines += ["| metric | before | after | change |", "|---|---|---|---|"]
        for key, label in _ROWS:
            b, a = before.get(key, 0.0), after.get(key, 0.0)
            lines.append(f"| {label} | {b:.3f} | {a:.3f} | {a - b:+.3f} |")
    first, last = (train_logs[0], train_logs[-1]) if train_logs else ({}, {})
    lines += [
        "",
        "Solve-P is 1 for an episode that makes no call (FTRL's definition), so it starts high for a model "
        "that never calls a tool.",
        "",
        "## Training",
        "",
        f"- wall time: PACT training {train_seconds / 60:.1f} min, whole demo {total_seconds / 60:.1f} min "
        f"(evaluations: base model {before.get('seconds', 0):.0f} s"
        + (f", after warm-up {warmup['eval'].get('seconds', 0):.0f} s" if (warmup or {}).get("eval") else "")
        + f", after PACT {after.get('seconds', 0):.0f} s)",
        f"- SFT loss: first step {first.get('loss/sft', float('nan')):.3f}, last step {last.get('loss/sft', float('nan')):.3f}",
        f"- rollout reward: first step {first.get('reward', float('nan')):.3f}, last step {last.get('reward', float('nan')):.3f}",
        "",
        "![training curves](training_curves.png)",
        "",
        "What each panel shows:",
        "",
    ]
    lines += [f"- **{label}** ({unit}): {words}." for _, label, unit, words in CURVES]
    lines += [
        "",
        "## Config",
        "",
        "```json",
        json.dumps(cfg, indent=1),
        "```",
    ]
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
