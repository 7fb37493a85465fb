"""Every log-prob pass of a PACTTrainer step (trainer.py), as a mixin: the scoring passes the loss backpropagates
through (`_score_passes`: rollouts after x and after [x; h], expert traces for SFT, in one packed call), and the
passes without gradient: pi_old's (`_old_logps`, when a batch is reused or a teacher is needed) and pi_ref's
(`_reference_logps`, for the KL penalty). Under sharding the number of no-gradient passes is agreed across
processes (distributed.py, item 4). The trainer's constructor sets what is used here (`num_generations`,
`pad_id`, `forward_per_group`, `micro_batch_tokens`, `method`, `sampling`, `ref_model`, `_pad_parts`)."""

from __future__ import annotations

import torch

from pact_cotrain.training import distributed, microbatch
from pact_cotrain.training.scoring import PackedGroup, packed_completion_logps


class ScoringPassesMixin:
    def _rollout_temperature(self) -> float:
        return 1.0 if self.sampling.greedy else self.sampling.temperature

    def _score_passes(self, model, inputs: dict, prompt_rows: torch.Tensor | None, trace_rows: torch.Tensor | None,
                      sft: bool) -> dict:
        """Every scoring pass of a step in one call, before one backward, with shared prefixes: the K
        rollouts of a prompt share its context, so each context is computed once and its K completions
        are packed after it (`packed_completion_logps`). Rollout
        tokens are scored after the prompt-only context for `prompt_rows` and after the trace-conditioned
        context for `trace_rows`; expert traces for SFT. Rollout passes come back as full [B, C]
        tensors with zeros in unselected rows."""
        k = self.num_generations
        groups, owners = [], []  # owners[g] = (kind, [row indices]) of group g's completions
        for kind, rows in (("prompt", prompt_rows), ("trace", trace_rows)):
            if rows is None:
                continue
            source = inputs["prompt_contexts"] if kind == "prompt" else inputs["trace_contexts"]
            selected = rows.nonzero().flatten().tolist()
            # A row's group in the step: a micro-batch re-indexes its rows and says their groups.
            group_of = inputs.get("row_group") or [i // k for i in range(len(inputs["completions"]))]
            for prompt_index in sorted({group_of[i] for i in selected}):
                members = [i for i in selected if group_of[i] == prompt_index]
                groups.append(PackedGroup(source[members[0]], [inputs["completions"][i] for i in members],
                                          self._rollout_temperature()))
                owners.append((kind, members))
        if sft:
            for j, (ctx, target) in enumerate(zip(inputs["sft_contexts"], inputs["sft_targets"])):
                groups.append(PackedGroup(ctx, [target], 1.0))
                owners.append(("sft", [j]))
        results = packed_completion_logps(model, groups, self.pad_id, with_entropy=True,
                                          forward_per_group=self.forward_per_group,
                                          entropy_grad=self.method.entropy_coef > 0 and torch.is_grad_enabled())

        out: dict = {}
        device = self.accelerator.device
        for kind in ("prompt", "trace", "sft"):
            scored = {row: pair for (owner, rows), res in zip(owners, results) if owner == kind
                      for row, pair in zip(rows, res)}
            if not scored:
                continue
            n_rows = len(inputs["completions"]) if kind != "sft" else len(inputs["sft_targets"])
            width = (inputs["loss_mask"] if kind != "sft" else inputs["sft_toolcall_mask"]).shape[1]
            zero = torch.zeros(width, device=device)
            out[f"logp_{kind}"] = torch.stack([_fit1(scored[r][0], width) if r in scored else zero
                                               for r in range(n_rows)])
            out[f"entropy_{kind}"] = torch.stack([_fit1(scored[r][1], width) if r in scored else zero
                                                  for r in range(n_rows)])
        if sft:
            out["n_sft_tokens"] = sum(len(t) for t in inputs["sft_targets"])
        # tokens through the model in this forward (each shared context once, unpadded): what a step
        # processes, the trace-conditioned contexts and expert traces included
        out["n_forward_tokens"] = sum(len(g.context) + sum(map(len, g.completions)) for g in groups)
        return out

    def _reference_logps(self, batch: dict) -> torch.Tensor:
        """pi_ref's log-probs of the rollout tokens after the prompt-only context (no gradient): TRL's
        `ref_model` (made by GRPOTrainer when beta > 0), or under PEFT the model with its adapter off. Its
        pass count is agreed across processes like every no-gradient pass (distributed.py, item 4)."""
        parts = microbatch.rows_by_budget(batch, self.micro_batch_tokens, self.num_generations, "prompt")
        n_passes = distributed.agreed_counts(self.accelerator, "reference pass", self.state.global_step,
                                             {"prompt": len(parts)}, force=self._pad_parts)["prompt"]
        if self.ref_model is not None:
            return self._old_logps(batch, "prompt", parts, n_passes, model=self.ref_model)
        with self.accelerator.unwrap_model(self.model).disable_adapter():
            return self._old_logps(batch, "prompt", parts, n_passes)

    def _old_logps(self, batch: dict, kind: str, parts: list[list[int]], n_passes: int, model=None) -> torch.Tensor:
        """pi_old's log-probs of the rollout tokens in one context, for the rows of `parts` (no gradient;
        `microbatch.rows_by_budget`), zeros elsewhere, in `n_passes` forwards: the agreed count
        (distributed.py, item 4), whose passes beyond this process's parts repeat its first row and are
        discarded. `model`: another model's (the reference's) instead of the policy's."""
        k = self.num_generations
        out = torch.zeros(batch["loss_mask"].shape, device=self.accelerator.device)
        filler = [0]
        for i in range(n_passes):
            rows = parts[i] if i < len(parts) else filler
            part = microbatch.slice_batch(batch, microbatch.MicroBatch(tuple(rows), ()), k)
            every = torch.ones(len(rows), dtype=torch.bool)
            with torch.no_grad():
                passes = self._score_passes(model or self.model, part, every if kind == "prompt" else None,
                                            every if kind == "trace" else None, sft=False)
            if i < len(parts):
                logp = passes[f"logp_{kind}"]
                out[rows, : logp.shape[1]] = logp
        return out.detach()


def _fit1(t: torch.Tensor, width: int) -> torch.Tensor:
    """Right-pad (zeros) or cut a 1-D tensor to `width`."""
    if t.shape[0] >= width:
        return t[:width]
    return torch.nn.functional.pad(t, (0, width - t.shape[0]))
