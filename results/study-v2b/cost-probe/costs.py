"""The cost probe's table (PLAN.md amendment 0d): seconds per training step of each arm, fp32 on an AVX2 host,
beside study v2's runs (bf16 host), and evaluation throughput. Reads log_history.json, done.json and the
evaluation's results.json for times and token counts only: no score.

    python results/study-v2b/cost-probe/costs.py PROBE_DIR > results/study-v2b/cost-probe/costs.md
PROBE_DIR holds out/ (probe.yaml's runs) and eval_ood/, eval_test/ (the eval_*.yaml runs).
"""
import json
import sys
from pathlib import Path
from statistics import mean

probe, v2 = Path(sys.argv[1]), Path(__file__).resolve().parents[2] / "study-v2"


def step_times(run: Path) -> list[float]:
    return [float(e["step_time"]) for e in json.loads((run / "log_history.json").read_text()) if "step_time" in e]


# arm: (its v2 counterpart at the same seed where one exists, else the closest run v2 made)
counterparts = {"grpo": ("pilot/runs/grpo/seed0", "v2's pilot GRPO (seed 0, commit 4a55e1c)"),
                "sft_then_matchtir": ("runs/sft/seed10", "v2's SFT seed 10 (SFT phase only)"),
                "chord_phi": ("runs/pact_q1/seed10", "v2's PACT q = 1 seed 10 (the same passes)"),
                "opsd": (None, "none in v2"),
                "pact": ("runs/pact/seed10", "v2's PACT seed 10")}
print("| arm | probe s/step, steps 1-4 (mean) | v2 counterpart | its s/step, steps 1-4 (mean) | ratio |")
print("|---|---|---|---|---|")
for arm, (path, label) in counterparts.items():
    ours = step_times(probe / "out" / "runs" / arm / "seed10")
    extra = ""
    if arm == "sft_then_matchtir":  # 26 SFT steps, then 4 RL steps
        extra = f"; RL phase: {', '.join(f'{s:.0f}' for s in ours[26:])} ({mean(ours[26:]):.0f})"
        ours = ours[:26]
    shown = ours[:4] if arm != "sft_then_matchtir" else ours
    theirs = step_times(v2 / path)[:len(shown)] if path else []
    ratio = f"{mean(shown) / mean(theirs):.2f}" if theirs else "n/a"
    print(f"| {arm} | {', '.join(f'{s:.0f}' for s in shown[:4])}{' ...' if len(shown) > 4 else ''} ({mean(shown):.0f})"
          f"{extra} | {label} | {', '.join(f'{s:.0f}' for s in theirs[:4]) or 'n/a'}"
          f"{' ...' if len(theirs) > 4 else ''} ({mean(theirs):.0f}) | {ratio} |" if theirs else
          f"| {arm} | {', '.join(f'{s:.0f}' for s in shown)} ({mean(shown):.0f}) | {label} | n/a | n/a |")
print()
print("| evaluation of the warm-up, greedy fp32, 256 tasks | wall s | generated tokens | tokens/s | s/episode |")
print("|---|---|---|---|---|")
for name, run in [("toolworld_test", probe / "eval_test"), ("toolworld_ood_tools", probe / "eval_ood")]:
    for label, res in [("probe", run / "runs/vanilla/seed10/eval/results.json"),
                       ("v2", v2 / "runs/vanilla/seed10/eval/results.json")]:
        b = json.loads(res.read_text())["benchmarks"][name]
        print(f"| {label} {name} | {b['wall_seconds']:.0f} | {b['generated_tokens']} | "
              f"{b['generated_tokens'] / b['wall_seconds']:.1f} | {b['wall_seconds'] / 256:.2f} |")
