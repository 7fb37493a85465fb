"""Qwen3's own chat template end to end: trace targets, component masks, token-exact rollouts, parsing.

Qwen3's template (tests/templates/qwen3.jinja) re-renders history: it drops the reasoning of assistant
turns before the last user query, and writes a think block for a later turn only when it has
reasoning or is the last message (then `<think>\\n\\n</think>\\n\\n` when empty). Our choice, tested here:

* the prompt x is the template's own rendering (earlier turns' reasoning in x is dropped, as Qwen3
  would see it at inference);
* the trace target h is rendered turn by turn as a token-exact rollout holds it (each turn as the
  template writes the turn being generated, tool turns as the engine inserts them), so every trace
  turn's reasoning is in the target and a rollout replaying the expert is the target token for token;
* a rollout never re-renders: after a new user query the episode keeps its earlier sampled reasoning
  where a re-render by the template would drop it (the documented reasoning-drop case).

Each case runs on two tokenizers carrying the template: the shared fixture, and one that also has
Qwen3's tag tokens (`<think>`, `<tool_call>`, `<tool_response>` and closers are single added tokens
in Qwen3's vocabulary, so token boundaries fall on them as they do for the real model).
"""

import json
from pathlib import Path

import pytest
import torch
from tokenizers import AddedToken

from pact_cotrain.data.trace_format import Task
from pact_cotrain.envs.base import StepResult
from pact_cotrain.envs.parsing import parse_tool_calls, split_reasoning
from pact_cotrain.envs.tool_turn import run_tool_turn
from pact_cotrain.render import (apply_template, encode, label_generated_text, observation_text, prompt_text,
                                 render_trace_target, split_segments)
from pact_cotrain.rollout.backends import HFBackend, TurnOutput
from pact_cotrain.rollout.engine import RolloutEngine, SamplingConfig, component_token_counts
from pact_cotrain.testing import tiny_llama, tiny_tokenizer

QWEN3_TEMPLATE = (Path(__file__).parent / "templates" / "qwen3.jinja").read_text()

QWEN3_TAGS = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]

TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "Look a fact up.",
          "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}]

# An earlier exchange in the prompt (its reasoning is history), then the current query.
MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Who founded Varnhold?"},
            {"role": "assistant", "reasoning": "Old thought about founders.", "content": "Ola Vesk."},
            {"role": "user", "content": "Where and when was Ola Vesk born?"}]


def call(q):
    return {"name": "lookup", "arguments": {"q": q}}


# Reasoning in turns 1 and 3 (two segments each), none in turn 2, two calls in turn 1.
TRACE = [
    {"role": "assistant", "content": "", "reasoning": "I need the birthplace. And the year.",
     "tool_calls": [call("birthplace of Ola Vesk"), call("birth year of Ola Vesk")]},
    {"role": "tool", "name": "lookup", "content": "Ostmark"},
    {"role": "tool", "name": "lookup", "content": "1901"},
    {"role": "assistant", "content": "", "tool_calls": [call("Ostmark country")]},
    {"role": "tool", "name": "lookup", "content": "Norland"},
    {"role": "assistant", "reasoning": "All three are known.\n\nTime to answer.",
     "content": "Ostmark, Norland, in 1901."},
]


def make_task(trace=TRACE, messages=MESSAGES):
    return Task(id="q3", messages=messages, tools=TOOLS, trace=trace)


def qwen3_tags_tokenizer():
    tok = tiny_tokenizer(chat_template=QWEN3_TEMPLATE)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN3_TAGS])
    return tok


_TAGS_TOKENIZER = []


@pytest.fixture(params=["qwen3", "qwen3_tags"])
def tok(request, qwen3_tokenizer):
    if request.param == "qwen3":
        return qwen3_tokenizer
    if not _TAGS_TOKENIZER:
        _TAGS_TOKENIZER.append(qwen3_tags_tokenizer())
    return _TAGS_TOKENIZER[0]


def decode(tok, ids):
    return tok.decode(ids, skip_special_tokens=False)


def component_text(tok, r, *components):
    return decode(tok, [t for t, c in zip(r.input_ids, r.components) if c in components])


# ---------------------------------------------------------------------------------------------
# Trace targets


