"""Write the example's tasks: 48 training requests and 16 held-out ones, each with an expert trace.

    python examples/room_booking/make_tasks.py     # -> examples/room_booking/data/{train,test}.jsonl
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agent import make_tasks  # noqa: E402

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
os.makedirs(here, exist_ok=True)
for split, n, seed in (("train", 48, 0), ("test", 16, 1)):
    with open(os.path.join(here, f"{split}.jsonl"), "w") as handle:
        for row in make_tasks(n, seed, prefix=f"rooms_{split}"):
            handle.write(json.dumps(row) + "\n")
    print(f"wrote {n} {split} tasks to {here}/{split}.jsonl")
