"""Text from data and tools is text: a control-token string in it never becomes a control token.

A chat template renders messages to one string, and tokenising that string maps every occurrence
of a special token's text (`<|im_end|>`, `<|im_start|>`, ...) to the control token, wherever it came
from. A user message, an expert trace or a tool's output holding `<|im_end|>\\n<|im_start|>assistant`
would then forge a turn boundary (issue 31, case 6). So the template renders the data with each
control string replaced by a random placeholder (`render_chat`); the placeholders are put back as the
literal strings and their character spans remembered (`ChatText.data_controls`). `encode` then maps
only the template's own control strings to control tokens, and tokenises the text between them with
the tokenizer's `split_special_tokens=True`, so a control string from data becomes ordinary pieces.

Control tokens are the tokenizer's *special* added tokens. Non-special added tokens (Qwen3's
`<think>`, `<tool_call>`, `<tool_response>`) are the model's own markup in assistant text, which it
writes and reads as single tokens: they are kept as they are.

Text without a control string from data is tokenised exactly as before (one call on the whole
string). A `ChatText` keeps its spans through slicing and `+`, which is how rendering builds contexts
and targets; a plain `str` passed to `encode` is taken as trusted template output.
"""

from __future__ import annotations

import re
import secrets


def control_tokens(tokenizer) -> list[str]:
    """The tokenizer's special tokens (those `split_special_tokens` splits), longest first."""
    specials = {tok.content for tok in getattr(tokenizer, "added_tokens_decoder", {}).values() if tok.special}
    specials |= set(getattr(tokenizer, "all_special_tokens", []) or [])
    return sorted((s for s in specials if s), key=len, reverse=True)


class ChatText(str):
    """Rendered text with the character spans `data_controls` of control strings that came from data."""

    data_controls: tuple[tuple[int, int], ...]

    def __new__(cls, text: str, data_controls=()):
        self = super().__new__(cls, text)
        self.data_controls = tuple(data_controls)
        return self

    def __add__(self, other):
        if not isinstance(other, str):
            return NotImplemented
        shift = len(self)
        return ChatText(str(self) + str(other),
                        self.data_controls + tuple((s + shift, e + shift) for s, e in _spans_of(other)))

    def __radd__(self, other):
        if not isinstance(other, str):
            return NotImplemented
        shift = len(other)
        return ChatText(str(other) + str(self),
                        _spans_of(other) + tuple((s + shift, e + shift) for s, e in self.data_controls))

    def __getitem__(self, key):
        if not isinstance(key, slice) or key.step not in (None, 1):
            return str.__getitem__(self, key)
        start, stop, _ = key.indices(len(self))
        return ChatText(str.__getitem__(self, key),
                        tuple((s - start, e - start) for s, e in self.data_controls if s >= start and e <= stop))


def _spans_of(text: str) -> tuple[tuple[int, int], ...]:
    return getattr(text, "data_controls", ())


def join(parts) -> str:
    """"".join for ChatText parts, keeping their spans."""
    out = ChatText("")
    for part in parts:
        out = out + part
    return out


def _replace_strings(value, replace):
    if isinstance(value, str):
        return replace(value)
    if isinstance(value, list):
        return [_replace_strings(v, replace) for v in value]
    if isinstance(value, tuple):
        return tuple(_replace_strings(v, replace) for v in value)
    if isinstance(value, dict):
        return {_replace_strings(k, replace): _replace_strings(v, replace) for k, v in value.items()}
    return value


def _holds(value, controls: list[str]) -> bool:
    found = []

    def look(s: str) -> str:
        if any(c in s for c in controls):
            found.append(s)
        return s

    _replace_strings(value, look)
    return bool(found)


def render_chat(tokenizer, render, data) -> str:
    """`render(data)` (a chat template call on messages and tools), with every control string inside
    `data`'s strings kept as data: a ChatText whose `data_controls` are those strings' spans. Data
    without one renders exactly as `render(data)` does."""
    controls = control_tokens(tokenizer)
    if not controls or not _holds(data, controls):
        return render(data)
    nonce = secrets.token_hex(6)
    # ASCII letters and digits: no template escapes, trims or re-encodes them (tojson keeps them as they are).
    holders = {c: f"PACTCTL{nonce}N{i}Z" for i, c in enumerate(controls)}
    pattern = re.compile("|".join(re.escape(c) for c in controls))
    rendered = render(_replace_strings(data, lambda s: pattern.sub(lambda m: holders[m.group()], s)))
    back = {h: c for c, h in holders.items()}
    pieces, spans, length, cursor = [], [], 0, 0
    for match in re.finditer(f"PACTCTL{nonce}N\\d+Z", rendered):
        pieces.append(rendered[cursor:match.start()])
        length += match.start() - cursor
        literal = back[match.group()]
        pieces.append(literal)
        spans.append((length, length + len(literal)))
        length += len(literal)
        cursor = match.end()
    pieces.append(rendered[cursor:])
    text = "".join(pieces)
    if nonce in text:  # a template that changed a placeholder: refuse rather than forge a token
        raise ValueError("the chat template altered text it was given; control strings in data cannot be kept as text")
    return ChatText(text, spans)


def template_controls(tokenizer, text: str) -> list[tuple[int, int]]:
    """Spans of the control strings in `text` that the template wrote (not in `data_controls`)."""
    controls = control_tokens(tokenizer)
    if not controls:
        return []
    forged = set(_spans_of(text))
    pattern = re.compile("|".join(re.escape(c) for c in controls))
    return [m.span() for m in pattern.finditer(str(text)) if m.span() not in forged]


def find_template(tokenizer, text: str, needle: str, start: int = 0) -> int:
    """str.find for a control string, skipping occurrences that came from data (-1 when none)."""
    forged = set(_spans_of(text))
    at = text.find(needle, start)
    while at >= 0 and (at, at + len(needle)) in forged:
        at = text.find(needle, at + 1)
    return at


def encode(tokenizer, text: str, with_offsets: bool = False):
    """Token ids of rendered text (and character offsets, `with_offsets`): the template's control
    strings are control tokens, control strings from data are tokenised as text."""
    spans = _spans_of(text)
    if not spans:
        enc = tokenizer(str(text), add_special_tokens=False, return_offsets_mapping=with_offsets)
        return (list(enc["input_ids"]), list(enc["offset_mapping"])) if with_offsets else list(enc["input_ids"])
    ids, offsets, cursor = [], [], 0
    plain = str(text)
    for start, end in template_controls(tokenizer, text) + [(len(plain), len(plain))]:
        if start > cursor:
            piece = tokenizer(plain[cursor:start], add_special_tokens=False, split_special_tokens=True,
                              return_offsets_mapping=with_offsets)
            ids += piece["input_ids"]
            if with_offsets:
                offsets += [(s + cursor, e + cursor) for s, e in piece["offset_mapping"]]
        if end > start:
            ids.append(tokenizer.convert_tokens_to_ids(plain[start:end]))
            offsets.append((start, end))
        cursor = end
    return (ids, offsets) if with_offsets else ids