def test_tag_tokens_are_single_tokens(tok):
    if "<think>" in tok.get_vocab():
        assert all(len(encode(tok, tag)) == 1 for tag in QWEN3_TAGS)


def test_prompt_history_reasoning_is_dropped_as_qwen3_renders_it(tok):
    """x is the template's own rendering: the earlier turn's reasoning is not in the context."""
    context = prompt_text(tok, make_task())
    assert "Ola Vesk." in context and "Old thought" not in context and "<think>" not in context
    assert context.endswith("<|im_start|>assistant\n")
    r = render_trace_target(tok, make_task())
    assert r.input_ids[: r.prompt_len] == encode(tok, context)


def test_every_trained_reasoning_segment_is_rendered(tok):
    """Each (block, segment) the SFT mask can select decodes to that segment's own text, in order."""
    r = render_trace_target(tok, make_task())
    blocks = [m["reasoning"] for m in TRACE if m.get("reasoning")]
    assert r.n_segments == [len(split_segments(b)) for b in blocks] == [2, 2]
    target_text = decode(tok, r.input_ids[r.prompt_len:])
    for b, reasoning in enumerate(blocks):
        for s, (start, end) in enumerate(split_segments(reasoning)):
            ids = [t for t, c, bb, ss in zip(r.input_ids, r.components, r.reasoning_block, r.reasoning_segment)
                   if c == "reasoning" and bb == b and ss == s]
            seg = decode(tok, ids)
            assert reasoning[start:end] in seg and reasoning[start:end] in target_text
            assert seg.replace("<think>", "").replace("</think>", "").strip() == reasoning[start:end]
    # Every reasoning token belongs to a block and segment; none sits in the prompt.
    assert all(b >= 0 and s >= 0 for c, b, s in zip(r.components, r.reasoning_block, r.reasoning_segment)
               if c == "reasoning")
    assert all(c == "prompt" for c in r.components[: r.prompt_len])


def test_trace_target_is_rendered_turn_by_turn(tok):
    """The choice made for Qwen3: each trace turn as the template writes the turn being generated.

    Qwen3's whole-conversation rendering writes no think block for the middle turn (no reasoning, not
    last); as generated, that turn opens with an empty `<think>\\n\\n</think>\\n\\n`, which the target
    keeps, so it is what a rollout replaying the expert holds (test_replayed_expert_rollout_...)."""
    r = render_trace_target(tok, make_task())
    whole = apply_template(tok, MESSAGES + TRACE, TOOLS, add_generation_prompt=False)
    middle = "<|im_start|>assistant\n<think>\n\n</think>\n\n<tool_call>"
    assert middle in r.text and middle not in whole
    assert r.text.replace("<think>\n\n</think>\n\n", "") == whole
    # With reasoning in every turn the two are the same text.
    full_trace = [dict(m) for m in TRACE]
    full_trace[3]["reasoning"] = "One more lookup."
    r = render_trace_target(tok, make_task(full_trace))
    assert r.text == apply_template(tok, MESSAGES + full_trace, TOOLS, add_generation_prompt=False)
    assert decode(tok, r.input_ids) == r.text


def label_runs(tok, r):
    """Consecutive target tokens with the same (component, block, segment), as decoded text."""
    runs = []
    for i in range(r.prompt_len, len(r.input_ids)):
        key = (r.components[i], r.reasoning_block[i], r.reasoning_segment[i])
        piece = decode(tok, [r.input_ids[i]])
        if runs and runs[-1][0] == key:
            runs[-1] = (key, runs[-1][1] + piece)
        else:
            runs.append((key, piece))
    return runs


def call_text(q):
    return '<tool_call>\n{"name": "lookup", "arguments": {"q": "%s"}}\n</tool_call>' % q


