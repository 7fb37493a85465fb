"""Loading a model and tokenizer the same way in every recipe."""

from __future__ import annotations

import torch

from pact_cotrain.models import resolve_model


def load_tokenizer(name_or_path: str):
    """The model's tokenizer, with the end-of-sequence token as padding when it has none."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(name_or_path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model_and_tokenizer(name_or_path: str, dtype: str = "bfloat16"):
    from transformers import AutoModelForCausalLM

    path = resolve_model(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    return model.eval(), load_tokenizer(path)
