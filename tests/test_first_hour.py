"""A new user's first hour (issue 15): each ordinary mistake is one line and a non-zero exit, the
benchmark data ships with the package, and long jobs report progress with an ETA."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from pact_cotrain.cli import main
from pact_cotrain.errors import UserError
from pact_cotrain.progress import Progress, format_duration, plain_training_callback, progress_line
from pact_cotrain.config import builtin_configs, load_config
from pact_cotrain.testing import tiny_llama, tiny_tokenizer


def fails_with_one_line(capsys, argv: list[str], *fragments: str) -> str:
    capsys.readouterr()  # drop what fixtures printed (e.g. save_pretrained's shard bar)
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, (rc, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.fixture
def tiny_model_dir(tmp_path):
    tokenizer = tiny_tokenizer()
    path = tmp_path / "tiny"
    tiny_llama(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# ------------------------------------------------------------------------------ mistakes


def test_unknown_model(capsys, tmp_path):
    fails_with_one_line(capsys, ["eval", "--model", "smollm2-135m-instruc", "--out", str(tmp_path / "e")],
                        "unknown model", "did you mean `smollm2-135m-instruct`?")
    fails_with_one_line(capsys, ["models", "prepare", "qwen9"], "unknown model 'qwen9'")


def test_missing_model_directory(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fails_with_one_line(capsys, ["eval", "--model", "runs/demo/final", "--out", "e"],
                        "model directory runs/demo/final does not exist", "pact demo")
    (tmp_path / "empty").mkdir()
    fails_with_one_line(capsys, ["eval", "--model", "empty", "--out", "e"], "holds no model")


def test_unknown_benchmark(capsys, tmp_path):
    fails_with_one_line(capsys, ["eval", "--benchmarks", "toolwrld", "--out", str(tmp_path)],
                        "unknown benchmark toolwrld", "toolworld")


def test_unknown_config(capsys):
    fails_with_one_line(capsys, ["train", "--config", "pcat"], "unknown config 'pcat'", "did you mean `pact`?")


def test_unknown_config_key_suggests_the_known_one(capsys):
    fails_with_one_line(capsys, ["train", "--config", "pact", "max_steps=20"],
                        "unknown config key `max_steps`", "did you mean `train.max_steps`?")
    with pytest.raises(UserError, match="did you mean `method.anchor_q`"):
        load_config("pact", ["method.anchorq=0.5"])
    with pytest.raises(UserError, match="did you mean `train.max_steps`"):
        load_config("pact", ["trian.max_steps=3"])


def test_unknown_key_in_a_config_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("method:\n  name: pact\ntrain:\n  max_setps: 4\n")
    with pytest.raises(UserError, match=r"mine.yaml: unknown config key `train.max_setps`; did you mean `train.max_steps`"):
        load_config(str(path))


def test_known_keys_are_accepted():
    # every built-in config, MethodConfig / SamplingConfig fields, and free-form sections
    for name in builtin_configs():
        load_config(name)
    cfg = load_config("pact", ["train.max_steps=3", "method.sft_coef=0.5", "sampling.top_p=0.9",
                               "train.lora.r=8", "train.vllm.max_model_len=1024", "method.extra.note=x"])
    assert cfg["train"]["max_steps"] == 3 and cfg["train"]["lora"] == {"r": 8}
    assert cfg["sampling"]["top_p"] == 0.9 and cfg["method"]["extra"] == {"note": "x"}


def test_train_help_lists_configs_and_correct_examples(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "built-in configs: " + ", ".join(builtin_configs()) in out
    examples = [line.split() for line in out.splitlines() if line.strip().startswith("pact train")]
    assert examples
    for words in examples:  # every override shown is one load_config accepts
        load_config(words[words.index("--config") + 1], [w for w in words if "=" in w and not w.startswith("-")])


def test_inspect_missing_file(capsys, tmp_path):
    fails_with_one_line(capsys, ["inspect", str(tmp_path / "episodes_toolworld.jsonl")], "does not exist", "pact eval")


def test_compare_missing_directory(capsys, tmp_path):
    fails_with_one_line(capsys, ["eval", "--compare", str(tmp_path / "nope")], "--compare", "results.json")


def test_missing_benchmark_data(capsys, tmp_path, monkeypatch, tiny_model_dir):
    fails_with_one_line(capsys, ["eval", "--model", str(tiny_model_dir), "--benchmarks", "ftrl",
                                 "--data", f"ftrl={tmp_path / 'missing.jsonl'}", "--out", str(tmp_path / "e")],
                        "missing.jsonl: no such file")
    monkeypatch.setenv("PACT_SHARED_DATA", str(tmp_path / "nowhere"))  # a default that is not there
    fails_with_one_line(capsys, ["eval", "--model", str(tiny_model_dir), "--benchmarks", "ftrl", "--backend", "hf",
                                 "--out", str(tmp_path / "e")], "ftrl: data file", "--data ftrl=PATH")


def test_tools_list_unknown_row(capsys):
    fails_with_one_line(capsys, ["tools", "list", "--bench", "ftrl", "--id", "ftrl_test_7"], "no row 'ftrl_test_7'")


def test_bugs_keep_their_traceback(monkeypatch):
    import pact_cotrain.cli as cli

    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "_models_path", broken)
    with pytest.raises(KeyError):
        main(["models", "path"])


# ------------------------------------------------------------------------------ self-contained


def test_benchmark_data_ships_with_the_package(monkeypatch):
    from pact_cotrain.data.readers import read_ftrl, read_toolhop
    from pact_cotrain.envs.ftrl import default_ftrl_path
    from pact_cotrain.envs.toolhop import default_toolhop_path

    monkeypatch.delenv("PACT_SHARED_DATA", raising=False)
    bundled = Path(__import__("pact_cotrain").__file__).parent / "data" / "bundled"
    packed = sum(f.stat().st_size for f in bundled.glob("*.xz"))
    assert 0 < packed < 20 * 2**20
    assert "CC-BY-4.0" in (bundled / "NOTICE.md").read_text() and "Apache-2.0" in (bundled / "NOTICE.md").read_text()
    for path in (default_ftrl_path(), default_toolhop_path()):
        assert "shared" not in path.parts  # not the sibling folder a clone does not have
    assert len(read_ftrl(default_ftrl_path())) == 152
    assert len(read_toolhop(default_toolhop_path())) == 70


def test_tools_list_prints_parameters(capsys):
    assert main(["tools", "list", "--bench", "toolhop", "--id", "toolhop-015"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("toolhop toolhop-015: 3 tools")
    assert "extract_last_name(" in out and "- full_name (string, required)" in out


# ------------------------------------------------------------------------------ progress


def test_progress_line_has_rate_and_eta():
    assert progress_line("train", "step", 3, 16, 3 * 126) == "train: step 3/16, 2.1 min/step, ETA 27 min"
    assert progress_line("train", "step", 0, 16, 40) == "train: step 0/16, 40 s elapsed"
    assert progress_line("eval ftrl", "episode", 6, 6, 600).endswith("done in 10 min")
    assert format_duration(5400) == "1.5 h"


def test_a_step_still_running_does_not_inflate_the_rate():
    # 1 step done in 60 s, the second running for 31 s: 60 s/step, and 7 steps left less the 31 s spent
    # (the demo once printed "1.5 min/step, ETA 11 min" here, then "60 s/step, ETA 6.0 min" a step later).
    line = progress_line("train", "step", 1, 8, 91, running_for=31)
    assert line == "train: step 1/8, 60 s/step, ETA 6.5 min, this step running for 31 s"
    # a unit running longer than the rate counts for one unit at most, never a negative ETA
    assert progress_line("train", "step", 7, 8, 200, running_for=140) == (
        "train: step 7/8, 8.6 s/step, ETA 0.0 s, this step running for 2.3 min")


def test_plain_progress_writes_while_a_unit_runs():
    stream = io.StringIO()
    bar = Progress("eval toolworld", total=2, unit="episode", stream=stream, mode="plain", every_s=0.05)
    bar.advance()
    time.sleep(0.3)  # nothing finishes for a while: lines keep coming
    bar.advance()
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "eval toolworld: episode 0/2, 0.0 s elapsed"
    assert sum("episode 1/2" in line and "ETA" in line for line in lines) >= 2
    assert lines[-1].startswith("eval toolworld: episode 2/2") and "done in" in lines[-1]


def test_plain_training_callback_counts_steps():
    stream = io.StringIO()
    callback = plain_training_callback(stream=stream, every_s=0.0)
    state = SimpleNamespace(is_world_process_zero=True, max_steps=4, global_step=0)
    callback.on_train_begin(None, state, None)
    for step in (1, 2):
        state.global_step = step
        callback.on_step_end(None, state, None)
    callback.on_train_end(None, state, None)
    text = stream.getvalue()
    assert "train: step 1/4" in text and "train: step 2/4" in text and "ETA" in text


def test_eval_counts_episodes_and_names_its_backend(capsys, tmp_path, monkeypatch, tiny_model_dir):
    import importlib.util

    from pact_cotrain.eval.runner import run_eval

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    monkeypatch.setenv("PACT_PROGRESS", "plain")
    results = run_eval(str(tiny_model_dir), ["toolworld"], limit=3, out_dir=str(tmp_path / "e"), batch_size=2,
                       max_turns=1, max_new_tokens_per_turn=4, max_completion_tokens=64, backend="auto")
    captured = capsys.readouterr()
    assert "pact eval: backend hf (vLLM is not installed" in captured.out
    assert "eval toolworld: episode 0/3" in captured.err
    assert "eval toolworld: episode 3/3" in captured.err  # counted per episode, over two batches
    assert results["backend"] == "HFBackend"
    assert json.loads((tmp_path / "e" / "results.json").read_text())["benchmarks"]["toolworld"]["n_episodes"] == 3


def test_output_piped_into_a_closed_reader_ends_quietly(monkeypatch):
    """`pact tools list ... | head -1`: when the reader has closed the pipe, no BrokenPipeError traceback."""
    import os
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (head) is gone: every write now raises BrokenPipeError
    stdout = os.fdopen(write_end, "w", buffering=1)
    monkeypatch.setattr(sys, "stdout", stdout)
    try:
        assert main(["tools", "list", "--bench", "ftrl", "--id", "ftrl_test_007"]) == 0
    finally:
        monkeypatch.undo()
        try:
            stdout.close()
        except OSError:
            pass
