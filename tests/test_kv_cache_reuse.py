"""Reusing the KV cache across turns changes nothing the trainer sees: same ids, same log-probs."""

import pytest
import torch

from pact_cotrain.data.trace_format import Task
from pact_cotrain.envs.base import StepResult
from pact_cotrain.rollout.engine import RolloutEngine, SamplingConfig
from pact_cotrain.testing import tiny_llama


TOOLS = [{"type": "function", "function": {"name": "echo", "description": "echo",
                                             "parameters": {"type": "object", "properties": {}}}}]


class EchoEnv:
    """Ends after the task's number of turns, so episodes of one batch end at different turns."""

    max_steps = 10

    def __init__(self, task):
        self.steps, self.n = int(task.id.split("-")[1]), 0

    def reset(self, task):
        return task.messages, task.tools

    def step(self, text):
        self.n += 1
        done = self.n >= self.steps
        return StepResult([] if done else [{"role": "tool", "name": "echo", "content": f"{self.n}:{text[:7]}"}], done)

    def metrics(self):
        return {"reward": 0.0}


TASKS = [Task(id=f"t-{steps}", messages=[{"role": "user", "content": "Say something" + "!" * steps}], tools=TOOLS)
         for steps in (2, 4, 3)]


@pytest.fixture
def eos_prone_model(tokenizer):
    """A tiny model whose end-of-turn logit is raised, so sampled turns often end early: their rows
    then carry masked post-end-of-turn columns in the cache."""
    model = tiny_llama(tokenizer, seed=1)
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id] *= 30.0
    return model


def rollouts(model, tokenizer, reuse, **sampling):
    cfg = SamplingConfig(max_turns=4, max_new_tokens_per_turn=10, max_completion_tokens=160, **sampling)
    engine = RolloutEngine(model, tokenizer, EchoEnv, cfg, reuse_kv_cache=reuse)
    episodes = engine.rollout(TASKS, k=3, seed=3)
    return episodes, engine.backend.prefilled_tokens


def assert_same_episodes(cached, plain):
    assert [e.completion_ids for e in cached] == [e.completion_ids for e in plain]
    assert [e.generated_mask for e in cached] == [e.generated_mask for e in plain]
    assert [e.stop_reason for e in cached] == [e.stop_reason for e in plain]
    for a, b in zip(cached, plain):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=1e-4)


def test_greedy_cached_rollouts_equal_full_prefill_rollouts(model, tokenizer):
    cached, cached_prefill = rollouts(model, tokenizer, True, greedy=True)
    plain, plain_prefill = rollouts(model, tokenizer, False, greedy=True)
    assert_same_episodes(cached, plain)
    assert len({len(e.turn_spans) for e in plain}) > 1  # episodes left the batch at different turns
    assert cached_prefill < plain_prefill  # only the new tokens were prefilled


def test_sampled_cached_rollouts_equal_full_prefill_rollouts_with_one_seed(eos_prone_model, tokenizer):
    cached, cached_prefill = rollouts(eos_prone_model, tokenizer, True, temperature=1.0)
    plain, plain_prefill = rollouts(eos_prone_model, tokenizer, False, temperature=1.0)
    assert_same_episodes(cached, plain)
    assert any(e.completion_ids[s:t][-1] == tokenizer.eos_token_id and t - s < 10
               for e in plain for s, t in e.turn_spans)  # some turn ended early: a row with holes
    assert cached_prefill < plain_prefill


def test_cache_is_cleared_between_rollouts(eos_prone_model, tokenizer):
    """A second rollout after a weight change must not see keys of the old weights."""
    cfg = SamplingConfig(greedy=True, max_turns=4, max_new_tokens_per_turn=10, max_completion_tokens=160)
    engine = RolloutEngine(eos_prone_model, tokenizer, EchoEnv, cfg, reuse_kv_cache=True)
    engine.rollout(TASKS, k=2)
    with torch.no_grad():
        for p in eos_prone_model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    again = engine.rollout(TASKS, k=2)
    reference = RolloutEngine(eos_prone_model, tokenizer, EchoEnv, cfg, reuse_kv_cache=False).rollout(TASKS, k=2)
    assert_same_episodes(again, reference)
