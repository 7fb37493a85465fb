"""`pact data validate` and the loader's checks: every bad row reported, traces checked against
their own task's tools, encoding, JSON position, row size and an empty file."""

import json
import re

import pytest

from pact_cotrain.cli import main
from pact_cotrain.data.arg_schema import schema_problems
from pact_cotrain.data.trace_format import TraceFormatError, load_tasks
from pact_cotrain.data.validate import validate_file

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "weather of a city",
           "parameters": {"type": "object", "additionalProperties": False, "required": ["city"],
                          "properties": {"city": {"type": "string"},
                                         "unit": {"type": "string", "enum": ["C", "F"]},
                                         "days": {"type": "integer"}}}}}


def record(i=0, arguments=None, tool_turn=None, trace=True, **extra):
    rec = {"id": f"t{i}", "messages": [{"role": "user", "content": "Weather in Oslo?"}], "tools": [WEATHER], **extra}
    if trace:
        call = {"name": "get_weather", "arguments": {"city": "Oslo"} if arguments is None else arguments, "id": "c1"}
        rec["trace"] = [{"role": "assistant", "content": "", "tool_calls": [call]},
                        tool_turn or {"role": "tool", "tool_call_id": "c1", "content": "4 C"},
                        {"role": "assistant", "content": "4 C in Oslo."}]
    return rec


def answered_twice():
    """A trace whose call c1 gets two tool responses."""
    rec = record()
    rec["trace"].insert(2, {"role": "tool", "tool_call_id": "c1", "content": "5 C"})
    return rec


def write(path, rows):
    path.write_bytes(b"".join((r if isinstance(r, bytes) else
                               (r if isinstance(r, str) else json.dumps(r)).encode()) + b"\n" for r in rows))
    return path


