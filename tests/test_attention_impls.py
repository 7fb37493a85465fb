"""Scoring is right under every attention implementation it accepts, and refuses the others (issue 13, item 1).

transformers hands a custom 4-D mask to the attention kernel unchanged; eager attention adds it to the
scores, so the packed layouts must give each implementation the mask in the form it reads. Reference:
each `[context ; completion]` scored alone, with no mask (transformers builds the causal one itself).
"""

import importlib.util

import pytest
import torch

from pact_cotrain.testing import tiny_llama
from pact_cotrain.training.scoring import (PackedGroup, check_custom_mask_support, completion_logps, custom_mask,
                                           packed_completion_logps)

TOLERANCE = 1e-5  # fp32


def _flash_reason() -> str | None:
    if importlib.util.find_spec("flash_attn") is None:
        return "flash_attn is not installed"
    if not torch.cuda.is_available():
        return "flash attention needs a CUDA device"
    return None


IMPLEMENTATIONS = ["eager", "sdpa"]

# Several completions per group, groups that share a row (the last two after the first), an empty
# completion, a lone one-completion group (plain causal: no mask) and per-group temperatures.
GROUPS = [PackedGroup([5, 6, 7, 8, 9, 10, 11, 12], [[20, 21, 22], [23, 24], [25, 26, 27, 28]], 0.8),
          PackedGroup([13, 14], [[30, 31, 32]]),
          PackedGroup([15], [[40], [], [41, 42]], 0.5),
          PackedGroup([16, 17, 18], [[50, 51]])]


def model_with(tokenizer, implementation: str):
    model = tiny_llama(tokenizer)
    model.set_attn_implementation(implementation)
    assert model.config._attn_implementation == implementation
    return model


def alone(model, context, completion, temperature=1.0):
    ids = torch.tensor([context + completion])
    logits = model(ids).logits[0, len(context) - 1 : -1].float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)


def max_packed_error(model, forward_per_group: bool) -> float:
    results = packed_completion_logps(model, GROUPS, pad_id=0, forward_per_group=forward_per_group)
    errors = [0.0]
    for g, res in zip(GROUPS, results):
        for comp, (logp, _) in zip(g.completions, res):
            assert logp.shape == (len(comp),)
            if comp:
                errors.append((logp - alone(model, g.context, comp, g.temperature)).abs().max().item())
    return max(errors)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("forward_per_group", [False, True], ids=["packed_rows", "per_group"])
@torch.no_grad()
def test_packed_scoring_matches_one_sequence_at_a_time(tokenizer, implementation, forward_per_group):
    model = model_with(tokenizer, implementation)
    assert max_packed_error(model, forward_per_group) <= TOLERANCE


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@torch.no_grad()
def test_padded_scoring_matches_one_sequence_at_a_time(tokenizer, implementation):
    model = model_with(tokenizer, implementation)
    contexts = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15]]
    completions = [[20, 21, 22], [30, 31, 32, 33, 34], [40]]
    logp, mask, _ = completion_logps(model, contexts, completions, pad_id=0, temperature=0.7)
    for b, (ctx, comp) in enumerate(zip(contexts, completions)):
        assert mask[b].sum().item() == len(comp)
        error = (logp[b, : len(comp)] - alone(model, ctx, comp, 0.7)).abs().max().item()
        assert error <= TOLERANCE


@torch.no_grad()
def test_references_agree_across_implementations(tokenizer):
    """The one-sequence reference itself does not depend on the implementation."""
    eager, sdpa = model_with(tokenizer, "eager"), model_with(tokenizer, "sdpa")
    for g in GROUPS:
        for comp in filter(None, g.completions):
            torch.testing.assert_close(alone(eager, g.context, comp), alone(sdpa, g.context, comp),
                                       atol=TOLERANCE, rtol=0)


