"""Training-curve plots and the demo report (markdown), from a trainer's log history."""

from __future__ import annotations

import json

CURVES = [
    ("loss", "total loss"),
    ("loss/sft", "SFT loss"),
    ("loss/rl", "RL loss"),
    ("reward", "rollout reward (mean)"),
    ("rollout/solve_r", "rollout Solve-R"),
    ("rollout/n_calls", "calls per rollout"),
    ("over_reliance_gap", "over-reliance gap (nats/token)"),
    ("entropy", "entropy"),
    ("sft/toolcall_weight", "tool-call SFT weight"),
]


def plot_training_curves(history: list[dict], path: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 3, figsize=(13, 9))
    for ax, (key, label) in zip(axes.flat, CURVES):
        points = [(h["step"], h[key]) for h in history if key in h and h[key] is not None]
        if points:
            ax.plot(*zip(*points), marker=".")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


_ROWS = [("solve_r", "Solve-R"), ("solve_p", "Solve-P"), ("solve_f1", "Solve-F1"),
         ("answer_correct", "answer accuracy"), ("valid_call_episodes", "episodes with a valid tool call"),
         ("valid_call_blocks", "valid share of call blocks"), ("n_calls", "calls per episode")]


def write_demo_report(path, cfg, before, after, history, steps_done, train_seconds, total_seconds, stopped_early,
                      n_eval) -> None:
    lines = [
        "# PACT demo: SmolLM2-135M-Instruct on toolworld (CPU)",
        "",
        f"Held-out toolworld test tasks: {n_eval} (entities disjoint from training), greedy decoding, "
        f"prompt-only, at most {after.get('max_turns', '?')} assistant turns. Training: method `{cfg['method']['name']}`, "
        f"{steps_done} optimiser steps of {cfg['train']['prompts_per_step']} prompts x {cfg['train']['k']} rollouts"
        f"{' (stopped early by the time budget)' if stopped_early else ''}.",
        "",
        "| metric | before | after | change |",
        "|---|---|---|---|",
    ]
    for key, label in _ROWS:
        b, a = before.get(key, 0.0), after.get(key, 0.0)
        lines.append(f"| {label} | {b:.3f} | {a:.3f} | {a - b:+.3f} |")
    train_logs = [h for h in history if "loss" in h]
    first, last = (train_logs[0], train_logs[-1]) if train_logs else ({}, {})
    lines += [
        "",
        "Solve-P is 1 for an episode that makes no call (FTRL's definition), so it starts high for a model "
        "that never calls a tool.",
        "",
        "## Training",
        "",
        f"- wall time: training {train_seconds / 60:.1f} min, whole demo {total_seconds / 60:.1f} min "
        f"(evaluation before {before.get('seconds', 0):.0f} s, after {after.get('seconds', 0):.0f} s)",
        f"- SFT loss: first step {first.get('loss/sft', float('nan')):.3f}, last step {last.get('loss/sft', float('nan')):.3f}",
        f"- rollout reward: first step {first.get('reward', float('nan')):.3f}, last step {last.get('reward', float('nan')):.3f}",
        f"- over-reliance gap (log pi(tau|x,h) - log pi(tau|x), trace-conditioned prompts): "
        f"first {first.get('over_reliance_gap', float('nan')):.3f}, last {last.get('over_reliance_gap', float('nan')):.3f}",
        "",
        "![training curves](training_curves.png)",
        "",
        "## Config",
        "",
        "```json",
        json.dumps(cfg, indent=1),
        "```",
    ]
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
