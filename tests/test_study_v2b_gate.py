"""results/study-v2b/gate.py: study v2b's gate (PLAN.md section 6) against v2's committed files."""

import importlib.util
import json
from pathlib import Path

from pact_cotrain.study.evaluate import read_per_task, write_per_task

ROOT = Path(__file__).resolve().parents[1]
V2 = ROOT / "results" / "study-v2"
spec = importlib.util.spec_from_file_location("gate", ROOT / "results" / "study-v2b" / "gate.py")
gate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gate)
RUN = Path("runs") / "vanilla" / "seed10" / "per_task.jsonl.gz"


def _study_dir(out: Path, rows: list[dict], ids: list[str]) -> Path:
    """A v2b folder with these vanilla rows and this screened pool (task ids, in order)."""
    (out / RUN).parent.mkdir(parents=True)
    write_per_task(out / RUN, rows)
    (out / "data").mkdir()
    (out / "data" / "screened.jsonl").write_text("".join(json.dumps({"id": i}) + "\n" for i in ids))
    return out


def _kept() -> list[str]:
    return [r["task_id"] for r in gate.read_jsonl(V2 / "data" / "screened.jsonl.rates.jsonl") if r["kept"]]


def test_the_gate_passes_on_v2s_own_rows_and_pool(tmp_path, monkeypatch, capsys):
    out = _study_dir(tmp_path, read_per_task(V2 / RUN), _kept())
    monkeypatch.setattr("sys.argv", ["gate.py", "--out", str(out), "--v2", str(V2)])
    assert gate.main() == 0
    printed = capsys.readouterr().out
    assert "(a) pass: screened.jsonl holds v2's 51 kept tasks, in order" in printed
    assert "(b) pass: 512 of v2's 512 per-task rows equal here (512 rows here)" in printed


def test_the_gate_fails_on_one_changed_field_a_missing_row_or_another_order(tmp_path, monkeypatch, capsys):
    rows = read_per_task(V2 / RUN)
    changed = [dict(r) for r in rows[1:]]  # the first row is missing
    changed[0]["n_generated"] += 1  # one token more in one episode
    kept = _kept()
    out = _study_dir(tmp_path, changed, kept[1:] + kept[:1])
    monkeypatch.setattr("sys.argv", ["gate.py", "--out", str(out), "--v2", str(V2)])
    assert gate.main() == 1
    printed = capsys.readouterr().out
    assert "(a) FAIL: screened.jsonl holds 51 tasks, v2 kept 51: the same tasks in another order" in printed
    assert "(b) FAIL: 510 of v2's 512 per-task rows equal here (511 rows here)" in printed
    first, second = rows[0], rows[1]
    assert f"{first['eval_set']} {first['task_id']}: missing" in printed
    assert (f"{second['eval_set']} {second['task_id']}: n_generated {second['n_generated'] + 1} "
            f"(v2 {second['n_generated']})") in printed
