"""Hand-checked component labels of expert-trace targets (issue 13, item 6).

Each test writes out the labels it expects as runs: consecutive target tokens with the same
(component, reasoning block, segment) joined into one run of decoded text. On the old labeller the
second of two assistant turns in a row had its `<|im_start|>assistant` header labelled reasoning,
and `</think>` went with the component after it (the tool call or the answer).
"""

import pytest

from pact_cotrain.data.trace_format import Task
from pact_cotrain.losses import reasoning_segments_supervised
from pact_cotrain.render import render_trace_target

TOOLS = [{"type": "function", "function": {"name": "f", "description": "f",
          "parameters": {"type": "object", "properties": {"x": {"type": "string"}}}}}]

# A note, then directly (no tool response between) a turn with two reasoning segments and a call.
TRACE = [
    {"role": "assistant", "reasoning": "Look it up.", "content": "Checking."},
    {"role": "assistant", "reasoning": "First part.\n\nSecond part.", "content": "",
     "tool_calls": [{"name": "f", "arguments": {"x": "1"}}]},
    {"role": "tool", "name": "f", "content": "R"},
    {"role": "assistant", "reasoning": "Done.", "content": "A."},
]

CALL = '<tool_call>\n{"name": "f", "arguments": {"x": "1"}}\n</tool_call><|im_end|>'
# Our ChatML tool template: `<think>\n...\n</think>\n` before the content.
CHATML_RUNS = [
    (("reasoning", 0, 0), "<think>\nLook it up.\n</think>"),
    (("answer", -1, -1), "\nChecking.<|im_end|>"),
    (("template", -1, -1), "\n<|im_start|>assistant\n"),  # the second turn's header: template
    (("reasoning", 1, 0), "<think>\nFirst part."),  # the opening tag: the block's first segment
    (("reasoning", 1, 1), "\n\nSecond part.\n</think>"),  # the closing tag: the block's last segment
    (("tool_call", -1, -1), "\n" + CALL),
    (("template", -1, -1), "\n<|im_start|>user\n"),
    (("tool_response", -1, -1), "<tool_response>\nR\n</tool_response>"),
    (("template", -1, -1), "<|im_end|>\n<|im_start|>assistant\n"),
    (("reasoning", 2, 0), "<think>\nDone.\n</think>"),
    (("answer", -1, -1), "\nA.<|im_end|>"),
    (("template", -1, -1), "\n"),
]
# Qwen3's template: the same, with `</think>\n\n` (the blank line goes with what follows it).
QWEN3_RUNS = [
    (("reasoning", 0, 0), "<think>\nLook it up.\n</think>"),
    (("answer", -1, -1), "\n\nChecking.<|im_end|>"),
    (("template", -1, -1), "\n<|im_start|>assistant\n"),
    (("reasoning", 1, 0), "<think>\nFirst part."),
    (("reasoning", 1, 1), "\n\nSecond part.\n</think>"),
    (("tool_call", -1, -1), "\n\n" + CALL),
    (("template", -1, -1), "\n<|im_start|>user\n"),
    (("tool_response", -1, -1), "<tool_response>\nR\n</tool_response>"),
    (("template", -1, -1), "<|im_end|>\n<|im_start|>assistant\n"),
    (("reasoning", 2, 0), "<think>\nDone.\n</think>"),
    (("answer", -1, -1), "\n\nA.<|im_end|>"),
    (("template", -1, -1), "\n"),
]


def task(trace=TRACE):
    return Task(id="t", messages=[{"role": "user", "content": "Q?"}], tools=TOOLS, trace=trace)


def label_runs(tok, r):
    runs = []
    for i in range(r.prompt_len, len(r.input_ids)):
        key = (r.components[i], r.reasoning_block[i], r.reasoning_segment[i])
        piece = tok.decode([r.input_ids[i]])
        if runs and runs[-1][0] == key:
            runs[-1] = (key, runs[-1][1] + piece)
        else:
            runs.append((key, piece))
    return runs


@pytest.fixture(params=["chatml", "qwen3"])
def tok_and_runs(request, tokenizer, qwen3_tokenizer):
    return (tokenizer, CHATML_RUNS) if request.param == "chatml" else (qwen3_tokenizer, QWEN3_RUNS)


def test_label_runs_by_hand(tok_and_runs):
    tok, expected = tok_and_runs
    assert label_runs(tok, render_trace_target(tok, task())) == expected


def test_no_role_header_is_a_target_when_assistant_turns_follow_each_other(tok_and_runs):
    tok, _ = tok_and_runs
    r = render_trace_target(tok, task())
    targets = tok.decode([t for t, c in zip(r.input_ids, r.components) if c in ("reasoning", "tool_call", "answer")])
    assert "<|im_start|>" not in targets and "assistant" not in targets


def supervised_reasoning_text(tok, r, fraction):
    """The reasoning tokens the trainer supervises at a reasoning fraction (trainer._sft_batch's rule)."""
    keep = [reasoning_segments_supervised(n, fraction) for n in r.n_segments]
    return [tok.decode([t for t, c, b, s in zip(r.input_ids, r.components, r.reasoning_block, r.reasoning_segment)
                        if c == "reasoning" and b == block and s < keep[block]])
            for block in range(len(r.n_segments))]


@pytest.mark.parametrize("fraction, block1", [
    (1.0, "<think>\nFirst part.\n\nSecond part.\n</think>"),  # L_all: both delimiters supervised
    (0.5, "<think>\nFirst part."),  # last segment unsupervised: so is `</think>`
    (0.0, ""),  # no segment supervised: neither delimiter
])
def test_think_delimiters_are_supervised_with_the_segments_they_bound(tok_and_runs, fraction, block1):
    tok, _ = tok_and_runs
    r = render_trace_target(tok, task())
    assert r.n_segments == [1, 2, 1]
    assert supervised_reasoning_text(tok, r, fraction)[1] == block1
    toolcall = tok.decode([t for t, c in zip(r.input_ids, r.components) if c == "tool_call"])
    assert "think>" not in toolcall  # no delimiter is weighted as a tool call


def test_empty_think_block_joins_the_answer(qwen3_tokenizer):
    """Qwen3 draws `<think>\\n\\n</think>` on a final turn without reasoning: no segment to go with."""
    trace = [{"role": "assistant", "content": "A."}]
    runs = label_runs(qwen3_tokenizer, render_trace_target(qwen3_tokenizer, task(trace)))
    assert runs == [(("answer", -1, -1), "<think>\n\n</think>\n\nA.<|im_end|>"), (("template", -1, -1), "\n")]
