"""Rendering tasks and expert traces to tokens, with per-token component labels.

Three renderings (spec sections 1-3):
  (a) the prompt-only context x            -> `prompt_text` / `prompt_ids`
  (b) the trace-conditioned context [x; h]  -> `prompt_text(..., trace_view="full")`: the expert trace
      as a delimited block appended to the last user message (never as earlier assistant turns)
  (c) the expert trace h as a training target after x -> `render_trace_target`

Labels come from character offsets: the chat template renders the conversation to text, we locate
each component's characters in that text, and a token takes the label of the characters it covers
(a token touching any tool-response character is a tool-response token, so no target mask can ever
include one). Prompt and target are tokenised separately and concatenated, so the prompt ids are
exactly the ids a rollout starts from.

The target h is rendered turn by turn, as a token-exact rollout holds it (`trace_target_text`):
each assistant turn as the template writes the turn being generated, each run of tool messages
(and the next assistant header) as `observation_text` inserts it. Templates that re-render history
(Qwen3 drops the reasoning of assistant turns before the last user query, and writes no think block
for a non-final turn without reasoning) therefore never drop a trace turn's reasoning from the
target. On our ChatML template and on Qwen3 traces with reasoning in every turn this is the
template's own rendering of the whole conversation, character for character.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace

from pact_cotrain import control_text
from pact_cotrain.data.trace_format import Task

COMPONENTS = ("prompt", "template", "reasoning", "tool_call", "tool_response", "answer")
# Where a token straddles two components, the first listed here wins.
_PRIORITY = ("tool_response", "tool_call", "answer", "reasoning", "template")

TRACE_VIEWS = ("full", "no_tool_responses", "no_reasoning")
TRACE_HEADER = "Reference solution (available during training only):"


def template_messages(messages: list[dict]) -> list[dict]:
    """Our message format -> what chat templates read (Qwen3 reads `reasoning_content`)."""
    out = []
    for msg in messages:
        msg = dict(msg)
        if msg.get("reasoning"):
            msg["reasoning_content"] = msg["reasoning"]
        out.append(msg)
    return out


def apply_template(tokenizer, messages: list[dict], tools: list[dict] | None, add_generation_prompt: bool) -> str:
    """The chat template's text. A control-token string inside the messages or tools stays text: the
    result is a `control_text.ChatText` that remembers where such strings are, for `encode`."""
    def render(data):
        chat, schemas = data
        return tokenizer.apply_chat_template(template_messages(chat), tools=schemas or None, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)

    return control_text.render_chat(tokenizer, render, (list(messages), tools))


def encode(tokenizer, text: str) -> list[int]:
    """Tokenise rendered text: the template's own special tokens are control tokens; a control-token
    string that came from data (a ChatText's `data_controls`) is tokenised as text."""
    return control_text.encode(tokenizer, text)


# ---------------------------------------------------------------------------------------------
# (b) the trace block


def format_call_json(call: dict) -> str:
    return json.dumps({"name": call["name"], "arguments": call["arguments"]}, ensure_ascii=False)


def render_trace_block(trace: list[dict], view: str = "full") -> str:
    """The expert trace as plain text for the context: reasoning, calls, responses, final answer."""
    if view not in TRACE_VIEWS:
        raise ValueError(f"trace_view must be one of {TRACE_VIEWS}, got {view!r}")
    lines = [TRACE_HEADER, "<reference_solution>"]
    step = 0
    for i, msg in enumerate(trace):
        if msg["role"] == "assistant":
            is_final = i == len(trace) - 1
            if not is_final:
                step += 1
                lines.append(f"Step {step}:")
            if msg.get("reasoning") and view != "no_reasoning":
                lines.append(f"Reasoning: {msg['reasoning']}")
            for call in msg.get("tool_calls") or []:
                lines.append(f"Tool call: {format_call_json(call)}")
            if is_final or msg.get("content"):
                lines.append(f"{'Final answer' if is_final else 'Note'}: {msg.get('content', '')}")
        elif view != "no_tool_responses":
            lines.append(f"Tool response ({msg.get('name') or msg.get('tool_call_id')}): {msg['content']}")
    lines.append("</reference_solution>")
    return "\n".join(lines)


def trace_conditioned_messages(task: Task, view: str = "full") -> list[dict]:
    if not task.trace:
        raise ValueError(f"task {task.id}: has no expert trace to condition on")
    messages = [dict(m) for m in task.messages]
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    messages[last_user]["content"] = messages[last_user]["content"] + "\n\n" + render_trace_block(task.trace, view)
    return messages


# ---------------------------------------------------------------------------------------------
# (a) and (b): contexts


def prompt_text(tokenizer, task: Task, trace_view: str | None = None, messages: list[dict] | None = None,
                tools: list[dict] | None = None) -> str:
    """The context the model generates from: prompt-only (trace_view=None) or trace-conditioned.

    `messages` / `tools` replace the task's where an environment rewrote the prompt (`env.reset()`;
    ToolHop's free and direct scenarios do): an episode's [x; h] is built from the prompt x that the
    episode was rolled out from, so the two contexts differ by h alone."""
    seen = replace(task, messages=task.messages if messages is None else messages,
                   tools=task.tools if tools is None else tools)
    chat = seen.messages if trace_view is None else trace_conditioned_messages(seen, trace_view)
    return apply_template(tokenizer, chat, seen.tools, add_generation_prompt=True)


def prompt_ids(tokenizer, task: Task, trace_view: str | None = None, messages: list[dict] | None = None,
               tools: list[dict] | None = None) -> list[int]:
    return encode(tokenizer, prompt_text(tokenizer, task, trace_view, messages, tools))


# ---------------------------------------------------------------------------------------------
# (c) the expert trace as a target


@dataclass
class RenderedSequence:
    """Context + target tokens with a component label per token."""

    text: str
    input_ids: list[int]
    prompt_len: int  # the first prompt_len tokens are the context
    components: list[str]  # one of COMPONENTS per token
    reasoning_block: list[int]  # index of the reasoning block a token belongs to, -1 if none
    reasoning_segment: list[int]  # index of the segment within its block, -1 if none
    n_segments: list[int] = field(default_factory=list)  # segments per reasoning block

    def mask(self, *components: str) -> list[int]:
        return [int(c in components) for c in self.components]

    def token_counts(self) -> dict[str, int]:
        return {c: self.components.count(c) for c in COMPONENTS}


def split_segments(reasoning: str) -> list[tuple[int, int]]:
    """Character spans of a reasoning block's segments: paragraphs, else sentences, else the whole."""
    spans = [(m.start(), m.end()) for m in re.finditer(r"\S(?:.*?\S)?(?=\s*\n\s*\n|\s*$)", reasoning, re.S)]
    if len(spans) <= 1:
        spans = [(m.start(), m.end()) for m in re.finditer(r"\S.*?(?:[.!?](?=\s|$)|$)", reasoning, re.S)]
    return spans or [(0, len(reasoning))]


class _Labeller:
    """Assigns labels to character ranges of one text, located in order."""

    def __init__(self, text: str):
        self.text, self.cursor = text, 0
        self.spans: list[tuple[int, int, str, int, int]] = []  # start, end, label, block, segment

    def find(self, needle: str, label: str, block: int = -1, segment: int = -1) -> tuple[int, int]:
        if not needle:
            return self.cursor, self.cursor
        start = self.text.find(needle, self.cursor)
        if start < 0:
            raise ValueError(f"the chat template did not render {label} text {needle[:60]!r} where expected")
        end = start + len(needle)
        self.spans.append((start, end, label, block, segment))
        self.cursor = end
        return start, end


def _label_target(target: str, trace: list[dict], eos_token: str, turn_header: str) -> list[tuple[int, int, str, int, int]]:
    """Character spans (start, end, label, reasoning block, segment) of the expert trace in `target`.

    Delimiters go with the reasoning segment they bound: `<think>` (with the whitespace before the
    block's first segment) is labelled with the block's first segment, `</think>` (with the whitespace
    before it) with its last segment. A schedule that supervises the first k of a block's n segments
    therefore supervises `<think>` iff k >= 1 and `</think>` iff k = n: when the block's last segment is
    unsupervised, so is `</think>` (the model is never taught to close a reasoning block it was not
    taught to finish). Whitespace after `</think>` joins the component that follows, like all text
    between components. A turn without reasoning text (Qwen3's empty `<think>\n\n</think>` as generated,
    see `trace_target_text`) has no segment to go with, so its think tags join the following component.

    Every assistant turn's role header is template, including a turn that follows another assistant
    turn directly (no tool response in between)."""
    lab = _Labeller(target)
    block = 0
    for i, msg in enumerate(trace):
        if msg["role"] == "tool":
            # Whole <tool_response> element when the template draws one, else the content alone.
            start = target.find("<tool_response>", lab.cursor)
            content_at = target.find(msg["content"], lab.cursor)
            if 0 <= start <= content_at:
                close = target.find("</tool_response>", content_at + len(msg["content"]))
                lab.find(target[start : close + len("</tool_response>")], "tool_response")
            else:
                lab.find(msg["content"], "tool_response")
            continue
        turn_start = _turn_start(target, lab.cursor, turn_header, first_turn=i == 0)
        first_span = len(lab.spans)
        reasoning = (msg.get("reasoning") or "").strip()
        if reasoning:
            r_start = target.find(reasoning, max(lab.cursor, turn_start))
            if r_start < 0:
                raise ValueError(f"the chat template did not render reasoning {reasoning[:60]!r}")
            segments = split_segments(reasoning)
            for seg, (s, e) in enumerate(segments):
                lab.cursor = r_start + s
                lab.find(reasoning[s:e], "reasoning", block, seg)
            lab.cursor = r_start + len(reasoning)
            closing = _THINK_CLOSE.match(target, lab.cursor)
            if closing:  # `</think>` goes with the block's last segment (see the docstring)
                lab.find(closing.group(), "reasoning", block, len(segments) - 1)
            block += 1
        calls = msg.get("tool_calls") or []
        content = (msg.get("content") or "").strip()
        if content:
            lab.find(content, "answer")
        last_label = "answer"
        for call in calls:
            start = target.find("<tool_call>", lab.cursor)
            name_at = target.find(json.dumps(call["name"], ensure_ascii=False), lab.cursor)
            close = target.find("</tool_call>", max(start, name_at))
            if start < 0 or name_at < 0 or close < 0:
                raise ValueError(f"the chat template did not render the tool call {call['name']!r}")
            lab.find(target[start : close + len("</tool_call>")], "tool_call")
            last_label = "tool_call"
        # The end-of-turn token belongs to the turn's last component: the model must learn to stop.
        if eos_token and target.find(eos_token, lab.cursor) >= 0:
            lab.find(eos_token, last_label)
        _fill_turn_gaps(lab, first_span, turn_start)
    return lab.spans


_THINK_CLOSE = re.compile(r"\s*</think>")


def _turn_start(target: str, cursor: int, turn_header: str, first_turn: bool) -> int:
    """Where the text the model writes in an assistant turn begins: just after the turn's role header.

    The trace's first turn starts the target (its header ends the context). Any later turn, after
    tool responses or directly after another assistant turn, starts after the next header from
    `cursor`; without a known header, at `cursor` itself."""
    if first_turn:
        return 0
    header_at = target.find(turn_header, cursor) if turn_header else -1
    return header_at + len(turn_header) if header_at >= 0 else cursor


def _fill_turn_gaps(lab: _Labeller, first_span: int, turn_start: int) -> None:
    """Text the model itself writes inside an assistant turn between components (`<think>`, the
    whitespace after `</think>`, newlines between calls) joins the component that follows it: at
    inference the model must produce it to get there. Role headers before `turn_start` stay template."""
    turn = sorted(lab.spans[first_span:])
    cursor = turn_start
    for start, end, label, block, segment in turn:
        if start > cursor:
            lab.spans.append((cursor, start, label, block, segment))
        cursor = max(cursor, end)


def _assistant_header(tokenizer) -> str:
    """What the template writes to open an assistant turn (the generation prompt)."""
    probe = [{"role": "user", "content": "?"}]
    with_header = apply_template(tokenizer, probe, None, add_generation_prompt=True)
    return with_header[len(apply_template(tokenizer, probe, None, add_generation_prompt=False)):]


def _turn_as_generated(tokenizer, message: dict, tools: list[dict] | None) -> tuple[str, str]:
    """An assistant message as the template writes the turn being generated: (what the model writes
    after the generation prompt, up to and including its end-of-turn token; what the template writes
    after that token). Rendered after a probe user query, so no history can change it (Qwen3 writes a
    think block, empty when there is no reasoning, for exactly this turn)."""
    probe = [{"role": "user", "content": "?"}]
    head = apply_template(tokenizer, probe, tools, add_generation_prompt=True)
    full = apply_template(tokenizer, probe + [message], tools, add_generation_prompt=False)
    if not full.startswith(head):
        raise ValueError("the chat template renders an assistant turn without its own generation prompt; "
                         "its turns cannot be rendered as generated")
    turn = full[len(head):]
    eos = tokenizer.eos_token or ""
    at = control_text.find_template(tokenizer, turn, eos) if eos else -1  # not an `eos` string from the message
    cut = at + len(eos) if at >= 0 else len(turn)
    return turn[:cut], turn[cut:]


def trace_target_text(tokenizer, trace: list[dict], tools: list[dict] | None) -> str:
    """The expert trace h as the text after the prompt's generation prompt, turn by turn, as a
    token-exact rollout that sampled the expert's turns holds it:

        h = turn(a_1) + obs(T_1) + turn(a_2) + ... + obs(T_{n-1}) + turn(a_n) + tail(a_n)

    turn(a) is `_turn_as_generated`, obs(T) the tool messages between two assistant turns and the
    next assistant header exactly as the rollout engine inserts them (`observation_text`), tail the
    template's text after the last end-of-turn token. Every trace turn's reasoning is therefore in
    the target even where the template would drop it from a re-rendered history."""
    if not trace or trace[0]["role"] != "assistant" or trace[-1]["role"] != "assistant":
        raise ValueError("an expert trace starts and ends with an assistant turn")
    parts, between, tail = [], [], ""
    for msg in trace:
        if msg["role"] != "assistant":
            between.append(msg)
            continue
        if parts:
            parts.append(observation_text(tokenizer, between, tools))
        turn, tail = _turn_as_generated(tokenizer, msg, tools)
        parts.append(turn)
        between = []
    return control_text.join(parts + [tail])


def render_trace_target(tokenizer, task: Task) -> RenderedSequence:
    """[x ; h]: the prompt-only context followed by the expert trace, labelled per token (spec 3)."""
    if not task.trace:
        raise ValueError(f"task {task.id}: has no expert trace")
    context = prompt_text(tokenizer, task)
    try:
        target = trace_target_text(tokenizer, task.trace, task.tools)
    except ValueError as exc:
        raise ValueError(f"task {task.id}: {exc}") from None
    full = context + target
    context_ids = encode(tokenizer, context)
    target_ids, target_offsets = control_text.encode(tokenizer, target, with_offsets=True)
    spans = _label_target(target, task.trace, tokenizer.eos_token or "", _assistant_header(tokenizer))

    components = ["prompt"] * len(context_ids)
    blocks, segments = [-1] * len(context_ids), [-1] * len(context_ids)
    for tok_start, tok_end in target_offsets:
        touching = [s for s in spans if s[0] < max(tok_end, tok_start + 1) and s[1] > tok_start]
        label, block, segment = "template", -1, -1
        for wanted in _PRIORITY:
            hit = next((s for s in touching if s[2] == wanted), None)
            if hit:
                label, block, segment = hit[2], hit[3], hit[4]
                break
        components.append(label)
        blocks.append(block)
        segments.append(segment)
    n_segments = [len(split_segments((m.get("reasoning") or "").strip())) for m in task.trace
                  if m["role"] == "assistant" and (m.get("reasoning") or "").strip()]
    return RenderedSequence(
        text=full,
        input_ids=context_ids + target_ids,
        prompt_len=len(context_ids),
        components=components,
        reasoning_block=blocks,
        reasoning_segment=segments,
        n_segments=n_segments,
    )


# ---------------------------------------------------------------------------------------------
# Rollouts: what the environment inserts, and labels for generated text


def observation_text(tokenizer, tool_messages: list[dict], tools: list[dict] | None = None) -> str:
    """Text the environment inserts after an assistant turn's end-of-turn token: the rest of the
    turn's template, the tool responses, and the next assistant header. Derived from the template
    itself: everything it renders after a probe assistant turn's end-of-turn token."""
    marker = "@@pact-probe-turn@@"
    probe = [{"role": "user", "content": "?"}, {"role": "assistant", "content": marker}]
    after = apply_template(tokenizer, probe + list(tool_messages), tools, add_generation_prompt=True)
    eos = tokenizer.eos_token
    turn_end = after.index(marker) + len(marker)
    if eos:
        turn_end = control_text.find_template(tokenizer, after, eos, turn_end) + len(eos)
    return after[turn_end:]


# Reasoning: a `<think>` block (open to the end of a cut turn), or everything up to a first `</think>`
# that no `<think>` precedes (a template may put the opening tag in the generation prompt; the
# environments' `split_reasoning` reads such a turn the same way).
_GENERATED_PATTERNS = (("reasoning", re.compile(r"\A(?:(?!<think>).)*?</think>|<think>.*?(?:</think>|$)", re.S)),
                       ("tool_call", re.compile(r"<tool_call>.*?(?:</tool_call>|$)", re.S)))


def label_generated_text(text: str) -> list[tuple[int, int, str]]:
    """Character spans of an assistant turn the model wrote: reasoning, tool calls, the rest answer."""
    spans = []
    for label, pattern in _GENERATED_PATTERNS:
        spans += [(m.start(), m.end(), label) for m in pattern.finditer(text)]
    spans.sort()
    out, cursor = [], 0
    for start, end, label in spans:
        if start < cursor:
            continue
        if start > cursor:
            out.append((cursor, start, "answer"))
        out.append((start, end, label))
        cursor = end
    if cursor < len(text):
        out.append((cursor, len(text), "answer"))
    return out
