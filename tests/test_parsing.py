"""Hermes-style tool-call parser: unit cases and a deterministic fuzz test."""

from __future__ import annotations

import json
import random

import pytest

from pact_cotrain.envs.base import ToolCall
from pact_cotrain.envs.parsing import (
    CLOSE_TAG,
    OPEN_TAG,
    CallError,
    error_observation,
    format_tool_call,
    parse_tool_calls,
    render_assistant_text,
    split_reasoning,
)


def _schema(name: str, props: dict, required: list[str]) -> dict:
    return {"type": "function", "function": {"name": name, "description": "", "parameters": {
        "type": "object", "properties": props, "required": required}}}


TOOLS = [
    _schema("get_population", {"city": {"type": "string"}, "year": {"type": "integer"}}, ["city"]),
    _schema("convert", {"amount": {"type": "number"}, "exact": {"type": "boolean"},
                        "units": {"type": "array"}, "options": {"type": "object"},
                        "note": {"type": ["string", "null"]}}, ["amount"]),
]


def test_single_canonical_call():
    text = format_tool_call("get_population", {"city": "Varnhold"})
    assert text == '<tool_call>\n{"name": "get_population", "arguments": {"city": "Varnhold"}}\n</tool_call>'
    res = parse_tool_calls(text, TOOLS)
    assert res.has_call_markup and not res.errors and res.content == ""
    assert res.calls == [ToolCall("get_population", {"city": "Varnhold"}, raw=text)]


def test_format_keeps_unicode():
    assert '"Zürich"' in format_tool_call("get_population", {"city": "Zürich"})
    assert parse_tool_calls(format_tool_call("f", {"x": "Zürich ✓"})).calls[0].arguments == {"x": "Zürich ✓"}


def test_multiple_calls_with_text_around_them():
    text = ("Let me look both up.\n" + format_tool_call("get_population", {"city": "A"})
            + "\n" + format_tool_call("convert", {"amount": 3}) + "\nDone for now.")
    res = parse_tool_calls(text, TOOLS)
    assert [c.name for c in res.calls] == ["get_population", "convert"]
    assert res.content == "Let me look both up.\nDone for now."
    assert res.ordered == res.calls


@pytest.mark.parametrize("text", [
    '<tool_call>{"name":"get_population","arguments":{"city":"A"}}</tool_call>',
    '<tool_call>  \n\t{"name": "get_population",\n "arguments": {"city": "A"}}  \n\n</tool_call>',
    'prefix<tool_call>{"name": "get_population", "arguments": {"city": "A"}}</tool_call>suffix text',
    '<tool_call>\n```json\n{"name": "get_population", "arguments": {"city": "A"}}\n```\n</tool_call>',
])
def test_whitespace_and_surrounding_text(text):
    res = parse_tool_calls(text, TOOLS)
    assert [(c.name, c.arguments) for c in res.calls] == [("get_population", {"city": "A"})]
    assert not res.errors


def test_trailing_text_is_content():
    res = parse_tool_calls(format_tool_call("get_population", {"city": "A"}) + "\n\nI will wait for the result.")
    assert len(res.calls) == 1 and res.content == "I will wait for the result."


def test_string_encoded_arguments():
    text = '<tool_call>\n{"name": "get_population", "arguments": "{\\"city\\": \\"A\\", \\"year\\": 2020}"}\n</tool_call>'
    res = parse_tool_calls(text, TOOLS)
    assert res.calls[0].arguments == {"city": "A", "year": 2020}


def test_null_or_absent_arguments_read_as_empty():
    res = parse_tool_calls('<tool_call>{"name": "f"}</tool_call><tool_call>{"name": "g", "arguments": null}</tool_call>')
    assert [(c.name, c.arguments) for c in res.calls] == [("f", {}), ("g", {})]


def test_missing_close_tag_at_end_of_text():
    res = parse_tool_calls('I will call it.\n<tool_call>\n{"name": "get_population", "arguments": {"city": "A"}}\n', TOOLS)
    assert [c.name for c in res.calls] == ["get_population"] and res.content == "I will call it."


def test_missing_close_tag_before_next_block():
    text = ('<tool_call>{"name": "get_population", "arguments": {"city": "A"}}\n'
            '<tool_call>{"name": "get_population", "arguments": {"city": "B"}}</tool_call>')
    res = parse_tool_calls(text, TOOLS)
    assert [c.arguments["city"] for c in res.calls] == ["A", "B"]


def test_nested_open_tags():
    text = '<tool_call><tool_call>{"name": "get_population", "arguments": {"city": "A"}}</tool_call>'
    res = parse_tool_calls(text, TOOLS)
    assert len(res.errors) == 1 and res.errors[0].name is None and res.errors[0].reason == "empty tool call"
    assert [c.name for c in res.calls] == ["get_population"]
    assert [type(x) for x in res.ordered] == [CallError, ToolCall]


def test_stray_close_tag_is_an_error_block():
    res = parse_tool_calls("The answer is 5.</tool_call>")
    assert res.has_call_markup and not res.calls and len(res.errors) == 1
    assert res.content == "The answer is 5."


