"""`run_eval` writes episodes, results.json and the paper's table; `compare_runs`; the HTML inspector."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from pact_cotrain.eval.runner import compare_runs, paper_metrics, results_markdown, run_eval
from pact_cotrain.inspect_html import token_components, write_inspector
from pact_cotrain.testing import tiny_llama

EVAL_KW = dict(max_new_tokens_per_turn=24, max_completion_tokens=200, progress=False)


@pytest.fixture(scope="module")
def toolworld_run(tmp_path_factory, tokenizer):
    """One tiny-model toolworld run, shared by the tests (the loader is injected, no Hub access)."""
    out = tmp_path_factory.mktemp("eval") / "run_a"
    loaded = []

    def loader(name):
        loaded.append(name)
        return tiny_llama(tokenizer), tokenizer

    results = run_eval("tiny-test-model", ["toolworld"], {}, limit=3, out_dir=str(out), batch_size=2,
                       model_loader=loader, **EVAL_KW)
    assert loaded == ["tiny-test-model"]
    return out, results


def test_run_eval_writes_episodes_results_and_table(toolworld_run):
    out, results = toolworld_run
    assert {p.name for p in out.iterdir()} >= {"episodes_toolworld.jsonl", "results.json", "results.md"}

    episodes = [json.loads(line) for line in (out / "episodes_toolworld.jsonl").read_text().splitlines()]
    assert len(episodes) == 3
    for ep in episodes:
        for key in ("task_id", "messages", "metrics", "stop_reason", "prompt_ids", "completion_ids",
                    "generated_mask", "turn_spans", "completion_tokens"):
            assert key in ep
        assert len(ep["completion_ids"]) == len(ep["generated_mask"]) == len(ep["completion_tokens"])
        assert ep["stop_reason"]
        assert {"solve_r", "solve_p", "solve_f1"} <= set(ep["metrics"])

    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    bench = on_disk["benchmarks"]["toolworld"]
    assert on_disk["model"] == "tiny-test-model" and on_disk["limit"] == 3
    assert bench["n_episodes"] == 3 and bench["wall_seconds"] > 0
    assert bench["columns"] == ["solve_r", "solve_p", "solve_f1", "answer_correct"]
    assert set(bench["metrics"]) >= set(bench["columns"])
    assert sorted(on_disk["paper"]["missing"]) == sorted(["Solve-R", "Solve-P", "Solve-F1", "BFCL Avg", "ToolHop AC"])

    md = (out / "results.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Solve-R"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["Solve-R", "Solve-P", "Solve-F1", "BFCL Avg",
                                                                  "ToolHop AC", "Avg"]
    assert "Avg: n/a (missing Solve-R, Solve-P, Solve-F1, BFCL Avg, ToolHop AC" in md
    assert "## toolworld" in md and "| solve_r | solve_p | solve_f1 | answer_correct |" in md
    value = f"{100 * bench['metrics']['solve_p']:.2f}"
    assert value in md


def test_paper_table_with_all_five_parts():
    bench = {
        "ftrl": {"metrics": {"solve_r": 0.4241, "solve_p": 0.3469, "solve_f1": 0.366},
                 "columns": ["solve_r", "solve_p", "solve_f1"]},
        "bfcl": {"metrics": {"multi_turn_base": 0.3, "multi_turn_miss_func": 0.2, "avg": 0.2126},
                 "columns": ["multi_turn_base", "multi_turn_miss_func", "avg"]},
        "toolhop": {"metrics": {"answer_correct": 0.4955}, "columns": ["answer_correct"]},
    }
    values, missing = paper_metrics(bench)
    assert missing == []
    assert list(values) == ["Solve-R", "Solve-P", "Solve-F1", "BFCL MT base", "BFCL MT miss_func", "BFCL Avg",
                            "ToolHop AC", "Avg"]
    assert values["Avg"] == pytest.approx((0.4241 + 0.3469 + 0.366 + 0.2126 + 0.4955) / 5)
    # without an explicit average, BFCL Avg is the mean of the categories
    del bench["bfcl"]["metrics"]["avg"]
    bench["bfcl"]["columns"].remove("avg")
    assert paper_metrics(bench)[0]["BFCL Avg"] == pytest.approx(0.25)

    results = {"model": "m", "limit": None, "greedy": True, "sampling": {}, "benchmarks": {
        name: {**b, "n_episodes": 2, "wall_seconds": 1.0, "stop_reasons": {"done": 2}} for name, b in bench.items()}}
    md = results_markdown(results)
    assert "| 42.41 | 34.69 | 36.60 | 30.00 | 20.00 | 25.00 | 49.55 |" in md
    assert "Avg = mean of" in md


def test_compare_runs(toolworld_run, tmp_path):
    out, results = toolworld_run
    other = dict(results, model="other-model")
    other["benchmarks"] = {"toolworld": dict(results["benchmarks"]["toolworld"],
                                             metrics={"solve_r": 0.5, "solve_p": 0.25, "solve_f1": 0.125,
                                                      "answer_correct": 1.0}),
                           "toolhop": {"metrics": {"ac": 0.3}, "columns": ["ac"], "n_episodes": 1}}
    (tmp_path / "run_b").mkdir()
    (tmp_path / "run_b" / "results.json").write_text(json.dumps(other))
    table = compare_runs([str(out), str(tmp_path / "run_b")])
    lines = table.strip().splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == [
        "run", "model", "ToolHop AC", "Avg", "toolworld solve_r", "toolworld solve_p", "toolworld solve_f1",
        "toolworld answer_correct"]
    assert len(lines) == 4
    assert lines[2].startswith("| run_a | tiny-test-model | n/a | n/a |")
    assert lines[3] == "| run_b | other-model | 30.00 | n/a | 50.00 | 25.00 | 12.50 | 100.00 |"


class _Checker(HTMLParser):
    """Collects tags and fails on mismatched nesting of the non-void elements we emit."""

    VOID = {"meta", "br", "img", "input", "link", "hr"}

    def __init__(self):
        super().__init__()
        self.stack, self.tags, self.scripts, self.errors = [], [], 0, []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.scripts += tag == "script"
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> (open: {self.stack[-3:]})")
        else:
            self.stack.pop()


def _check_html(text: str) -> _Checker:
    checker = _Checker()
    checker.feed(text)
    checker.close()
    assert not checker.errors, checker.errors[:5]
    assert checker.stack == []
    assert checker.scripts == 1  # only our own script
    assert "http://" not in text and "https://" not in text  # no external assets
    return checker


def _with_hostile_message(src, dst, hostile_id=True):
    """Copy the episodes with a hostile message and token text in the first episode."""
    lines = src.read_text().splitlines()
    first = json.loads(lines[0])
    first["messages"][0]["content"] = "<script>alert('x')</script> & \"q\""
    if hostile_id:
        first["task_id"] = "<b>id</b>"
    if first["completion_tokens"]:
        first["completion_tokens"][0] = "</span><script>bad()</script>"
    dst.write_text("\n".join([json.dumps(first)] + lines[1:]) + "\n")
    return dst


def test_inspector_escapes_without_model(toolworld_run, tmp_path):
    out, _ = toolworld_run
    episodes = _with_hostile_message(out / "episodes_toolworld.jsonl", tmp_path / "episodes.jsonl")
    page = write_inspector(str(episodes), str(tmp_path / "inspect.html"))
    text = open(page).read()
    _check_html(text)
    assert "<script>alert" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;q&quot;" in text
    assert "&lt;/span&gt;&lt;script&gt;bad()&lt;/script&gt;" in text
    assert "&lt;b&gt;id&lt;/b&gt;" in text
    assert text.count('class="episode"') == 3
    assert '<button data-mode="delta"' not in text and "no model given" in text


def test_inspector_with_model_scores_tokens(toolworld_run, tmp_path, tokenizer):
    from pact_cotrain.envs.toolworld import generate_tasks

    out, _ = toolworld_run
    episodes = _with_hostile_message(out / "episodes_toolworld.jsonl", tmp_path / "episodes.jsonl", hostile_id=False)
    tasks = generate_tasks(100, seed=1000, split="test")  # the toolworld benchmark's default tasks, with traces
    page = write_inspector(str(episodes), str(tmp_path / "inspect.html"), model=tiny_llama(tokenizer),
                           tokenizer=tokenizer, tasks=tasks, limit=2)
    text = open(page).read()
    _check_html(text)
    assert "<script>alert" not in text and "&lt;script&gt;alert" in text
    assert text.count('class="episode"') == 2
    assert "scored 2 of 2 episodes" in text and 'class="warn"' not in text
    assert "log p(tok | x, h) = " in text and "--db:rgba(" in text
    assert "expert trace (not in the rollout context)" in text


def test_token_components_labels_turns_and_inserted_tokens():
    pieces = ["<think>", "hm", "</think>", "<tool_call>", "{}", "</tool_call>", "<|im_end|>",
              "\n<|im_start|>user\n", "<tool_response>", "42", "</tool_response>",
              "<|im_end|>\n<|im_start|>assistant\n",
              "It", " is 42", "<|im_end|>"]
    record = {"completion_ids": list(range(6)) + [99] + [7, 8, 9, 10, 11, 12, 13, 99],
              "generated_mask": [1] * 7 + [0] * 5 + [1] * 3, "turn_spans": [[0, 7], [12, 15]], "eos_token_id": 99,
              "messages": [{"role": "tool", "content": "42"}]}
    assert token_components(record, pieces) == (
        ["reasoning"] * 3 + ["tool_call"] * 3 + ["eot"] + ["template"] + ["tool_response"] * 3 + ["template"]
        + ["answer"] * 2 + ["eot"])


def test_per_benchmark_limit_and_turn_cap(tmp_path, tokenizer):
    results = run_eval((tiny_llama(tokenizer), tokenizer), ["toolworld"], {}, limit={"toolworld": 2},
                       out_dir=str(tmp_path), batch_size=2, max_turns={"toolworld": 1}, **EVAL_KW)
    bench = results["benchmarks"]["toolworld"]
    assert bench["n_episodes"] == 2 and bench["max_turns"] == 1
    assert results["sampling"]["max_turns_cap"] == {"toolworld": 1}
    for line in (tmp_path / "episodes_toolworld.jsonl").read_text().splitlines():
        assert len(json.loads(line)["turn_spans"]) <= 1


def test_an_interrupted_evaluation_resumes_after_its_finished_batches(tmp_path, tokenizer, monkeypatch):
    """Batches of 2 over 5 tasks; stopped after its first two batches (and a line cut by the kill), the
    evaluation runs only the last batch and ends with the uninterrupted evaluation's episodes and results."""
    from pact_cotrain.rollout.engine import RolloutEngine

    model = tiny_llama(tokenizer)
    whole = run_eval((model, tokenizer), ["toolworld"], {}, limit=5, out_dir=str(tmp_path / "a"), batch_size=2,
                     **EVAL_KW)
    lines = (tmp_path / "a" / "episodes_toolworld.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "episodes_toolworld.jsonl").write_text("".join(lines[:4]) + lines[4][:30])
    rolled = []
    real = RolloutEngine.rollout
    monkeypatch.setattr(RolloutEngine, "rollout", lambda self, tasks, **kw: rolled.append(len(tasks)) or real(
        self, tasks, **kw))
    resumed = run_eval((model, tokenizer), ["toolworld"], {}, limit=5, out_dir=str(tmp_path / "b"),
                       batch_size=2, resume=True, **EVAL_KW)
    assert rolled == [1]  # only the last batch (one task) ran again
    assert (tmp_path / "b" / "episodes_toolworld.jsonl").read_text() == "".join(lines)
    for key in ("metrics", "n_episodes", "stop_reasons", "generated_tokens", "turns", "turns_cut"):
        assert resumed["benchmarks"]["toolworld"][key] == whole["benchmarks"]["toolworld"][key], key
    # without resume=True an evaluation starts over
    run_eval((model, tokenizer), ["toolworld"], {}, limit=5, out_dir=str(tmp_path / "b"), batch_size=2, **EVAL_KW)
    assert rolled == [1, 2, 2, 1]


def test_spread_subset_covers_cycling_and_grouped_files():
    from collections import Counter

    from pact_cotrain.eval.runner import spread_subset

    # toolworld cycles its 4 scenarios: evenly spaced picks (every 4th task) would all be one scenario
    cycling = [f"s{i % 4}-{i}" for i in range(256)]
    picked = spread_subset(cycling, 64)
    assert len(picked) == len(set(picked)) == 64 and picked == spread_subset(cycling, 64)  # deterministic
    counts = Counter(t.split("-")[0] for t in picked)
    assert set(counts) == {"s0", "s1", "s2", "s3"} and max(counts.values()) <= 26, counts
    # a file grouped by category: every category keeps its share (one pick per block of 4)
    grouped = [f"g{i // 64}-{i}" for i in range(256)]
    assert Counter(t.split("-")[0] for t in spread_subset(grouped, 64)) == {f"g{k}": 16 for k in range(4)}
    assert spread_subset(grouped, 300) == grouped
