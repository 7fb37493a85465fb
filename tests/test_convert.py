"""`pact data convert`: OpenAI, Hermes and ShareGPT tool-use data -> task/trace JSONL that
`pact data validate` accepts; bad rows stop it with path:line: field: reason."""

import json

import pytest

from pact_cotrain.cli import main
from pact_cotrain.data.convert import ConvertError, convert_file
from pact_cotrain.data.trace_format import load_tasks

FN = {"name": "get_weather", "description": "weather of a city",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
TOOL = {"type": "function", "function": FN}
EXPECTED_TRACE = [
    {"role": "assistant", "content": "", "reasoning": "Look it up.",
     "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]},
    {"role": "tool", "name": "get_weather", "content": "4 C"},
    {"role": "assistant", "content": "It is 4 C."},
]


def openai_row(i=0, **extra):
    return {"id": f"o{i}", "tools": [TOOL], "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]},
        {"role": "assistant", "content": None, "reasoning_content": "Look it up.",
         "tool_calls": [{"id": "c1", "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "4 C"},
        {"role": "assistant", "content": "It is 4 C."}], **extra}


def hermes_row(i=0):
    system = ("You are a function calling AI model. <tools> [{'type': 'function', 'function': "
              + repr(FN) + "}] </tools> Use <tool_call> tags.")
    return {"id": f"h{i}", "category": "weather", "conversations": [
        {"from": "system", "value": system},
        {"from": "human", "value": "Weather in Oslo?"},
        {"from": "gpt", "value": "<think>Look it up.</think>\n<tool_call>\n{'arguments': {'city': 'Oslo'}, "
                                 "'name': 'get_weather'}\n</tool_call>"},
        {"from": "tool", "value": '<tool_response>\n{"name": "get_weather", "content": "4 C"}\n</tool_response>'},
        {"from": "gpt", "value": "It is 4 C."}]}


def sharegpt_row(i=0):
    return {"uuid": f"s{i}", "functions": json.dumps([FN]), "system": "Be brief.", "conversations": [
        {"from": "human", "value": "Weather in Oslo?"},
        {"from": "gpt", "value": "<think>Look it up.</think>"},
        {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"city": "Oslo"}}'},
        {"from": "observation", "value": "4 C"},
        {"from": "gpt", "value": "It is 4 C."}]}


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def converts_and_validates(tmp_path, capsys, argv):
    out = tmp_path / "out.jsonl"
    assert main(["data", "convert", *map(str, argv), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["data", "validate", str(out)]) == 0
    capsys.readouterr()
    return load_tasks(out)


def test_openai(tmp_path, capsys):
    untraced = {"id": "o9", "messages": [{"role": "user", "content": "hi"}]}
    src = write_jsonl(tmp_path / "in.jsonl", [openai_row(0), untraced])
    task, plain = converts_and_validates(tmp_path, capsys, [src, "--format", "openai"])
    assert task.id == "o0" and task.tools == [TOOL]
    assert task.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Oslo?"}]
    expected = json.loads(json.dumps(EXPECTED_TRACE))
    expected[0]["tool_calls"][0]["id"] = "c1"
    expected[1] = {"role": "tool", "content": "4 C", "tool_call_id": "c1"}
    assert task.trace == expected
    assert plain.trace is None and plain.tools == [] and plain.messages == untraced["messages"]


def test_hermes_tools_from_the_system_prompt(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [hermes_row(0)])
    (task,) = converts_and_validates(tmp_path, capsys, [src, "--format", "hermes"])
    assert task.tools == [TOOL] and task.metadata == {"category": "weather"}
    assert [m["role"] for m in task.messages] == ["system", "user"]
    assert task.trace == EXPECTED_TRACE


def test_sharegpt_with_map_and_system_column(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [sharegpt_row(0)])
    argv = [src, "--format", "sharegpt", "--map", "tools=functions", "--map", "id=uuid"]
    (task,) = converts_and_validates(tmp_path, capsys, argv)
    assert task.id == "s0" and task.tools == [TOOL]
    assert task.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Oslo?"}]
    assert task.trace == EXPECTED_TRACE


def test_sharegpt_tool_call_blocks_in_gpt_text(tmp_path, capsys):
    row = {"id": "s1", "tools": json.dumps([FN]), "conversations": [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": '<think>Look it up.</think><tool_call>{"name": "get_weather", '
                                         '"arguments": "{\\"city\\": \\"Oslo\\"}"}</tool_call>'},
        {"role": "tool", "content": "4 C"},
        {"role": "assistant", "content": "It is 4 C."}]}
    (task,) = converts_and_validates(tmp_path, capsys, [write_jsonl(tmp_path / "in.jsonl", [row]), "--format", "sharegpt"])
    assert task.trace == EXPECTED_TRACE


def test_bad_rows_stop_the_command_and_nothing_is_written(tmp_path, capsys):
    unknown = hermes_row(2)
    unknown["conversations"][2]["value"] = '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
    broken = hermes_row(3)
    broken["conversations"][2]["value"] = "<tool_call>{'name': 'get_weather', 'arguments'</tool_call>"
    followup = hermes_row(4)
    followup["conversations"].append({"from": "human", "value": "And Bergen?"})
    src = write_jsonl(tmp_path / "in.jsonl", [hermes_row(0), hermes_row(1), unknown, broken, followup])
    out = tmp_path / "out.jsonl"
    assert main(["data", "convert", str(src), "--format", "hermes", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"{src}:3: trace[0].tool_calls[0].name: calls 'get_time', which is not in `tools`")
    assert err[1].startswith(f"{src}:4: conversations[2].<tool_call>: not valid JSON")
    assert err[2].startswith(f"{src}:5: conversations: a user turn after the first assistant turn")
    assert err[3] == f"{src}: 3 of 5 rows cannot be converted; nothing was written"
    assert not out.exists()


def test_bad_map_and_missing_column(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [sharegpt_row(0)])
    out = tmp_path / "out.jsonl"
    assert main(["data", "convert", str(src), "--format", "sharegpt", "--out", str(out), "--map", "tool=functions"]) == 1
    assert "unknown field 'tool'" in capsys.readouterr().err
    assert main(["data", "convert", str(src), "--format", "openai", "--out", str(out)]) == 1
    assert f"{src}:1: messages: missing; the row has uuid, functions, system, conversations" in capsys.readouterr().err


def test_parquet_and_a_saved_datasets_folder(tmp_path, capsys):
    datasets = pytest.importorskip("datasets")
    # `tools` as a JSON string, as tool-use datasets store it (an Arrow struct would pad its keys);
    # the messages are Arrow structs, so absent keys come back as None.
    rows = []
    for i in range(3):
        row = openai_row(i, tools=json.dumps([TOOL]))
        row["messages"][1]["content"] = "Weather in Oslo?"
        row["messages"][2]["content"] = ""
        rows.append(row)
    data = datasets.Dataset.from_list(rows)
    data.to_parquet(str(tmp_path / "in.parquet"))
    tasks = converts_and_validates(tmp_path, capsys, [tmp_path / "in.parquet", "--format", "openai"])
    assert [t.id for t in tasks] == ["o0", "o1", "o2"] and all(t.tools == [TOOL] for t in tasks)
    assert tasks[0].trace[0]["tool_calls"] == [{"name": "get_weather", "arguments": {"city": "Oslo"}, "id": "c1"}]
    datasets.DatasetDict({"train": data}).save_to_disk(str(tmp_path / "saved"))
    again = converts_and_validates(tmp_path, capsys, [tmp_path / "saved", "--format", "openai"])
    assert [t.to_record() for t in again] == [t.to_record() for t in tasks]


def test_json_array_input_and_row_numbers(tmp_path):
    bad = openai_row(1)
    bad["messages"][2]["tool_calls"][0]["function"]["arguments"] = '{"city": '
    src = tmp_path / "in.json"
    src.write_text(json.dumps([openai_row(0), bad]))
    with pytest.raises(ConvertError, match=r"in\.json:2: messages\[2\]\.tool_calls\[0\]\.function\.arguments: "
                                           r"not valid JSON"):
        convert_file(src, tmp_path / "out.jsonl", "openai")
    src.write_text(json.dumps([openai_row(0)]))
    assert convert_file(src, tmp_path / "out.jsonl", "openai").rows == 1


def test_empty_input_and_duplicate_ids_are_refused(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("\n")
    with pytest.raises(ConvertError, match="no rows to convert"):
        convert_file(src, tmp_path / "out.jsonl", "openai")
    write_jsonl(src, [openai_row(0), openai_row(0)])
    with pytest.raises(ConvertError, match=r"in\.jsonl:2: id: duplicate id 'o0' \(first at in\.jsonl:1\)"):
        convert_file(src, tmp_path / "out.jsonl", "openai")
    assert not (tmp_path / "out.jsonl").exists()
