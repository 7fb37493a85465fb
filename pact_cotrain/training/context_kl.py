"""The trace-context KL diagnostic of PACTTrainer (trainer.py), as a mixin.

    diag/kl_prompt_vs_trace_context_per_token = sum_t m_t (log pi(tau_t|x) - log pi(tau_t|x,h)) / sum_t m_t,
    tau ~ pi(.|x)  (PACT's own prompt-only rollouts), m: generated tokens of traced rows scored in [x; h]

a Monte-Carlo estimate of KL(pi(.|x) || pi(.|x,h)) per token (losses.context_kl_per_token), both passes from
the trainer's current weights. Logged every `context_kl_steps` steps (PACTConfig; counted from 0, so the first
step too): on rows the loss scored only under [x; h] it costs one more forward of x without gradient.
"""

from __future__ import annotations

import math

import torch

from pact_cotrain import losses

CONTEXT_KL = "diag/kl_prompt_vs_trace_context_per_token"
CONTEXT_KL_STEPS = 10  # PACTConfig's default, also used when the trainer is given args without the field


class ContextKLMixin:
    def _log_context_kl(self, model, inputs: dict, passes: dict, prompt_rows, trace_rows, mask, metrics) -> None:
        """Append CONTEXT_KL to `metrics` on a due step, when some traced row was scored in [x; h]."""
        every = getattr(self.args, "context_kl_steps", CONTEXT_KL_STEPS)
        if not every or inputs["step"] % every:
            return
        kl_rows = self._context_kl_rows(inputs, trace_rows)
        if kl_rows.any():
            value = self._context_kl(model, inputs, passes, prompt_rows, kl_rows, mask)
            if not math.isnan(value):
                metrics[CONTEXT_KL].append(value)

    @staticmethod
    def _context_kl_rows(inputs: dict, trace_rows: torch.Tensor) -> torch.Tensor:
        """Rows scored in [x; h] whose task has a trace (an untraced row's [x; h] is x itself)."""
        traced = torch.tensor([t != p for t, p in zip(inputs["trace_contexts"], inputs["prompt_contexts"])])
        return trace_rows.cpu() & traced

    def _context_kl(self, model, inputs: dict, passes: dict, prompt_rows: torch.Tensor, rows: torch.Tensor,
                    mask: torch.Tensor) -> float:
        """CONTEXT_KL on `rows` (losses.context_kl_per_token): the rollouts, drawn from pi(.|x), scored by the
        trainer under x and under [x; h]. The x pass is the loss's where it ran on a row, else one more forward
        without gradient (not counted in forward_tokens: a diagnostic's cost, not the method's)."""
        have = prompt_rows.cpu() & rows if prompt_rows is not None else torch.zeros_like(rows)
        logp_x = passes["logp_prompt"].detach() if have.any() else torch.zeros_like(passes["logp_trace"])
        if self.accelerator.num_processes > 1:
            # The extra forward would be a collective (FSDP's gathers, DDP's buffers) that only some processes
            # run: with several processes the diagnostic keeps to the rows the loss scored in both contexts.
            rows = have
            if not rows.any():
                return float("nan")
        missing = rows & ~have
        if missing.any():
            with torch.no_grad():
                extra = self._score_passes(model, inputs, missing, None, sft=False)["logp_prompt"]
            logp_x = torch.where(missing.unsqueeze(-1).to(logp_x.device), extra, logp_x)
        row_mask = mask * rows.float().unsqueeze(-1).to(mask.device)
        return float(losses.context_kl_per_token(logp_x, passes["logp_trace"].detach(), row_mask))
