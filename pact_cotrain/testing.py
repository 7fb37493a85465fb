"""Tiny, self-contained tokenizer and model builders for tests and examples (no Hub access).

The tokenizer is a byte-level BPE trained in memory on a small corpus with the ChatML special
tokens, so every byte string round-trips and offsets are exact; the model is a randomly
initialised Llama of a few hundred thousand parameters.
"""

from __future__ import annotations

from pact_cotrain.templates import chatml_tool_template

CHATML_SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]

_CORPUS = [
    "Please call given tools to answer the question. Question: Where was Ola Vesk born?",
    '<tool_call>\n{"name": "get_birthplace", "arguments": {"person": "Ola Vesk"}}\n</tool_call>',
    '<tool_response>\n{"birthplace": "Varnhold"}\n</tool_response>',
    "<think>\nTo find where they were born, I will look up the birthplace.\n</think>\n",
    "The answer is Varnhold. system user assistant tool # Tools functions signatures",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ {}[]():,.;!?\"'<>/\\-_=+*&^%$#@~`|",
]


def tiny_tokenizer(vocab_size: int = 600, chat_template: str | None = None):
    """A fast byte-level BPE tokenizer with ChatML special tokens and our tool chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=CHATML_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
    )
    tok.chat_template = chat_template or chatml_tool_template()
    return tok


def tiny_llama(tokenizer, hidden: int = 32, layers: int = 2, seed: int = 0):
    """A randomly initialised Llama sized to the tokenizer, fp32, in eval mode."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def save_tiny_llama_for_vllm(tokenizer, path, seed: int = 0):
    """A random Llama that vLLM can serve (head_dim 64, which every vLLM attention backend supports),
    saved with the tokenizer under `path`. Its init std (0.2, not 0.02) makes the distributions peaked
    enough for greedy decoding to be free of near-ties, so HF and vLLM can be compared token by token."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
                         tie_word_embeddings=True, initializer_range=0.2)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model


def exit_launched_process() -> None:
    """End a torchrun-launched test process after its results are written and printed.

    torch 2.13 on CPU sometimes aborts in its C++ teardown after a gloo run ("terminate called without
    an active exception", SIGABRT, about 1 run in 20, also after destroy_process_group), which fails a
    launch whose checks all passed. Wait for every rank, destroy the group, flush, and leave without
    running the static destructors.
    """
    import os
    import sys

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
