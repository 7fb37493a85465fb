"""HF rollouts record each sampled token's log-prob step by step on the model's device (issue 30 item 6):
the same ids as before, and the log-probs `output_logits=True` gave, log_softmax(raw logits / T)."""

import pytest
import torch

from pact_cotrain.rollout.backends import HFBackend
from pact_cotrain.rollout.engine import RolloutEngine, SamplingConfig
from pact_cotrain.testing import tiny_llama

from test_kv_cache_reuse import TASKS, EchoEnv


class FullLogitsReference:
    """Wraps `model.generate` to also ask for every step's raw logits (the former way of recording) and
    keeps, per call, what that way reported: log_softmax(stacked fp32 logits / T) at the sampled ids."""

    def __init__(self, model):
        self.calls: list[torch.Tensor] = []
        self._generate = model.generate
        model.generate = self

    def __call__(self, **kwargs):
        result = self._generate(**{**kwargs, "output_logits": True})
        scale = kwargs.get("temperature", 1.0) if kwargs["do_sample"] else 1.0
        sampled = result.sequences[:, kwargs["input_ids"].shape[1]:]
        logits = torch.stack(result.logits, dim=1).float().cpu()
        self.calls.append(torch.log_softmax(logits / scale, -1).gather(-1, sampled.cpu().unsqueeze(-1)).squeeze(-1))
        return result


def run(model, tokenizer, reuse, record=False, **sampling):
    cfg = SamplingConfig(max_turns=4, max_new_tokens_per_turn=10, max_completion_tokens=160, **sampling)
    reference = FullLogitsReference(model) if record else None
    engine = RolloutEngine(model, tokenizer, EchoEnv, cfg, reuse_kv_cache=reuse)
    try:
        episodes = engine.rollout(TASKS, k=3, seed=5)
    finally:
        model.__dict__.pop("generate", None)
    return episodes, reference


@pytest.fixture
def eos_prone_model(tokenizer):
    model = tiny_llama(tokenizer, seed=1)
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id] *= 30.0
    return model


@pytest.mark.parametrize("reuse", [True, False])
@pytest.mark.parametrize("sampling", [dict(greedy=True), dict(temperature=1.0), dict(temperature=0.7),
                                      dict(temperature=1.3, top_p=0.8)])
def test_step_by_step_logprobs_equal_full_logits_ones(eos_prone_model, tokenizer, reuse, sampling):
    plain, _ = run(eos_prone_model, tokenizer, reuse, **sampling)
    recorded, reference = run(eos_prone_model, tokenizer, reuse, record=True, **sampling)
    # asking generate for its logits changes nothing it samples: the same ids either way
    assert [e.completion_ids for e in plain] == [e.completion_ids for e in recorded]
    assert len(reference.calls) > 1  # several turns, so the KV-cache path ran when `reuse`
    # the engine's turns, in call order, against what the full-logits way reported for the same call
    got = [torch.tensor(e.logprobs) for e in recorded]
    want = [torch.zeros(len(e.logprobs)) for e in recorded]
    active = list(range(len(recorded)))
    turn_of = [0] * len(recorded)
    for call in reference.calls:  # rows of a call are the episodes still running, in order
        still = [i for i in active if turn_of[i] < len(recorded[i].turn_spans)]
        for row, i in enumerate(still):
            start, end = recorded[i].turn_spans[turn_of[i]]
            want[i][start:end] = call[row, : end - start]
            turn_of[i] += 1
        active = still
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=0)
    assert any(e.logprobs[s] != 0.0 for e in recorded for s, _ in e.turn_spans)


def test_recorder_keeps_one_step_of_vocabulary(model, tokenizer):
    """No [B, T, V] tensor: the recorder holds at most one [B, V] step, and the backend asks generate for no
    logits."""
    seen = {}
    original = model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return original(**kwargs)

    model.generate = spy
    try:
        backend = HFBackend(model, tokenizer.eos_token_id, tokenizer.eos_token_id, reuse_cache=False)
        out = backend.generate([[1, 5, 9], [2, 6]], max_new_tokens=6, temperature=1.0)
    finally:
        del model.generate
    assert not seen.get("output_logits") and not seen.get("output_scores")
    assert all(len(o.token_ids) == len(o.logprobs) for o in out)
