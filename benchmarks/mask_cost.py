"""Time to build the packed-scoring masks of one 12k-token micro-batch (issue 30 item 7).

Times exactly what the scorer does before its forward: `scoring.pack_groups` (the layout) and the mask
step of `scoring._layout_logits`, with a stand-in model that returns at once (so no forward is timed),
for two micro-batches of 12,000 tokens:

  lone_trace     one SFT trace (a 4,000-token context and an 8,000-token target): plainly causal;
  rollout_group  one prompt of 4,000 tokens and 8 rollouts of 1,000 tokens (one packed row whose
                 completions share the prompt but not each other): needs its [L, L] block mask.

    PYTHONPATH=$PWD python benchmarks/mask_cost.py [--device cpu|cuda] [--repeats 3]

Prints, per case, `mask_build_seconds_<case>: S` (the median over repeats) and whether a mask was passed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import torch

from pact_cotrain.training import scoring


class StandInModel:
    """What `_layout_logits` reads of a model (its attention implementation and embedding dtype); calling it
    records the mask it was given and returns no logits."""

    def __init__(self):
        self.config = SimpleNamespace(_attn_implementation="sdpa")
        self.mask = None

    def get_input_embeddings(self):
        return SimpleNamespace(weight=torch.zeros((), dtype=torch.bfloat16))

    def __call__(self, input_ids, attention_mask, position_ids, logits_to_keep):
        self.mask = attention_mask
        return SimpleNamespace(logits=None)


def cases() -> dict[str, list]:
    g = torch.Generator().manual_seed(0)

    def tokens(n):
        return torch.randint(10, 1000, (n,), generator=g).tolist()

    return {"lone_trace": [scoring.PackedGroup(tokens(4000), [tokens(8000)])],
            "rollout_group": [scoring.PackedGroup(tokens(4000), [tokens(1000) for _ in range(8)])]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    device = torch.device(args.device)
    print(f"device: {device}  torch threads: {torch.get_num_threads()}")
    for name, groups in cases().items():
        times, model = [], StandInModel()
        for _ in range(args.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            layout = scoring.pack_groups(groups, pad_id=0)
            scoring._layout_logits(model, layout, device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
            mask = model.mask
            model.mask = None
        tokens = sum(len(gr.context) + sum(map(len, gr.completions)) for gr in groups)
        shape = None if mask is None else tuple(mask.shape)
        print(f"{name}: {tokens} tokens, mask passed: {shape}")
        print(f"mask_build_seconds_{name}: {statistics.median(times):.4f}")


if __name__ == "__main__":
    main()
