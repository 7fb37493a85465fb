"""Generation backends: one assistant turn for a batch of token sequences.

A backend takes token ids (never text) and returns, per sequence, the sampled ids up to and
including the end-of-turn token, and each sampled token's log-probability under the policy
log_softmax(logits / temperature). That is the quantity the trainer recomputes, so old and new
log-probs compare like with like; top-p truncation (off by default) changes what is sampled, not
what is reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass
class TurnOutput:
    token_ids: list[int]
    logprobs: list[float]
    finished: bool  # ended with the end-of-turn token (False: hit max_new_tokens)


class GenerationBackend(Protocol):
    def generate(self, prompts: list[list[int]], max_new_tokens: int, temperature: float,
                 top_p: float, greedy: bool) -> list[TurnOutput]: ...


class HFBackend:
    """Batched `model.generate` with left padding; log-probs from the raw logits."""

    def __init__(self, model, eos_token_id: int, pad_token_id: int, max_batch_size: int = 64):
        self.model, self.eos, self.pad, self.max_batch_size = model, eos_token_id, pad_token_id, max_batch_size

    @torch.no_grad()
    def generate(self, prompts, max_new_tokens, temperature=1.0, top_p=1.0, greedy=False):
        outputs: list[TurnOutput] = []
        for start in range(0, len(prompts), self.max_batch_size):
            outputs += self._generate_batch(prompts[start : start + self.max_batch_size], max_new_tokens,
                                            temperature, top_p, greedy)
        return outputs

    def _generate_batch(self, prompts, max_new_tokens, temperature, top_p, greedy):
        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            attention[row, width - len(ids):] = 1
        sampling = {} if greedy else {"temperature": temperature, "top_p": top_p, "top_k": 0}
        result = self.model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=not greedy,
            eos_token_id=self.eos,
            pad_token_id=self.pad,
            output_logits=True,
            return_dict_in_generate=True,
            **sampling,
        )
        new_ids = result.sequences[:, width:].cpu()
        logits = torch.stack(result.logits, dim=1).float().cpu()  # [B, T_new, V]
        scale = 1.0 if greedy else temperature
        logps = torch.log_softmax(logits / scale, dim=-1).gather(-1, new_ids.unsqueeze(-1)).squeeze(-1)
        outputs = []
        for row in range(len(prompts)):
            ids = new_ids[row].tolist()
            finished = self.eos in ids
            length = ids.index(self.eos) + 1 if finished else len(ids)
            outputs.append(TurnOutput(ids[:length], logps[row, :length].tolist(), finished))
        return outputs
