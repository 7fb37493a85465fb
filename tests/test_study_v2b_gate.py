"""results/study-v2b/gate.py: study v2b's gate (PLAN.md section 6) against v2's committed files."""

import gzip
import importlib.util
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
V2 = ROOT / "results" / "study-v2"
spec = importlib.util.spec_from_file_location("gate", ROOT / "results" / "study-v2b" / "gate.py")
gate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gate)
RUN = Path("runs") / "vanilla" / "seed10" / "per_task.jsonl.gz"


def _study_dir(tmp_path: Path, rows: list[dict], ids: list[str]) -> Path:
    (tmp_path / RUN).parent.mkdir(parents=True)
    with gzip.open(tmp_path / RUN, "wt") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "screened.jsonl").write_text("".join(json.dumps({"id": i}) + "\n" for i in ids))
    return tmp_path


def _kept() -> list[str]:
    return [r["task_id"] for r in gate.read_jsonl(V2 / "data" / "screened.jsonl.rates.jsonl") if r["kept"]]


def test_the_gate_passes_on_v2s_own_rows_and_pool(tmp_path, monkeypatch, capsys):
    out = tmp_path / "v2b"
    out.mkdir()
    (out / RUN).parent.mkdir(parents=True)
    shutil.copy(V2 / RUN, out / RUN)
    _study_dir(tmp_path / "pool", [], _kept())
    shutil.copytree(tmp_path / "pool" / "data", out / "data")
    monkeypatch.setattr("sys.argv", ["gate.py", "--out", str(out), "--v2", str(V2)])
    assert gate.main() == 0
    printed = capsys.readouterr().out
    assert "(a) pass: screened.jsonl holds v2's 51 kept tasks, in order" in printed
    assert "(b) pass: 512 of v2's 512 per-task rows equal here (512 rows here)" in printed


def test_the_gate_fails_on_one_changed_field_a_missing_row_or_another_order(tmp_path, monkeypatch, capsys):
    rows = gate.read_jsonl(V2 / RUN)
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
