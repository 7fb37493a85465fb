"""Loading a model and tokenizer the same way in every recipe."""

from __future__ import annotations

import torch

from pact_cotrain.models import resolve_model


def load_model_and_tokenizer(name_or_path: str, dtype: str = "bfloat16"):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    return model.eval(), tokenizer