def test_no_markup():
    res = parse_tool_calls("  The capital is Varnhold.  ", TOOLS)
    assert not res.has_call_markup and not res.calls and not res.errors
    assert res.content == "The capital is Varnhold."


def test_unknown_tool():
    res = parse_tool_calls(format_tool_call("get_weather", {"city": "A"}), TOOLS)
    assert not res.calls
    (err,) = res.errors
    assert err.name == "get_weather" and "unknown tool" in err.reason
    assert error_observation(err).startswith("an error occurred when calling get_weather: unknown tool")


def test_unknown_tool_without_schemas_is_accepted():
    assert parse_tool_calls(format_tool_call("get_weather", {"city": "A"})).calls[0].name == "get_weather"


def test_missing_required_parameter():
    (err,) = parse_tool_calls(format_tool_call("get_population", {"year": 2020}), TOOLS).errors
    assert err.name == "get_population" and "missing required parameter 'city'" in err.reason


@pytest.mark.parametrize("args, ok", [
    ({"city": "A", "year": 2020}, True),
    ({"city": "A", "year": "2020"}, False),  # string for integer
    ({"city": "A", "year": 2020.0}, False),  # integer accepts ints only
    ({"city": "A", "year": True}, False),  # bool is not an integer
    ({"city": 7}, False),
])
def test_types_integer_and_string(args, ok):
    res = parse_tool_calls(format_tool_call("get_population", args), TOOLS)
    assert bool(res.calls) == ok and bool(res.errors) != ok
    if not ok:
        assert "must be of type" in res.errors[0].reason


@pytest.mark.parametrize("args, ok", [
    ({"amount": 3}, True), ({"amount": 2.5}, True), ({"amount": False}, False), ({"amount": "3"}, False),
    ({"amount": 1, "exact": True}, True), ({"amount": 1, "exact": 1}, False),
    ({"amount": 1, "units": ["m"]}, True), ({"amount": 1, "units": "m"}, False),
    ({"amount": 1, "options": {}}, True), ({"amount": 1, "options": []}, False),
    ({"amount": 1, "note": None}, True), ({"amount": 1, "note": 3}, False),
    ({"amount": 1, "extra": "ignored"}, True),  # parameters outside the schema are not checked
])
def test_types_number_boolean_array_object(args, ok):
    assert bool(parse_tool_calls(format_tool_call("convert", args), TOOLS).calls) == ok


def test_all_problems_reported_in_one_error():
    (err,) = parse_tool_calls(format_tool_call("convert", {"exact": "yes"}), TOOLS).errors
    assert "missing required parameter 'amount'" in err.reason and "'exact' must be of type boolean" in err.reason


@pytest.mark.parametrize("body, named", [
    ('{"name": "get_population", "arguments": {"city": "A"}', False),  # unbalanced JSON
    ("not json at all", False),
    ('[{"name": "get_population", "arguments": {}}]', False),  # a list, not an object
    ('{"arguments": {"city": "A"}}', False),  # no name
    ('{"name": "", "arguments": {}}', False),
    ('{"name": "get_population", "arguments": [1, 2]}', True),
    ('{"name": "get_population", "arguments": "{not json"}', True),
    ("[" * 100000, False),  # would blow the recursion limit of a naive parser
])
def test_unparseable_blocks(body, named):
    res = parse_tool_calls(f"{OPEN_TAG}\n{body}\n{CLOSE_TAG}", TOOLS)
    (err,) = res.errors
    assert not res.calls and (err.name is not None) == named
    obs = error_observation(err)
    assert obs.startswith("an error occurred when calling get_population: " if named
                          else "an error occurred when parsing the tool call: ")


def test_split_reasoning():
    assert split_reasoning("<think>\nhmm\n</think>\n\nAnswer") == ("hmm", "Answer")
    assert split_reasoning("hmm (template opened the think block)</think>Answer") == ("hmm (template opened the think block)", "Answer")
    assert split_reasoning("<think>still thinking") == ("still thinking", "")
    assert split_reasoning("plain") == ("", "plain")


def test_render_assistant_text_round_trips():
    msg = {"role": "assistant", "reasoning": "I need two lookups.", "content": "",
           "tool_calls": [{"name": "get_population", "arguments": {"city": "A"}},
                          {"name": "get_population", "arguments": {"city": "B"}}]}
    res = parse_tool_calls(render_assistant_text(msg), TOOLS)
    assert [c.arguments for c in res.calls] == [{"city": "A"}, {"city": "B"}]
    assert res.content == "I need two lookups."


# ------------------------------------------------------------------- fuzz

