"""The rollout engine returns exactly the tokens it sampled, with their log-probs."""

import torch

from pact_cotrain.data.trace_format import Task
from pact_cotrain.envs.base import StepResult
from pact_cotrain.render import apply_template, encode
from pact_cotrain.rollout.engine import RolloutEngine, SamplingConfig, component_token_counts

TOOLS = [{"type": "function", "function": {"name": "echo", "description": "echo",
                                             "parameters": {"type": "object", "properties": {}}}}]


class CountingEnv:
    """Answers every turn with a tool message; ends after `steps` turns."""

    max_steps = 10

    def __init__(self, steps=3):
        self.steps, self.n = steps, 0

    def reset(self, task):
        return task.messages, task.tools

    def step(self, text):
        self.n += 1
        done = self.n >= self.steps
        msgs = [] if done else [{"role": "tool", "name": "echo", "content": f"step {self.n}: {len(text)} chars"}]
        return StepResult(msgs, done, reward=0.1 * self.n)

    def metrics(self):
        return {"reward": float(self.n)}


def make_task(trace_answer="A"):
    return Task(id="t0", messages=[{"role": "user", "content": "Say something."}], tools=TOOLS,
                trace=[{"role": "assistant", "content": trace_answer}])


def engine(model, tokenizer, **kw):
    cfg = SamplingConfig(max_new_tokens_per_turn=12, max_completion_tokens=200, **kw)
    return RolloutEngine(model, tokenizer, lambda task: CountingEnv(), cfg)


def rescore(model, prompt_ids, completion_ids, temperature=1.0):
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1 : -1].float()
    return torch.log_softmax(logits / temperature, -1).gather(-1, ids[0, len(prompt_ids):, None]).squeeze(-1)


def test_rescoring_reproduces_sampling_logprobs(model, tokenizer):
    episodes = engine(model, tokenizer, temperature=0.7).rollout([make_task()], k=3, seed=0)
    assert len(episodes) == 3
    for ep in episodes:
        assert len(ep.completion_ids) == len(ep.logprobs) == len(ep.generated_mask)
        assert ep.n_generated > 0 and len(ep.turn_spans) >= 1
        new = rescore(model, ep.prompt_ids, ep.completion_ids, 0.7)
        gen = torch.tensor(ep.generated_mask, dtype=torch.bool)
        torch.testing.assert_close(new[gen], torch.tensor(ep.logprobs)[gen], atol=1e-4, rtol=1e-4)
        # Inserted tokens are never model tokens.
        assert all(lp == 0.0 for lp, g in zip(ep.logprobs, ep.generated_mask) if not g)


def test_prompt_ids_are_the_rendered_prompt(model, tokenizer):
    task = make_task()
    ep = engine(model, tokenizer).rollout([task], k=1, seed=0)[0]
    assert ep.prompt_ids == encode(tokenizer, apply_template(tokenizer, task.messages, TOOLS, True))


def test_multi_turn_inserts_observations_as_tokens(model, tokenizer):
    ep = engine(model, tokenizer).rollout([make_task()], k=1, seed=1)[0]
    # Either the env ended the episode after 3 turns or a limit did; with 3 turns there are 2 observations.
    if ep.stop_reason == "done":
        assert len(ep.turn_spans) == 3
        inserted = tokenizer.decode([t for t, g in zip(ep.completion_ids, ep.generated_mask) if not g])
        assert "step 1:" in inserted and "step 2:" in inserted and "<tool_response>" in inserted
    # Each turn span is entirely sampled tokens, and everything sampled is inside a turn.
    in_turn = [0] * len(ep.completion_ids)
    for s, e in ep.turn_spans:
        assert all(ep.generated_mask[s:e])
        in_turn[s:e] = [1] * (e - s)
    assert in_turn == ep.generated_mask
    counts = component_token_counts(ep, tokenizer)
    assert counts["reasoning"] + counts["tool_call"] + counts["answer"] == ep.n_generated


def test_limits_end_episodes_cleanly(model, tokenizer):
    eng = RolloutEngine(model, tokenizer, lambda task: CountingEnv(steps=100),
                        SamplingConfig(max_turns=2, max_new_tokens_per_turn=5, max_completion_tokens=400))
    for ep in eng.rollout([make_task()], k=4, seed=0):
        assert ep.stop_reason in {"max_turns", "max_new_tokens_per_turn"}
        assert len(ep.turn_spans) <= 2
    eng = RolloutEngine(model, tokenizer, lambda task: CountingEnv(steps=100),
                        SamplingConfig(max_turns=50, max_new_tokens_per_turn=8, max_completion_tokens=30))
    for ep in eng.rollout([make_task()], k=2, seed=0):
        assert len(ep.completion_ids) <= 30 and ep.stop_reason != ""


def test_expert_trace_does_not_change_rollouts(model, tokenizer):
    a = engine(model, tokenizer).rollout([make_task("one answer")], k=2, seed=5)
    b = engine(model, tokenizer).rollout([make_task("a completely different trace")], k=2, seed=5)
    assert [e.completion_ids for e in a] == [e.completion_ids for e in b]
    assert [e.prompt_ids for e in a] == [e.prompt_ids for e in b]


def test_greedy_is_deterministic(model, tokenizer):
    a = engine(model, tokenizer, greedy=True).rollout([make_task()], k=2, seed=1)
    b = engine(model, tokenizer, greedy=True).rollout([make_task()], k=2, seed=2)
    assert a[0].completion_ids == a[1].completion_ids == b[0].completion_ids