def run_validate(capsys, *argv):
    code = main(["data", "validate", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_every_bad_row_is_reported_with_a_count(tmp_path, capsys):
    path = write(tmp_path / "t.jsonl", [record(0), {"id": "x"}, record(2), record(3, arguments={"town": "Oslo"}),
                                        "[1, 2]", record(5, trace=False)])
    code, out, err = run_validate(capsys, path)
    assert code == 1
    lines = err.strip().splitlines()
    assert lines[0] == f"{path}:2: messages: must be a non-empty list"
    assert lines[1].startswith(f"{path}:4: trace[0].tool_calls[0].arguments: missing required key 'city'")
    assert lines[2] == f"{path}:5: <record>: must be a JSON object"
    assert lines[-1] == f"{path}: 3 bad rows of 6"
    assert "3 valid tasks, 2 with an expert trace, 1 without" in out


def test_max_errors_limits_the_listing_not_the_count(tmp_path, capsys):
    path = write(tmp_path / "t.jsonl", [{"id": f"x{i}"} for i in range(7)])
    code, _, err = run_validate(capsys, path, "--max-errors", "2")
    lines = err.strip().splitlines()
    assert code == 1 and len([l for l in lines if ": messages:" in l]) == 2
    assert "and 5 more bad rows" in err and lines[-1].endswith("7 bad rows of 7")


@pytest.mark.parametrize("rec,field,reason", [
    (record(arguments={"city": "Oslo"}) | {"tools": []}, "trace[0].tool_calls[0].name",
     "calls 'get_weather', which is not in `tools`"),
    (record(arguments={"city": 7}), "trace[0].tool_calls[0].arguments.city", "must be of type string, got integer"),
    (record(arguments={"city": "Oslo", "unit": "K"}), "trace[0].tool_calls[0].arguments.unit", "'K' is not one of"),
    (record(arguments={"city": "Oslo", "when": "now"}), "trace[0].tool_calls[0].arguments",
     "unexpected key 'when'"),
    (record(tool_turn={"role": "tool", "tool_call_id": "c9", "content": "?"}), "trace[1].tool_call_id",
     "'c9' answers no earlier tool call"),
    (record(tool_turn={"role": "tool", "name": "get_time", "content": "?"}), "trace[1].name",
     "'get_time' answers no earlier call"),
    (answered_twice(), "trace[2].tool_call_id", "'c1' was already answered by trace[1]"),  # issue 31, case 9
])
def test_trace_is_checked_against_its_own_tools(tmp_path, capsys, rec, field, reason):
    path = write(tmp_path / "t.jsonl", [record(0) | {"id": "ok"}, rec])
    code, _, err = run_validate(capsys, path)
    assert code == 1 and err.startswith(f"{path}:2: {field}: {reason}"), err
    # Training refuses the same row, at the same place.
    with pytest.raises(TraceFormatError, match="^" + re.escape(f"{path}:2: {field}: {reason}")):
        load_tasks(path)


def test_schema_checker_subset():
    schema = {"type": "object", "properties": {
        "n": {"type": "integer"}, "x": {"type": ["number", "null"]},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
        "opt": {"type": "object", "required": ["k"], "properties": {"k": {"type": "boolean"}}},
        "either": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}}
    assert schema_problems({"n": 2, "x": None, "tags": ["a"], "opt": {"k": True}, "either": 3}, schema) == []
    assert schema_problems({"n": 2.0}, schema) == []  # JSON schema: an integer-valued number is an integer
    assert schema_problems({"n": True}, schema) == ["arguments.n: must be of type integer, got boolean"]
    assert schema_problems({"x": "1"}, schema) == ["arguments.x: must be of type number or null, got string"]
    assert schema_problems({"tags": ["a", "c"]}, schema) == ["arguments.tags[1]: 'c' is not one of ['a', 'b']"]
    assert schema_problems({"opt": {"k": 1}}, schema) == ["arguments.opt.k: must be of type boolean, got integer"]
    assert schema_problems({"opt": {}}, schema) == ["arguments.opt: missing required key 'k'"]
    assert schema_problems({"either": 1.5}, schema) == ["arguments.either: fits none of the anyOf schemas"]
    assert schema_problems({"e": 1}, {"properties": {"e": {"enum": [True]}}}) == ["arguments.e: 1 is not one of [True]"]


def test_a_tool_offered_twice_accepts_a_call_fitting_either_schema(tmp_path):
    other = json.loads(json.dumps(WEATHER))
    other["function"]["parameters"] = {"type": "object", "properties": {"zip": {"type": "integer"}}, "required": ["zip"]}
    rec = record(arguments={"zip": 1234}) | {"tools": [WEATHER, other]}
    assert load_tasks(write(tmp_path / "t.jsonl", [rec]))[0].trace is not None


def test_empty_file_is_refused(tmp_path, capsys):
    for content in (b"", b"\n  \n"):
        path = tmp_path / "empty.jsonl"
        path.write_bytes(content)
        code, _, err = run_validate(capsys, path)
        assert code == 1 and f"{path}: <file>: no task rows (the file is empty)" in err
        with pytest.raises(TraceFormatError, match="no task rows"):
            load_tasks(path)


def test_json_error_names_its_real_line_and_column(tmp_path, capsys):
    bad = '{"id": "t1", "messages": [}'
    path = write(tmp_path / "t.jsonl", [record(0), "", bad])
    code, _, err = run_validate(capsys, path)
    assert code == 1 and f"{path}:3: <json>: not valid JSON (Expecting value at column {bad.index('}') + 1})" in err


def test_non_utf8_byte_is_reported_at_its_line(tmp_path, capsys):
    good = json.dumps(record(1)).encode()
    path = write(tmp_path / "t.jsonl", [record(0), good.replace(b"Oslo?", b"Oslo\xff?")])
    code, _, err = run_validate(capsys, path)
    assert code == 1 and f"{path}:2: <encoding>: not valid UTF-8 (byte 0xff at byte column" in err
    with pytest.raises(TraceFormatError, match=r":2: <encoding>"):
        load_tasks(path)


def test_oversized_row_is_reported_and_the_rest_still_read(tmp_path, capsys):
    big = record(1, note="x" * 5000)
    path = write(tmp_path / "t.jsonl", [record(0), big, record(2)])
    code, out, err = run_validate(capsys, path, "--max-row-bytes", "4000")
    size = len(json.dumps(big).encode())
    assert code == 1 and err.startswith(f"{path}:2: <row>: {size:,} bytes, above the limit of 4,000 bytes")
    assert "2 valid tasks" in out
    assert run_validate(capsys, path)[0] == 0  # the default limit (1 MiB) takes it
    with pytest.raises(TraceFormatError, match=r":2: <row>:"):
        load_tasks(path, max_row_bytes=4000)


def test_trace_count_is_reported(tmp_path, capsys):
    path = write(tmp_path / "t.jsonl", [record(0), record(1, trace=False), record(2, trace=False)])
    code, out, err = run_validate(capsys, path)
    assert code == 0 and err == ""
    assert out.strip() == f"{path}: 3 valid tasks, 1 with an expert trace, 2 without"
    report = validate_file(path)
    assert (report.rows, report.valid, report.traced, report.bad_rows) == (3, 3, 1, 0)


def test_missing_file_is_one_line(tmp_path, capsys):
    code, _, err = run_validate(capsys, tmp_path / "nope.jsonl")
    assert code == 1 and err.strip() == f"error: {tmp_path / 'nope.jsonl'}: No such file or directory"
