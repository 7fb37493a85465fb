"""Readers of the shared FTRL and ToolHop files into the Task format."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pact_cotrain.data.readers import FTRL_INSTRUCTION, read_ftrl, read_toolhop, task_codes, tool_source
from pact_cotrain.data.trace_format import TraceFormatError, load_tasks, task_from_record, write_tasks
from pact_cotrain.envs.ftrl import default_ftrl_path
from pact_cotrain.envs.toolhop import default_toolhop_path

# The copies shipped in the package (pact_cotrain/data/bundled), or $PACT_SHARED_DATA's when set.
FTRL = default_ftrl_path()
TOOLHOP = default_toolhop_path()

needs_ftrl = pytest.mark.skipif(not FTRL.exists(), reason=f"shared FTRL data not found at {FTRL}")
needs_toolhop = pytest.mark.skipif(not TOOLHOP.exists(), reason=f"shared ToolHop data not found at {TOOLHOP}")


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_rows(path: Path, data: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data), encoding="utf-8")
    return path


def expect_error(reader, path: Path, line: int, field: str, reason_fragment: str) -> TraceFormatError:
    with pytest.raises(TraceFormatError) as info:
        reader(path)
    err = info.value
    assert re.match(rf"^{re.escape(str(path))}:{line}: {re.escape(field)}: ", str(err)), str(err)
    assert (err.path, err.line, err.field_name) == (str(path), line, field)
    assert reason_fragment in err.reason, err.reason
    return err


# ---------------------------------------------------------------------------------------------
# FTRL


@needs_ftrl
def test_read_ftrl_loads_the_whole_shared_file():
    tasks = read_ftrl(FTRL)
    assert len(tasks) == 152
    assert len({t.id for t in tasks}) == 152
    raw = {r["id"]: r for r in rows(FTRL)}
    sources = set()
    for task in tasks:
        md = task.metadata
        assert md["benchmark"] == "ftrl"
        assert task.messages == raw[task.id]["messages"]
        assert task.tools == json.loads(raw[task.id]["tools"])
        assert isinstance(md["codes"], dict) and set(task.tool_names) <= set(md["codes"])
        assert all(isinstance(v, list) for v in md["unsolved_set"].values())
        assert md["answer"] == raw[task.id]["answer"] and md["split"] == "test"
        assert isinstance(md["solve_rate"], float)
        assert task.messages[0]["content"].startswith(FTRL_INSTRUCTION)
        assert task_codes(task) is md["codes"]
        assert task_from_record(task.to_record()).id == task.id
        sources.add(md["data_source"])
    assert sources <= {"self/single_hop", "self/parallel_single_hop", "self/multi_hop", "self/parallel_multi_hop"}


@needs_ftrl
def test_ftrl_tasks_round_trip_through_the_task_file(tmp_path):
    tasks = read_ftrl(FTRL)[:10]
    out = tmp_path / "ftrl_tasks.jsonl"
    write_tasks(out, tasks)
    again = load_tasks(out)
    assert [t.to_record() for t in again] == [t.to_record() for t in tasks]


@needs_ftrl
@pytest.mark.parametrize("line, corrupt, field, reason", [
    (3, lambda r: r.update(codes=r["codes"][:-5]), "codes", "not a valid JSON string"),
    (5, lambda r: r.pop("answer"), "answer", "missing"),
    (7, lambda r: r.update(tools=json.dumps([{"type": "function", "function": {"name": "ghost"}}])),
     "tools[0].function.name", "no source in `codes`"),
    (2, lambda r: r.update(unsolved_set=json.dumps({"t": "not a list"})), "unsolved_set.t", "list of strings"),
    (4, lambda r: r["messages"][0].update(role="narrator"), "messages[0].role", "must be one of"),
    (6, lambda r: r.update(solve_rate="high"), "solve_rate", "finite number"),
    (9, lambda r: r.update(tools=json.dumps({"not": "a list"})), "tools", "JSON list"),
])
def test_corrupted_ftrl_copy_reports_path_line_field(tmp_path, line, corrupt, field, reason):
    data = rows(FTRL)
    corrupt(data[line - 1])
    path = write_rows(tmp_path / "ftrl_corrupt.jsonl", data)
    err = expect_error(read_ftrl, path, line, field, reason)
    assert err.bad_rows == 1


@needs_ftrl
def test_ftrl_first_error_wins_and_all_bad_rows_are_counted(tmp_path):
    lines = FTRL.read_text(encoding="utf-8").splitlines()
    lines[10] = lines[10][:-20]  # truncated JSON on line 11
    lines[20] = lines[21]        # duplicate id on line 22
    path = tmp_path / "ftrl_two_errors.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    err = expect_error(read_ftrl, path, 11, "<json>", "not valid JSON")
    assert err.bad_rows == 2
    assert str(err).endswith("(2 bad rows in the file)")


# ---------------------------------------------------------------------------------------------
# ToolHop


@needs_toolhop
def test_read_toolhop_loads_the_whole_shared_file():
    tasks = read_toolhop(TOOLHOP)
    assert len(tasks) == 70
    raw = {r["id"]: r for r in rows(TOOLHOP)}
    with_gold = 0
    for task in tasks:
        md, row = task.metadata, raw[task.id]
        assert md["benchmark"] == "toolhop"
        assert task.messages == [{"role": "user", "content": FTRL_INSTRUCTION + "Question: " + row["question"]}]
        assert len(task.tools) == len(row["tools"])
        for schema, original in zip(task.tools, row["tools"].values()):
            assert schema == {"type": "function", "function": {
                "name": original["name"], "description": original["description"],
                "parameters": original["parameters"]}}
        assert list(md["subtask_tools"]) == list(row["tools"])
        assert md["functions"] == row["functions"]
        assert md["sub_task"] == row["sub_task"] and md["hop_count"] == row["hop_count"] == len(md["sub_task"])
        assert md["answer"] == row["answer"] and md["answer_type"] == row["answer_type"]
        assert md["category"] == row["category"] and md["source_id"] == row["source_id"]
        assert md["gold_calls"] == row["gold_calls"]
        assert len(md["gold_tool_calls"]) == len(md["gold_calls"])
        for call in md["gold_tool_calls"]:
            assert call["name"] in task.tool_names and isinstance(call["arguments"], dict)
        for name in task.tool_names:
            assert tool_source(task, name) is not None
            assert name in task_codes(task)
        with_gold += bool(md["gold_calls"])
        assert task_from_record(task.to_record()).id == task.id
    assert with_gold == 16
    duplicated = {t.id: t.metadata["duplicate_tool_names"] for t in tasks if t.metadata["duplicate_tool_names"]}
    assert duplicated == {"toolhop-013": ["extract_first_name"], "toolhop-028": ["extract_first_name"],
                          "toolhop-035": ["genealogy_query"], "toolhop-096": ["extract_last_name"],
                          "toolhop-097": ["extract_first_name"]}


@needs_toolhop
def test_toolhop_gold_calls_name_positional_arguments():
    task = next(t for t in read_toolhop(TOOLHOP) if t.id == "toolhop-015")
    assert task.metadata["gold_tool_calls"][2] == {"name": "extract_last_name",
                                                   "arguments": {"full_name": "Oliver Russell"}}


@needs_toolhop
def test_toolhop_same_named_tools_are_told_apart_by_their_arguments():
    task = next(t for t in read_toolhop(TOOLHOP) if t.id == "toolhop-035")
    first = tool_source(task, "genealogy_query", {"figure_name": "X", "relationship_type": "father"})
    second = tool_source(task, "genealogy_query", {"name": "X"})
    assert first != second
    assert "figure_name" in first.split(")")[0] and "def genealogy_query(name" in second


@needs_toolhop
def test_toolhop_python_literal_strings_are_parsed_without_eval(tmp_path):
    data = rows(TOOLHOP)[:3]
    data[0]["tools"] = repr(data[0]["tools"])  # a Python-literal dict string, as in the original release
    data[1]["tools"] = {k: repr(v) for k, v in data[1]["tools"].items()}
    data[2]["sub_task"] = repr(data[2]["sub_task"])
    data[2]["gold_calls"] = json.dumps(data[2]["gold_calls"])
    path = write_rows(tmp_path / "toolhop_literals.jsonl", data)
    parsed = read_toolhop(path)
    reference = read_toolhop(write_rows(tmp_path / "toolhop_plain.jsonl", rows(TOOLHOP)[:3]))
    assert [t.to_record() for t in parsed] == [t.to_record() for t in reference]

    proof = tmp_path / "executed"
    data = rows(TOOLHOP)[:1]
    data[0]["tools"] = f"__import__('pathlib').Path({str(proof)!r}).touch()"
    path = write_rows(tmp_path / "toolhop_hostile.jsonl", data)
    expect_error(read_toolhop, path, 1, "tools", "not a JSON or Python literal")
    assert not proof.exists()


@needs_toolhop
@pytest.mark.parametrize("line, corrupt, field, reason", [
    (2, lambda r: r.pop("question"), "question", "missing"),
    (3, lambda r: r.update(hop_count=True), "hop_count", "positive integer"),
    (4, lambda r: r["functions"].__setitem__(0, "def broken(:\n    pass"), "functions[0]", "does not parse"),
    (5, lambda r: r.update(functions=r["functions"][1:]), None, "no source in `functions`"),
    (6, lambda r: r.update(sub_task=["not", "a", "dict"]), "sub_task", "must be a dict"),
    (8, lambda r: r.update(answer=86), "answer", "must be a string"),
])
def test_corrupted_toolhop_copy_reports_path_line_field(tmp_path, line, corrupt, field, reason):
    data = rows(TOOLHOP)
    corrupt(data[line - 1])
    path = write_rows(tmp_path / "toolhop_corrupt.jsonl", data)
    with pytest.raises(TraceFormatError) as info:
        read_toolhop(path)
    err = info.value
    assert str(err).startswith(f"{path}:{line}: ")
    if field is not None:
        assert err.field_name == field
    else:
        assert err.field_name.startswith("tools[") and err.field_name.endswith("].name")
    assert reason in err.reason, err.reason


@needs_toolhop
def test_corrupted_toolhop_gold_call(tmp_path):
    data = rows(TOOLHOP)
    line = next(i for i, r in enumerate(data, start=1) if r["gold_calls"])
    data[line - 1]["gold_calls"][1] = "unknown_tool('x')"
    path = write_rows(tmp_path / "toolhop_gold.jsonl", data)
    expect_error(read_toolhop, path, line, "gold_calls[1]", "no function in `functions` defines")
    data[line - 1]["gold_calls"][1] = "__import__('os').system('true')"
    path = write_rows(tmp_path / "toolhop_gold2.jsonl", data)
    expect_error(read_toolhop, path, line, "gold_calls[1]", "call of a tool by name")


@needs_toolhop
def test_toolhop_gold_calls_run_in_the_sandbox():
    from pact_cotrain.sandbox import ToolSandbox

    task = next(t for t in read_toolhop(TOOLHOP) if t.id == "toolhop-015")
    with ToolSandbox(n_workers=1, timeout_s=5) as box:
        outputs = [box.call({c["name"]: tool_source(task, c["name"], c["arguments"])}, c["name"], c["arguments"])
                   for c in task.metadata["gold_tool_calls"]]
    assert all(r.ok for r in outputs), outputs
    assert outputs[-1].output == "Russell"
