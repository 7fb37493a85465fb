"""Study v2b's gate (PLAN.md section 6), checked the same way by whichever session first has a native-bf16 host.

(a) runs/study-v2b/data/screened.jsonl holds exactly the tasks v2's screening record marks `kept`, in its order.
(b) The 512 per-task rows of runs/study-v2b/runs/vanilla/seed10 equal v2's: for each (eval_set, task_id), every
    field of v2's row, scores and `n_generated` included.
Prints one line per check and, for (b), the first differing rows with their differing fields. Exit status 0 when
both pass, 1 otherwise: then PLAN.md section 6 says what follows (retrain the warm-up at d26e267, then re-plan).

    python results/study-v2b/gate.py [--out runs/study-v2b] [--v2 results/study-v2]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pact_cotrain.study.evaluate import read_per_task


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def screened_ids_check(out: Path, v2: Path) -> tuple[bool, str]:
    kept = [r["task_id"] for r in read_jsonl(v2 / "data" / "screened.jsonl.rates.jsonl") if r["kept"]]
    ours = [r["id"] for r in read_jsonl(out / "data" / "screened.jsonl")]
    if ours == kept:
        return True, f"(a) pass: screened.jsonl holds v2's {len(kept)} kept tasks, in order"
    how = "the same tasks in another order" if sorted(ours) == sorted(kept) else \
        f"{len(set(ours) ^ set(kept))} ids in one and not the other"
    return False, f"(a) FAIL: screened.jsonl holds {len(ours)} tasks, v2 kept {len(kept)}: {how}"


def row_differences(ours: list[dict], theirs: list[dict]) -> list[str]:
    """One line per (eval_set, task_id) of v2's rows that is missing or has a field of another value here."""
    by_key = {(r["eval_set"], r["task_id"]): r for r in ours}
    lines = []
    for row in theirs:
        key = (row["eval_set"], row["task_id"])
        mine = by_key.get(key)
        if mine is None:
            lines.append(f"{key[0]} {key[1]}: missing")
            continue
        fields = sorted(f for f, value in row.items() if mine.get(f, object()) != value)
        if fields:
            lines.append(f"{key[0]} {key[1]}: " + ", ".join(f"{f} {mine.get(f)!r} (v2 {row[f]!r})" for f in fields))
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/study-v2b")
    ap.add_argument("--v2", default="results/study-v2")
    args = ap.parse_args()
    out, v2 = Path(args.out), Path(args.v2)
    passed_a, line = screened_ids_check(out, v2)
    print(line)
    run = Path("runs") / "vanilla" / "seed10" / "per_task.jsonl.gz"
    theirs, ours = read_per_task(v2 / run), read_per_task(out / run)
    differences = row_differences(ours, theirs)
    passed_b = not differences and len(ours) == len(theirs)
    print(f"(b) {'pass' if passed_b else 'FAIL'}: {len(theirs) - len(differences)} of v2's {len(theirs)} per-task rows "
          f"equal here ({len(ours)} rows here)")
    for difference in differences[:10]:
        print(f"    {difference}")
    return 0 if passed_a and passed_b else 1


if __name__ == "__main__":
    sys.exit(main())