EXPECTED_RUNS = [
    (("reasoning", 0, 0), "<think>\nI need the birthplace."),
    (("reasoning", 0, 1), " And the year.\n</think>"),
    (("tool_call", -1, -1), "\n\n" + call_text("birthplace of Ola Vesk") + "\n" + call_text("birth year of Ola Vesk")
     + "<|im_end|>"),
    (("template", -1, -1), "\n<|im_start|>user\n"),
    (("tool_response", -1, -1), "<tool_response>\nOstmark\n</tool_response>"),
    (("template", -1, -1), "\n"),
    (("tool_response", -1, -1), "<tool_response>\n1901\n</tool_response>"),
    (("template", -1, -1), "<|im_end|>\n<|im_start|>assistant\n"),
    # No reasoning: the empty think block has no segment to go with and joins the call after it.
    (("tool_call", -1, -1), "<think>\n\n</think>\n\n" + call_text("Ostmark country") + "<|im_end|>"),
    (("template", -1, -1), "\n<|im_start|>user\n"),
    (("tool_response", -1, -1), "<tool_response>\nNorland\n</tool_response>"),
    (("template", -1, -1), "<|im_end|>\n<|im_start|>assistant\n"),
    (("reasoning", 1, 0), "<think>\nAll three are known."),
    (("reasoning", 1, 1), "\n\nTime to answer.\n</think>"),
    (("answer", -1, -1), "\n\nOstmark, Norland, in 1901.<|im_end|>"),
    (("template", -1, -1), "\n"),
]


def test_component_masks_line_up_with_their_spans(tok):
    r = render_trace_target(tok, make_task())
    assert label_runs(tok, r) == EXPECTED_RUNS
    targets = component_text(tok, r, "reasoning", "tool_call", "answer")
    assert "tool_response" not in targets and "Norland\n" not in targets and "<|im_start|>" not in targets


# ---------------------------------------------------------------------------------------------
# Rollouts


class RecordingBackend:
    """Wraps a backend and keeps every turn it returned, per prompt length (i.e. per episode state)."""

    def __init__(self, inner):
        self.inner, self.turns = inner, []

    def clear_cache(self):
        getattr(self.inner, "clear_cache", lambda: None)()

    def generate(self, prompts, *args, **kw):
        out = self.inner.generate(prompts, *args, **kw)
        self.turns += [(list(p), t) for p, t in zip(prompts, out)]
        return out


class ScriptedBackend:
    """Samples given texts, one per turn, as token ids ending with the end-of-turn token."""

    def __init__(self, tok, turns):
        self.ids = [encode(tok, text) for text in turns]
        self.n = 0

    def generate(self, prompts, *args, **kw):
        out = []
        for _ in prompts:
            ids = self.ids[self.n]
            self.n += 1
            out.append(TurnOutput(list(ids), [-1.0] * len(ids), finished=True))
        return out


class ToolEnv:
    """Answers each turn with two tool messages; ends after `steps` turns."""

    max_steps = 10

    def __init__(self, steps=3):
        self.steps, self.n = steps, 0

    def reset(self, task):
        return task.messages, task.tools

    def step(self, text):
        self.n += 1
        msgs = [{"role": "tool", "name": "lookup", "content": f"result {self.n}.{i}"} for i in (1, 2)]
        return StepResult([] if self.n >= self.steps else msgs, self.n >= self.steps)

    def metrics(self):
        return {"reward": 0.0}


def template_tool_turn(tok, history, messages):
    """What Qwen3's template writes for the inserted messages given the history: the text after the last
    assistant turn's end-of-turn token, up to and including the next assistant header. The inserted
    turn holds one end-of-turn token (its own), so the assistant turn's is the one before it."""
    after = apply_template(tok, history + messages, TOOLS, add_generation_prompt=True)
    eos = tok.eos_token
    return after[after.rindex(eos, 0, after.rindex(eos)) + len(eos):]