_VALID = [
    format_tool_call("get_population", {"city": "Varnhold", "year": 1999}),
    format_tool_call("convert", {"amount": 2.5, "exact": True, "units": ["km", "m"], "options": {"a": [1, {"b": None}]}}),
    format_tool_call("get_weather", {"city": "Zürich ✓"}),
    '<tool_call>{"name": "get_population", "arguments": "{\\"city\\": \\"B\\"}"}</tool_call>',
    'Thinking done.\n<tool_call>\n{"name": "convert", "arguments": {"amount": 1}}\n',
]
_ALPHABET = ['<', '>', '/', '{', '}', '[', ']', '"', '\\', ':', ',', ' ', '\n', 'a', '0', 'é', '✓', '\ud800', '\x00',
             OPEN_TAG, CLOSE_TAG, '"name"', '"arguments"', "```"]


def _random_unicode(rng: random.Random) -> str:
    out = []
    for _ in range(rng.randint(0, 80)):
        r = rng.random()
        if r < 0.5:
            out.append(rng.choice(_ALPHABET))
        elif r < 0.8:
            out.append(chr(rng.randint(0, 0x2FFF)))
        else:
            out.append(chr(rng.randint(0, 0x10FFFF)))
    return "".join(out)


def _mutate(rng: random.Random, text: str) -> str:
    kind = rng.randrange(6)
    if kind == 0:  # truncation
        return text[: rng.randint(0, len(text))]
    if kind == 1:  # byte flips in the UTF-8 encoding
        data = bytearray(text.encode("utf-8", "surrogatepass"))
        for _ in range(rng.randint(1, 4)):
            if data:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return data.decode("utf-8", "replace")
    if kind == 2:  # splice two texts at random points
        other = rng.choice(_VALID)
        return text[: rng.randint(0, len(text))] + other[rng.randint(0, len(other)):]
    if kind == 3:  # nest or duplicate tags
        i = rng.randint(0, len(text))
        return text[:i] + rng.choice([OPEN_TAG, CLOSE_TAG, OPEN_TAG + OPEN_TAG, text]) + text[i:]
    if kind == 4:  # delete a span
        i = rng.randint(0, len(text))
        return text[:i] + text[rng.randint(i, len(text)):]
    i = rng.randint(0, len(text))  # insert random characters
    return text[:i] + _random_unicode(rng)[:10] + text[i:]


def _check_consistent(text: str, res, tools) -> None:
    assert isinstance(res.content, str)
    assert OPEN_TAG not in res.content and CLOSE_TAG not in res.content
    assert len(res.ordered) == len(res.calls) + len(res.errors)
    assert [x for x in res.ordered if isinstance(x, ToolCall)] == res.calls
    assert [x for x in res.ordered if isinstance(x, CallError)] == res.errors
    assert res.has_call_markup == bool(res.ordered) == (OPEN_TAG in text or CLOSE_TAG in text)
    # Every opening tag starts exactly one block; other blocks are stray closing tags.
    assert sum(1 for x in res.ordered if x.raw.startswith(OPEN_TAG)) == text.count(OPEN_TAG)
    assert all(x.raw == CLOSE_TAG for x in res.ordered if not x.raw.startswith(OPEN_TAG))
    for call in res.calls:
        assert isinstance(call.name, str) and call.name and isinstance(call.arguments, dict) and call.raw in text
        if tools is not None:
            assert call.name in {"get_population", "convert"}
            assert ("city" if call.name == "get_population" else "amount") in call.arguments
    for err in res.errors:
        assert err.raw in text and isinstance(err.reason, str) and err.reason
        assert isinstance(error_observation(err), str)


def test_fuzz_never_raises_and_counts_are_consistent():
    rng = random.Random(20260616)
    n = 0
    for i in range(12000):
        r = rng.random()
        if r < 0.25:
            text = _random_unicode(rng)
        else:
            text = rng.choice(_VALID)
            for _ in range(rng.randint(0, 3)):  # 0: a valid call survives, to exercise the call path too
                text = _mutate(rng, text)
            if r > 0.9:  # several blocks in one turn
                text = "\n".join([text] + [_mutate(rng, rng.choice(_VALID)) for _ in range(rng.randint(1, 3))])
        tools = TOOLS if i % 2 else None
        res = parse_tool_calls(text, tools)
        _check_consistent(text, res, tools)
        n += 1
    assert n >= 10000


def test_never_raises_on_odd_tool_lists_and_inputs():
    weird_tools = [{}, {"function": None}, {"type": "function", "function": {"name": "f", "parameters": "oops"}},
                   {"type": "function", "function": {"name": "g", "parameters": {"properties": [], "required": "x"}}}]
    for text in [format_tool_call("f", {"a": 1}), format_tool_call("g", {}), "", OPEN_TAG, CLOSE_TAG * 3,
                 OPEN_TAG * 2000 + CLOSE_TAG, OPEN_TAG + " " * 20000 + "```"]:
        res = parse_tool_calls(text, weird_tools)
        _check_consistent(text, res, None)
    assert parse_tool_calls(None).calls == []  # type: ignore[arg-type]
    assert json.loads(format_tool_call("f", {"a": [1, 2]})[len(OPEN_TAG) + 1: -len(CLOSE_TAG) - 1]) == {"name": "f", "arguments": {"a": [1, 2]}}
