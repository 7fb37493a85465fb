"""Loading a model and tokenizer the same way in every recipe."""

from __future__ import annotations

import torch

from pact_cotrain.errors import UserError
from pact_cotrain.models import resolve_model


def _from_pretrained(load, path: str):
    """`load(path)`; a Hub id that cannot be fetched is the user's to fix (no Hub here, or a typo)."""
    from pathlib import Path

    try:
        return load(path)
    except OSError as exc:
        if Path(path).exists():
            raise  # a local checkpoint that does not load is not an ordinary mistake
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"could not load model {path!r} from the Hugging Face Hub ({first}); "
                        "give a local checkpoint directory or a packaged model name") from None


def load_tokenizer(name_or_path: str):
    """The model's tokenizer, with the end-of-sequence token as padding when it has none."""
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer.from_pretrained, resolve_model(name_or_path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model_and_tokenizer(name_or_path: str, dtype: str = "bfloat16", attn_implementation: str | None = None):
    """`attn_implementation` goes to `from_pretrained`; None leaves transformers' default."""
    from transformers import AutoModelForCausalLM

    path = resolve_model(name_or_path)
    attention = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = _from_pretrained(
        lambda p: AutoModelForCausalLM.from_pretrained(p, dtype=getattr(torch, dtype), **attention), path)
    return model.eval(), load_tokenizer(path)