@pytest.mark.skipif(_flash_reason() is not None, reason=str(_flash_reason()))
@torch.no_grad()
def test_flash_attention_serves_padded_and_lone_rows_only(tokenizer):
    model = tiny_llama(tokenizer).to("cuda")
    model.set_attn_implementation("flash_attention_2")
    model = model.to(torch.bfloat16)  # flash kernels take half precision only
    logp, _, _ = completion_logps(model, [[5, 6, 7], [8]], [[20, 21], [30, 31, 32]], pad_id=0)
    assert torch.isfinite(logp).all()
    (lone,), = packed_completion_logps(model, [PackedGroup([5, 6, 7], [[20, 21]])], pad_id=0)
    assert torch.isfinite(lone[0]).all()
    with pytest.raises(ValueError, match="flash_attention_2"):
        packed_completion_logps(model, GROUPS, pad_id=0)


@pytest.mark.parametrize("implementation", ["flash_attention_2", "flash_attention_3", "flex_attention", "paged|eager", None])
def test_packed_scoring_refuses_implementations_without_custom_masks(tokenizer, implementation):
    model = tiny_llama(tokenizer)
    model.config._attn_implementation = implementation  # no kernel needed: refused before any forward
    with pytest.raises(ValueError, match="cannot take the custom 4-D mask"):
        packed_completion_logps(model, GROUPS, pad_id=0)
    with pytest.raises(ValueError, match="train.attn_implementation"):
        check_custom_mask_support(implementation)


def test_custom_mask_forms():
    allowed = torch.tensor([[[True, False], [True, True]]])
    assert torch.equal(custom_mask(allowed, "sdpa", torch.float32), allowed[:, None])
    for dtype in (torch.float32, torch.bfloat16):
        additive = custom_mask(allowed, "eager", dtype)
        assert additive.dtype == dtype and additive.shape == (1, 1, 2, 2)
        assert additive[0, 0].tolist() == [[0.0, torch.finfo(dtype).min], [0.0, 0.0]]


TRAIN_SMALL = ["train.k=2", "train.prompts_per_step=1", "data.n_train=2", "sampling.max_new_tokens_per_turn=8",
               "sampling.max_completion_tokens=24", "sampling.max_turns=1", "train.report_to=[]",
               "train.disable_tqdm=true", "train.max_steps=1", "train.save_steps=0"]


def test_config_refuses_an_implementation_before_the_model_loads(tmp_path, monkeypatch):
    import pact_cotrain.recipes.common as common
    from pact_cotrain.config import load_config
    from pact_cotrain.recipes.train import build_trainer

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the attention implementation was checked")

    monkeypatch.setattr(common, "load_model_and_tokenizer", no_load)
    cfg = load_config("pact", TRAIN_SMALL + [f"output_dir={tmp_path}", "train.attn_implementation=flash_attention_2"])
    with pytest.raises(ValueError, match="flash_attention_2"):
        build_trainer(cfg)


def test_trainer_refuses_a_model_whose_attention_cannot_take_the_mask(tmp_path, tokenizer):
    from pact_cotrain.config import load_config
    from pact_cotrain.recipes.train import build_trainer

    model = tiny_llama(tokenizer)
    model.config._attn_implementation = "flash_attention_2"  # as from_pretrained(attn_implementation=...) leaves it
    with pytest.raises(ValueError, match="cannot take the custom 4-D mask"):
        build_trainer(load_config("pact", TRAIN_SMALL + [f"output_dir={tmp_path}"]), model=model, tokenizer=tokenizer)


def test_configured_eager_attention_trains(tmp_path, tokenizer):
    from pact_cotrain.config import load_config
    from pact_cotrain.recipes.train import build_trainer

    cfg = load_config("pact", TRAIN_SMALL + [f"output_dir={tmp_path}", "train.attn_implementation=eager"])
    trainer = build_trainer(cfg, model=tiny_llama(tokenizer), tokenizer=tokenizer)
    assert trainer.model.config._attn_implementation == "eager"
    trainer.train()
    assert trainer.state.global_step == 1
