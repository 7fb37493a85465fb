"""Model shapes for planning, without downloading anything.

A shape comes from a local `config.json` (a checkpoint directory, or a packaged model once it is
prepared) or from `KNOWN_SHAPES`, a small table copied from the public config.json files of common
dense decoders. Parameter counts follow from the shape (dense Llama/Qwen-style decoder, gated MLP):

    per layer:  d (d_attn + 2 d_kv) + d_attn d  [q, k, v, o]  + 3 d d_ff  [gate, up, down]  + 2 d  [norms]
    total:      L * per layer + V d (x2 when the output head is not tied to the embedding) + d

with d = hidden size, d_attn = n_heads * head_dim, d_kv = n_kv_heads * head_dim, V = vocab size,
L = layers. The input embedding is a lookup, not a matmul, so the parameters a token's forward
multiplies by are N_mm = N - V d (the output head's V d stays in, tied or not).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pact_cotrain.errors import UserError


@dataclass(frozen=True)
class ModelShape:
    name: str
    n_layers: int
    hidden: int
    intermediate: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool
    attention_bias: bool = False

    @property
    def d_attn(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def d_kv(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def layer_params(self) -> int:
        d = self.hidden
        attention = d * (self.d_attn + 2 * self.d_kv) + self.d_attn * d
        if self.attention_bias:
            attention += self.d_attn + 2 * self.d_kv
        return attention + 3 * d * self.intermediate + 2 * d

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def n_params(self) -> int:
        heads = 1 if self.tied_embeddings else 2
        return self.n_layers * self.layer_params + heads * self.embedding_params + self.hidden

    @property
    def matmul_params(self) -> int:
        """N_mm: parameters a token's forward multiplies by (everything but the embedding lookup)."""
        return self.n_params - self.embedding_params

    def kv_bytes_per_token(self, bytes_per_value: float) -> float:
        """KV-cache bytes one token holds: keys and values of every layer."""
        return 2 * self.n_layers * self.d_kv * bytes_per_value


def _shape(name, layers, hidden, intermediate, heads, kv_heads, head_dim, vocab, tied) -> ModelShape:
    return ModelShape(name, layers, hidden, intermediate, heads, kv_heads, head_dim, vocab, tied)


# From each model's public config.json (num_hidden_layers, hidden_size, intermediate_size,
# num_attention_heads, num_key_value_heads, head_dim, vocab_size, tie_word_embeddings).
KNOWN_SHAPES = {s.name.lower(): s for s in (
    _shape("Qwen3-0.6B", 28, 1024, 3072, 16, 8, 128, 151936, True),
    _shape("Qwen3-1.7B", 28, 2048, 6144, 16, 8, 128, 151936, True),
    _shape("Qwen3-4B", 36, 2560, 9728, 32, 8, 128, 151936, True),
    _shape("Qwen3-8B", 36, 4096, 12288, 32, 8, 128, 151936, False),
    _shape("SmolLM2-135M", 30, 576, 1536, 9, 3, 64, 49152, True),
    _shape("SmolLM2-360M", 32, 960, 2560, 15, 5, 64, 49152, True),
    _shape("SmolLM2-1.7B", 24, 2048, 8192, 32, 32, 64, 49152, True),
    _shape("Llama-3.2-1B", 16, 2048, 8192, 32, 8, 64, 128256, True),
    _shape("Llama-3.2-3B", 28, 3072, 8192, 24, 8, 128, 128256, True),
)}
# Variants with the base model's shape (post-training changes the weights, not the shape).
_SUFFIXES = ("-instruct-2507", "-thinking-2507", "-instruct", "-base", "-fp8", "-it")


def table_key(model: str) -> str:
    """`Qwen/Qwen3-4B-Instruct-2507` -> `qwen3-4b`; `smollm2-135m-instruct` -> `smollm2-135m`."""
    key = model.rstrip("/").rsplit("/", 1)[-1].lower()
    changed = True
    while changed:
        changed = False
        for suffix in _SUFFIXES:
            if key.endswith(suffix):
                key, changed = key[: -len(suffix)], True
    return key


def shape_from_config(config: dict, name: str) -> ModelShape:
    """A shape from a transformers config.json mapping (dense decoders only)."""
    if config.get("num_experts") or config.get("num_local_experts"):
        raise UserError(f"{name}: mixture-of-experts models are not modelled by the planner (dense decoders only)")
    try:
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        return ModelShape(
            name=name,
            n_layers=int(config["num_hidden_layers"]),
            hidden=hidden,
            intermediate=int(config["intermediate_size"]),
            n_heads=heads,
            n_kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            vocab=int(config["vocab_size"]),
            tied_embeddings=bool(config.get("tie_word_embeddings", False)),
            attention_bias=bool(config.get("attention_bias", False)),
        )
    except KeyError as exc:
        raise UserError(f"{name}: config.json has no {exc.args[0]}; the planner needs a decoder's shape "
                        f"(num_hidden_layers, hidden_size, intermediate_size, num_attention_heads, vocab_size)") from None


def local_model_dir(model: str) -> Path | None:
    """The model's local directory, without preparing or downloading: a directory as given, or a
    packaged model that is already prepared; None otherwise."""
    from pact_cotrain.models import REGISTRY, is_prepared, model_dir

    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if model in REGISTRY and is_prepared(model):
        return model_dir(model)
    return None


def model_shape(model: str) -> tuple[ModelShape, str]:
    """(shape, where it came from) for a config's `model:` value."""
    folder = local_model_dir(model)
    if folder is not None:
        config = folder / "config.json"
        if not config.is_file():
            raise UserError(f"model directory {model} has no config.json; the planner reads the model's shape "
                            f"from it (or use a model of the shape table: {', '.join(s.name for s in KNOWN_SHAPES.values())})")
        return shape_from_config(json.loads(config.read_text()), model), f"{config}"
    key = table_key(model)
    if key in KNOWN_SHAPES:
        return KNOWN_SHAPES[key], f"built-in table ({KNOWN_SHAPES[key].name}'s public config.json)"
    raise UserError(f"unknown model {model!r} for planning: not in the shape table "
                    f"({', '.join(s.name for s in KNOWN_SHAPES.values())}) and not a local directory with a "
                    f"config.json; give model=DIR (a checkpoint directory)")