def test_sampled_rollout_is_token_exact(tok):
    """A tiny random model, sampled: episode ids = prompt + sum(sampled_i + inserted_i), and each
    inserted tool turn is the template's rendering of that tool message given the history."""
    model = tiny_llama(tok)
    task = Task(id="r", messages=[{"role": "user", "content": "Look things up."}], tools=TOOLS)
    backend = RecordingBackend(HFBackend(model, tok.eos_token_id, tok.pad_token_id))
    cfg = SamplingConfig(max_new_tokens_per_turn=10, max_completion_tokens=400, temperature=1.0)
    ep = RolloutEngine(model, tok, lambda t: ToolEnv(steps=3), cfg, backend=backend).rollout([task], k=1, seed=3)[0]
    assert len(ep.turn_spans) == 3  # the env ends after its third turn (a cut last turn reports the cut)
    assert ep.prompt_ids == encode(tok, apply_template(tok, task.messages, TOOLS, add_generation_prompt=True))
    rebuilt, history = [], list(task.messages)
    tool_turns = [m for m in ep.messages if m["role"] == "tool"]
    for i, (prompt, turn) in enumerate(backend.turns):
        assert prompt == ep.prompt_ids + rebuilt  # the model was fed exactly the episode so far
        rebuilt += turn.token_ids
        history.append(ep.messages[len(task.messages) + 3 * i])
        if i < 2:
            tools_i = tool_turns[2 * i: 2 * i + 2]
            inserted = ([] if turn.finished else [tok.eos_token_id]) + encode(tok, template_tool_turn(tok, history, tools_i))
            assert inserted == encode(tok, ("" if turn.finished else tok.eos_token)
                                      + observation_text(tok, tools_i, TOOLS))
            rebuilt += inserted
            history += tools_i
    assert ep.completion_ids == rebuilt
    assert [ep.completion_ids[s:e] for s, e in ep.turn_spans] == [t.token_ids for _, t in backend.turns]
    # Log-probs are those of the sampled ids under the model (the tokens trained on are those sampled).
    ids = torch.tensor([ep.prompt_ids + ep.completion_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(ep.prompt_ids) - 1: -1]
    rescored = torch.log_softmax(logits, -1).gather(-1, ids[0, len(ep.prompt_ids):, None]).squeeze(-1)
    gen = torch.tensor(ep.generated_mask, dtype=torch.bool)
    torch.testing.assert_close(rescored[gen], torch.tensor(ep.logprobs)[gen], atol=1e-4, rtol=1e-4)


class ReplayEnv:
    """Replays the expert trace's tool messages, checking what it parses from each turn."""

    max_steps = 10

    def __init__(self, trace):
        self.turns, self.n = [], 0
        for m in trace:
            if m["role"] == "assistant":
                self.turns.append((m, []))
            else:
                self.turns[-1][1].append(m)

    def reset(self, task):
        return task.messages, task.tools

    def step(self, text):
        expert, tool_messages = self.turns[self.n]
        self.n += 1
        thinking, visible = split_reasoning(text)
        assert thinking == (expert.get("reasoning") or "")
        calls = parse_tool_calls(visible, TOOLS).calls
        assert [(c.name, c.arguments) for c in calls] == [(c["name"], c["arguments"]) for c in expert.get("tool_calls", [])]
        return StepResult(tool_messages, self.n >= len(self.turns))

    def metrics(self):
        return {"reward": 0.0}


def expert_turn_texts(tok, r):
    """The expert's assistant turns as the target holds them (generated-component runs)."""
    texts, current = [], ""
    for i in range(r.prompt_len, len(r.input_ids)):
        if r.components[i] in ("reasoning", "tool_call", "answer"):
            current += decode(tok, [r.input_ids[i]])
        elif current:
            texts.append(current)
            current = ""
    return texts + ([current] if current else [])


def test_replayed_expert_rollout_is_the_trace_target(tok):
    """A rollout that samples the expert's turns holds exactly the SFT target's tokens, and the tokens
    it sampled are exactly the target's reasoning / tool-call / answer tokens."""
    task = make_task()
    r = render_trace_target(tok, task)
    turns = expert_turn_texts(tok, r)
    assert len(turns) == 3 and all(t.endswith(tok.eos_token) for t in turns)
    engine = RolloutEngine(None, tok, lambda t: ReplayEnv(TRACE), SamplingConfig(max_completion_tokens=2000),
                           backend=ScriptedBackend(tok, turns))
    ep = engine.rollout([task], k=1)[0]
    assert ep.stop_reason == "done"
    episode = ep.prompt_ids + ep.completion_ids
    assert r.input_ids[: len(episode)] == episode and decode(tok, r.input_ids[len(episode):]) == "\n"
    sampled = [0] * r.prompt_len + ep.generated_mask
    assert sampled == [int(c in ("reasoning", "tool_call", "answer")) for c in r.components[: len(episode)]]
    # Rollout metrics (label_generated_text) agree on reasoning, except that they count the middle
    # turn's empty think block as reasoning, where the target has no segment for it. (They differ on
    # separators and end-of-turn tokens, which metrics count as answer: metrics only, never a mask.)
    counts = component_token_counts(ep, tok)
    middle = [decode(tok, [i]) for i in ep.completion_ids[slice(*ep.turn_spans[1])]]
    empty_block = sum(1 for k in range(len(middle)) if len("".join(middle[:k])) < len("<think>\n\n</think>"))
    assert counts["reasoning"] == r.components.count("reasoning") + empty_block
    assert counts["inserted"] == len(ep.completion_ids) - ep.n_generated


def test_new_user_query_reasoning_drop_is_not_applied_to_rollouts(tok):
    """The documented case: after a new user query, the template would drop the earlier turns'
    reasoning from a re-rendered history; the token-exact episode keeps what the model sampled.
    The inserted user turn is still exactly the template's rendering of that message."""
    first = "<think>\nFirst thought.\n</think>\n\nHello." + tok.eos_token
    second = "<think>\nSecond thought.\n</think>\n\nBye." + tok.eos_token
    follow_up = [{"role": "user", "content": "And now?"}]

    class FollowUpEnv(ToolEnv):
        def step(self, text):
            self.n += 1
            return StepResult(follow_up if self.n == 1 else [], self.n >= 2)

    task = Task(id="u", messages=[{"role": "user", "content": "Hi."}], tools=TOOLS)
    ep = RolloutEngine(None, tok, lambda t: FollowUpEnv(), SamplingConfig(),
                       backend=ScriptedBackend(tok, [first, second])).rollout([task], k=1)[0]
    held = decode(tok, ep.prompt_ids + ep.completion_ids)
    assert "First thought." in held and "Second thought." in held
    assert ep.completion_ids[len(encode(tok, first)):ep.turn_spans[1][0]] == encode(
        tok, template_tool_turn(tok, ep.messages[:2], follow_up))
    rerendered = apply_template(tok, ep.messages, TOOLS, add_generation_prompt=False)
    assert "First thought." not in rerendered
    assert rerendered == held.replace("<think>\nFirst thought.\n</think>\n\n", "") + "\n"
    # Without a new user query (tool turns only) nothing is dropped: see the replay test above.


# ---------------------------------------------------------------------------------------------
# Parsing generated Qwen3 turns


GENERATED = ('<think>\nMaybe <tool_call>\n{"name": "lookup", "arguments": {"q": "draft"}}\n</tool_call> is wrong.'
             '\nI will look it up.\n</think>\n\n' + call_text("birthplace of Ola Vesk"))


def test_think_is_reasoning_and_only_the_call_after_it_runs(tok):
    text = decode(tok, encode(tok, GENERATED))  # as the engine decodes the sampled ids
    assert text == GENERATED
    thinking, visible = split_reasoning(text)
    assert thinking.startswith("Maybe") and thinking.endswith("I will look it up.")
    executed = []
    turn = run_tool_turn(text, TOOLS, lambda c: (executed.append(c.arguments["q"]) or "Ostmark", True))
    assert executed == ["birthplace of Ola Vesk"] and turn.n_valid == 1 and not turn.n_format_errors
    spans = label_generated_text(text)
    close = text.index("</think>") + len("</think>")
    assert spans[0] == (0, close, "reasoning")
    assert spans[-1] == (text.rindex("<tool_call>"), len(text), "tool_call")


def test_reasoning_whose_opening_tag_is_in_the_prompt():
    """A template may put `<think>` in the generation prompt: the turn then starts inside reasoning."""
    text = "Thinking here.\n</think>\n\n" + call_text("x")
    assert split_reasoning(text) == ("Thinking here.", call_text("x"))
    assert label_generated_text(text)[0] == (0, text.index("</think>") + len("</think>"), "reasoning")
    assert label_generated_text(text)[-1][2] == "tool_call"


def test_qwen3_tool_response_turn_round_trips(tok):
    """The observation the engine inserts parses back to the tool contents (nothing lost or merged)."""
    messages = [{"role": "tool", "name": "lookup", "content": json.dumps({"a": 1})},
                {"role": "tool", "name": "lookup", "content": "plain"}]
    obs = observation_text(tok, messages, TOOLS)
    assert obs == ('\n<|im_start|>user\n<tool_response>\n{"a": 1}\n</tool_response>\n<tool_response>\nplain\n'
                   '</tool_response><|im_end|>\n<|im_start|>assistant\n')
    assert decode(tok, encode(tok, obs)) == obs
