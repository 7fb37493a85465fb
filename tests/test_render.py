"""Rendering and component masks on our ChatML tool template and on Qwen3's template."""

import pytest

from pact_cotrain.data.trace_format import Task
from pact_cotrain.render import (
    COMPONENTS,
    observation_text,
    prompt_ids,
    prompt_text,
    render_trace_block,
    render_trace_target,
    split_segments,
)

TOOLS = [{"type": "function", "function": {"name": "get_birthplace", "description": "Where a person was born.",
          "parameters": {"type": "object", "properties": {"person": {"type": "string"}}, "required": ["person"]}}}]

TRACE = [
    {"role": "assistant", "content": "", "reasoning": "I need the birthplace. I will look it up for both people.",
     "tool_calls": [{"name": "get_birthplace", "arguments": {"person": "Ola Vesk"}},
                    {"name": "get_birthplace", "arguments": {"person": "Ida Marn"}}]},
    {"role": "tool", "name": "get_birthplace", "content": '{"birthplace": "Varnhold"}'},
    {"role": "tool", "name": "get_birthplace", "content": '{"birthplace": "Ostmark"}'},
    {"role": "assistant", "reasoning": "Both are known now.\n\nI can answer.", "content": "Varnhold and Ostmark."},
]


def task(trace=TRACE):
    return Task(id="t", messages=[{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": "Where were Ola Vesk and Ida Marn born?"}],
                tools=TOOLS, trace=trace)


@pytest.fixture(params=["chatml", "qwen3"])
def tok(request, tokenizer, qwen3_tokenizer):
    return tokenizer if request.param == "chatml" else qwen3_tokenizer


def test_pieces_concatenate_to_the_full_rendering(tok):
    r = render_trace_target(tok, task())
    full = tok.apply_chat_template(task().messages + TRACE, tools=TOOLS, tokenize=False)
    assert r.text == full
    assert tok.decode(r.input_ids) == full  # context ids + target ids decode to the full text
    assert r.input_ids[: r.prompt_len] == prompt_ids(tok, task())


def test_tool_response_tokens_are_never_targets(tok):
    r = render_trace_target(tok, task())
    for comp in ("reasoning", "tool_call", "answer"):
        mask = r.mask(comp)
        # No token of a target mask decodes to any part of a tool response's content.
        text = tok.decode([t for t, m in zip(r.input_ids, mask) if m])
        assert "Varnhold\"}" not in text and "Ostmark\"}" not in text and "<tool_response>" not in text
    response_text = tok.decode([t for t, c in zip(r.input_ids, r.components) if c == "tool_response"])
    assert '{"birthplace": "Varnhold"}' in response_text and '{"birthplace": "Ostmark"}' in response_text
    assert set(r.components) <= set(COMPONENTS)


def test_component_texts(tok):
    r = render_trace_target(tok, task())

    def text_of(comp):
        return tok.decode([t for t, c in zip(r.input_ids, r.components) if c == comp])

    assert text_of("tool_call").count("<tool_call>") == 2 and text_of("tool_call").count("</tool_call>") == 2
    assert '"Ola Vesk"' in text_of("tool_call") and tok.eos_token in text_of("tool_call")
    answer = text_of("answer")  # the answer and end of turn; `</think>` goes with the reasoning block
    assert "</think>" not in answer and answer.endswith("\nVarnhold and Ostmark." + tok.eos_token)
    assert "I need the birthplace." in text_of("reasoning") and "I can answer." in text_of("reasoning")
    assert all(c == "prompt" for c in r.components[: r.prompt_len])
    assert all(c != "prompt" for c in r.components[r.prompt_len:])


def test_reasoning_segments(tok):
    r = render_trace_target(tok, task())
    assert r.n_segments == [2, 2]  # sentences in block 0, paragraphs in block 1
    seg_text = {}
    for t, b, s in zip(r.input_ids, r.reasoning_block, r.reasoning_segment):
        if b >= 0:
            seg_text.setdefault((b, s), []).append(t)
    assert tok.decode(seg_text[(0, 0)]) == "<think>\nI need the birthplace."  # the opening tag joins segment 0
    assert tok.decode(seg_text[(1, 1)]) == "\n\nI can answer.\n</think>"  # the closing tag joins the last segment


def test_turn_structure_the_model_writes_is_a_target_but_role_headers_are_not(tok):
    r = render_trace_target(tok, task())
    targets = [t for t, c in zip(r.input_ids, r.components) if c in ("reasoning", "tool_call", "answer")]
    text = tok.decode(targets)
    assert text.count("<think>") == 2 and text.count("</think>") == 2
    assert "<|im_start|>" not in text and "assistant" not in text.replace("Varnhold", "")
    template = tok.decode([t for t, c in zip(r.input_ids, r.components) if c == "template"])
    assert "<|im_start|>assistant" in template and "<think>" not in template


def test_split_segments():
    assert len(split_segments("One. Two! Three?")) == 3
    assert len(split_segments("Para one. Still one.\n\nPara two.")) == 2
    assert split_segments("no punctuation") == [(0, 14)]


def test_trace_conditioned_context(tok):
    plain, cond = prompt_text(tok, task()), prompt_text(tok, task(), trace_view="full")
    assert "Reference solution" in cond and "Reference solution" not in plain
    assert cond.endswith(plain[-30:])  # both end with the assistant header
    block = render_trace_block(TRACE, "full")
    assert '{"birthplace": "Varnhold"}' in block and "I need the birthplace." in block
    assert "Varnhold\"}" not in render_trace_block(TRACE, "no_tool_responses")
    assert "I need the birthplace." not in render_trace_block(TRACE, "no_reasoning")
    with pytest.raises(ValueError):
        render_trace_block(TRACE, "bogus")


def test_observation_text_matches_template(tok):
    obs = observation_text(tok, [{"role": "tool", "name": "x", "content": "R1"}], TOOLS)
    assert obs.startswith("\n<|im_start|>user\n<tool_response>\nR1\n</tool_response>")
    assert obs.endswith("<|im_start|>assistant\n")
