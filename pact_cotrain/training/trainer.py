"""PACTTrainer: TRL's GRPOTrainer, fed by our token-exact multi-turn rollout engine.

TRL provides the loop, the optimiser and scheduler, accelerate (DDP, DeepSpeed, FSDP), PEFT,
logging and checkpoint/resume. We override these of its extension points:

* `_prepare_inputs`: build one step's batch (rollouts, rewards, group advantages, anchoring
  draw, old log-probs when a batch is reused, expert-trace SFT targets) from the sampled prompts;
* `compute_loss`: L = rl_coef * L_RL(q) + sft_coef * L_SFT(s), from `pact_cotrain.losses`;
* `training_step`: with `micro_batch_tokens`, TRL's step once per micro-batch (exact accumulation);
* `_save_checkpoint`, `_get_train_sampler`, `train`: TRL's checkpoint, written to a staging directory and
  renamed into place, with the sampler's state for an exact resume (exact_resume.py).

The weights rollouts sample from (a dtype copy, an unsharded copy, a vLLM engine) are in rollout_policy.py;
the log-prob passes (with gradient, pi_old's, pi_ref's) in passes.py; the trace-context KL diagnostic in
context_kl.py.

One generation batch is one optimiser step (steps_per_generation = gradient accumulation = 1);
`num_iterations` > 1 reuses it with an old-policy pass. `micro_batch_tokens` splits the step's
forward/backward into micro-batches whose gradients accumulate to the unsplit step's
(`training_step`, `pact_cotrain.training.microbatch`). Every random draw of a step (sampling,
anchoring) is seeded from (seed, global_step), so a resumed run repeats the same steps. With several
processes each rolls out its own prompts and the update is the single process's over all of them
(`pact_cotrain.training.distributed`).
"""

from __future__ import annotations

import math
import time

import torch
from trl import GRPOConfig, GRPOTrainer

from pact_cotrain import losses
from pact_cotrain.data.trace_format import Task
from pact_cotrain.render import prompt_ids, render_trace_target
from pact_cotrain.rewards.episode import EpisodeReward
from pact_cotrain.rewards.user import fill_lost_rewards, reward_metrics, score_batch
from pact_cotrain.rollout.engine import Episode, RolloutEngine, SamplingConfig
from pact_cotrain.training import distributed, microbatch
from pact_cotrain.training.exact_resume import ExactResumeMixin
from pact_cotrain.training.checkpoints import RunError
from pact_cotrain.training.methods import MethodConfig, StepPlan, plan_step
from pact_cotrain.training.context_kl import ContextKLMixin
from pact_cotrain.training.passes import ScoringPassesMixin
from pact_cotrain.training.rollout_policy import RolloutPolicyMixin


class NonFiniteLossError(RunError, FloatingPointError):
    """A step whose loss is not finite: the run stops with one line (steps counted from 1)."""


def step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7_919) % (2**31 - 1)


class PACTTrainer(ExactResumeMixin, RolloutPolicyMixin, ScoringPassesMixin, ContextKLMixin, GRPOTrainer):
    def __init__(self, model, args: GRPOConfig | None = None, train_dataset=None, reward_funcs=None,
                 processing_class=None, peft_config=None, callbacks=None, tools=None, environment_factory=None,
                 mcp_servers=None, *, tasks: list[Task] | None = None, env_factory=None,
                 method: MethodConfig | None = None, sampling: SamplingConfig | None = None,
                 reward: EpisodeReward | None = None,
                 rollout_dtype: str | None = None, rollout_backend: str = "hf", vllm_kwargs: dict | None = None,
                 forward_per_group: bool | None = None, micro_batch_tokens: int | None = None,
                 generation_batch_size: int | None = None, **kwargs):
        """TRL's GRPOTrainer arguments with TRL's meaning (`pact_cotrain.training.api`: a PACTConfig or
        GRPOConfig, rows or a Dataset, tools, environment_factory, reward_funcs, plus mcp_servers).
        The keywords from `tasks` on are the internal form those are normalised into."""
        if tasks is None:
            from pact_cotrain.training.api import normalise

            internal = normalise(model, args, train_dataset, reward_funcs, processing_class, tools,
                                 environment_factory, mcp_servers)
            model, args, tasks, train_dataset, processing_class = (
                internal.pop(key) for key in ("model", "args", "tasks", "train_dataset", "processing_class"))
            env_factory, method, sampling, reward = (internal.pop(key) for key in
                                                     ("env_factory", "method", "sampling", "reward"))
            rollout_dtype, rollout_backend, vllm_kwargs, forward_per_group, micro_batch_tokens, \
                generation_batch_size = (internal.pop(key) for key in (
                    "rollout_dtype", "rollout_backend", "vllm_kwargs", "forward_per_group", "micro_batch_tokens",
                    "generation_batch_size"))
        elif tools or environment_factory or reward_funcs or mcp_servers:
            raise ValueError("the internal form (tasks=...) takes env_factory and reward, not TRL's tools, "
                             "environment_factory, reward_funcs or mcp_servers")
        if args.steps_per_generation not in (None, 1) or args.gradient_accumulation_steps != 1:
            raise ValueError("PACTTrainer takes one optimiser step per generation batch: "
                             "set steps_per_generation=1 and gradient_accumulation_steps=1 "
                             "(train.micro_batch_tokens splits a step into micro-batches)")
        if micro_batch_tokens is not None and micro_batch_tokens < 1:
            raise ValueError(f"train.micro_batch_tokens must be >= 1 or null, got {micro_batch_tokens}")
        microbatch.generation_chunks(0, args.num_generations, generation_batch_size)  # refuses a bad size now
        self.micro_batch_tokens = micro_batch_tokens
        self.generation_batch_size = generation_batch_size
        # method.beta > 0: TRL's GRPOTrainer loads `ref_model` from the policy's config path (args.beta = method.beta,
        # recipes/train.py). A policy built in memory has no path: its reference is a frozen copy made here.
        reference_in_memory = args.beta > 0 and not getattr(getattr(model, "config", None), "_name_or_path", "")
        if reference_in_memory:
            args.beta = 0.0
        super().__init__(model=model, reward_funcs=[reward], args=args, train_dataset=train_dataset,
                         processing_class=processing_class, peft_config=peft_config, callbacks=callbacks, **kwargs)
        if reference_in_memory:
            import copy

            self.ref_model = copy.deepcopy(self.accelerator.unwrap_model(self.model)).eval().requires_grad_(False)
        self.tasks = tasks
        self.method = method
        self.sampling = sampling
        self.episode_reward = reward
        self.env_factory = env_factory
        self.pad_id = processing_class.pad_token_id if processing_class.pad_token_id is not None \
            else processing_class.eos_token_id
        self._prompt_cache: dict[tuple, list[int]] = {}
        self._target_cache: dict[str, object] = {}
        # Rollouts from a copy of the policy in `rollout_dtype` (e.g. bfloat16), re-synced from the
        # trained weights before every rollout, as an inference engine would hold its own weights.
        self.rollout_dtype = getattr(torch, rollout_dtype) if rollout_dtype else None
        self._rollout_copy = None
        if rollout_backend not in ("hf", "vllm"):
            raise ValueError(f"train.rollout_backend must be hf or vllm, got {rollout_backend!r}")
        self.rollout_backend = rollout_backend
        # Scoring: one forward per shared-prefix group (no padding) or one batched forward (see
        # `packed_completion_logps`). Default: per group on CPU, where batching buys nothing.
        self.forward_per_group = self.accelerator.device.type == "cpu" if forward_per_group is None \
            else forward_per_group
        distributed.check_scoring_layout(self.accelerator, self.forward_per_group)
        # Pad every process's micro-batch count to the largest (distributed.py, item 4): automatic under
        # sharding; tests set it under DDP, where it changes nothing but the work done.
        self._pad_parts = False
        from pact_cotrain.training.scoring import attn_implementation, check_custom_mask_support

        check_custom_mask_support(attn_implementation(self.model))  # packed scoring's 4-D mask (issue 13)
        self.vllm_kwargs = dict(vllm_kwargs or {})
        self._vllm = None
        self._vllm_synced_step: int | None = None
        # Issue 16: no non-finite update is applied or saved; the sampler's state travels in checkpoints.
        from pact_cotrain.training.guards import NonFiniteGuard

        self.add_callback(NonFiniteGuard(self))
        from pact_cotrain.training.graceful_stop import GracefulStop

        self.graceful_stop = GracefulStop(self)  # issue 31: SIGTERM/SIGINT save a checkpoint, then stop
        self.add_callback(self.graceful_stop)

    # ------------------------------------------------------------------ batch construction

    def _trace_context(self, episode: Episode, task: Task, view: str) -> list[int]:
        """[x; h] built from the prompt the episode was rolled out from (`env.reset()`'s messages and
        tools, which ToolHop's free and direct scenarios rewrite), not from task.messages: the two
        contexts an episode is scored under then differ by h alone."""
        if episode.env_messages is None:
            raise ValueError(f"an episode of task {task.id} records no prompt messages (Episode.env_messages)")
        key = (task.id, view, repr((episode.env_messages, episode.env_tools)))
        if key not in self._prompt_cache:
            self._prompt_cache[key] = prompt_ids(self.processing_class, task, view, episode.env_messages,
                                                 episode.env_tools)
        return self._prompt_cache[key]

    def _target(self, task: Task):
        if task.id not in self._target_cache:
            self._target_cache[task.id] = render_trace_target(self.processing_class, task)
        return self._target_cache[task.id]

    def _prepare_inputs(self, generation_batch):
        if isinstance(generation_batch, dict) and generation_batch.get("micro_batch"):
            return generation_batch  # a part of a step's batch, already built (`training_step`)
        if not self.model.training:
            return self._build_batch(generation_batch)
        if self._step % self.num_iterations == 0 or self._buffered_inputs is None:
            self._buffered_inputs = [self._build_batch(generation_batch)]
        return self._buffered_inputs[0]

    def _batch_tasks(self, rows) -> list[Task]:
        k = self.num_generations
        indices = [row["task_index"] for row in rows]
        groups = [indices[i : i + k] for i in range(0, len(indices), k)]
        if any(len(set(g)) != 1 or len(g) != k for g in groups):
            raise RuntimeError(f"expected each prompt repeated {k} times consecutively, got {indices}")
        return [self.tasks[g[0]] for g in groups]

    def _build_batch(self, rows) -> dict:
        step, total = self.state.global_step, max(self.state.max_steps, 1)
        tasks = self._batch_tasks(rows)
        plan = plan_step(self.method, step, total)
        batch: dict = {"plan": plan, "task_ids": [t.id for t in tasks], "step": step}
        seed = step_seed(self.args.seed, step)
        if plan.rl:
            batch.update(self._rl_batch(tasks, plan, seed))
        if plan.sft_coef > 0:
            batch.update(self._sft_batch(tasks, plan))
        # Several processes: each loss scaled by N * D_r / D, D the step's normaliser over every process.
        batch.update(distributed.loss_scales(
            self.accelerator, batch, plan.rl, self.method.aggregation, self.sampling.max_completion_tokens,
            (plan.toolcall_weight, plan.answer_weight) if plan.sft_coef > 0 else None))
        return batch

    def _rl_batch(self, tasks: list[Task], plan: StepPlan, seed: int) -> dict:
        k = self.num_generations
        # The engine (vLLM, or the policy / its rollout copy for HF) is prepared and synced untimed.
        backend = self.vllm_backend() if self.rollout_backend == "vllm" else None
        policy = None if backend is not None else self._rollout_policy(self.accelerator.unwrap_model(self.model))
        engine = RolloutEngine(policy, self.processing_class, self.env_factory, self.sampling, backend=backend)
        was_training = policy is not None and policy.training
        if policy is not None:
            policy.eval()
        started = time.perf_counter()
        # No autocast here: decoding is memory-bound, and autocast would re-cast every weight at every
        # token. Sampling log-probs only feed diagnostics; pi_old comes from the training pass.
        # `generation_batch_size` rollouts at a time (whole groups), each chunk with its own seed.
        # With several processes, chunk c of process r is the single process's chunk r * C + c (distributed.py).
        episodes = []
        chunks = microbatch.generation_chunks(len(tasks), k, self.generation_batch_size)
        rank, n_processes = distributed.world(self.accelerator)
        for c, chunk in enumerate(chunks):
            chunk_seed = distributed.rollout_chunk_seed(seed, c, len(chunks), rank)
            episodes += engine.rollout(tasks[chunk], k=k, seed=chunk_seed, context_trace_view=plan.rollout_trace_view)
        rollout_seconds = time.perf_counter() - started
        self.rollouts_finished()  # a sleeping vLLM engine frees the GPU for training (rollout_policy.py)
        if policy is not None:
            policy.train(was_training)

        by_id = {t.id: t for t in tasks}
        # A user's reward_funcs are called on the batch in TRL's convention (rewards/user.py); an episode lost
        # to a faulty reward function (NaN) takes its group's mean and no gradient, and is counted.
        scored = score_batch(self.episode_reward, episodes, [by_id[ep.task_id] for ep in episodes],
                             trainer_state=self.state)
        rewards, lost = fill_lost_rewards(torch.tensor([s["reward"] for s in scored], dtype=torch.float), k)
        for key, value in reward_metrics(scored).items():
            self._metrics["train"][key].append(value)
        advantages = losses.group_advantages(rewards, k)
        if self.method.reward == "matchtir" and self.method.turn_level_advantages:
            advantages = self._turn_level_advantages(episodes, scored, k)
        advantages[lost] = 0.0
        generator = torch.Generator().manual_seed(seed + 1)
        if self.method.anchor_mode == "mixture":
            anchor = torch.full((len(tasks),), plan.anchor_q >= 1.0)
        else:
            # drawn for the whole step's prompts (every process's), this process keeping its share
            anchor = distributed.local_share(losses.draw_anchor_mask(len(tasks) * n_processes, plan.anchor_q,
                                                                     generator), rank, n_processes)
        # An untraced prompt has no h to condition on: anchored (b_x = 1, prompt-only GRPO) whatever the
        # draw; the traced prompts keep theirs (the generator is consumed the same way).
        traced = torch.tensor([bool(t.trace) for t in tasks], dtype=torch.bool)
        anchor = losses.expand_to_rollouts(anchor | ~traced, k)
        context_view = plan.rollout_trace_view or self.method.trace_view
        # [x; h] is rendered only for rows scored in it (none under GRPO, whose every prompt is anchored).
        # Elsewhere it is x itself: for an untraced prompt, h is empty and so L_TC = L_GRPO there.
        _, trace_rows = self._scoring_rows({"anchor": anchor}, plan)
        if plan.opsd:  # OPSD's teacher reads [x; h] on every row (a no-gradient pass, below)
            trace_rows = torch.ones_like(trace_rows)
        batch = {
            "episodes": episodes,
            "prompt_contexts": [ep.prompt_ids for ep in episodes],
            "trace_contexts": [self._trace_context(ep, by_id[ep.task_id], context_view)
                               if scored_in_trace and by_id[ep.task_id].trace else ep.prompt_ids
                               for ep, scored_in_trace in zip(episodes, trace_rows.tolist())],
            "completions": [ep.completion_ids for ep in episodes],
            "sampling_logps": _pad([ep.logprobs for ep in episodes], 0.0, torch.float),
            "loss_mask": _pad([ep.generated_mask for ep in episodes], 0, torch.float) * (~lost).float().unsqueeze(1),
            "rewards": rewards,
            "advantages": advantages,
            "anchor": anchor,
            "rollout_seconds": rollout_seconds,
        }
        if self.method.beta > 0:  # KL to the reference policy (method.beta): pi_ref's log-probs, fixed
            batch["ref_logp_prompt"] = self._reference_logps(batch)
        if plan.opsd:  # the teacher: the current weights with h in context, no gradient through it
            parts = microbatch.rows_by_budget(batch, self.micro_batch_tokens, k, "trace")
            n_passes = distributed.agreed_counts(self.accelerator, "OPSD teacher pass", self.state.global_step,
                                                 {"trace": len(parts)}, force=self._pad_parts)["trace"]
            with torch.no_grad():
                batch["teacher_logp"] = self._old_logps(batch, "trace", parts, n_passes)
        if self.num_iterations > 1:  # the batch is reused: freeze pi_old's log-probs now
            # Both passes' part counts agreed across processes (distributed.py, item 4): a process none of
            # whose rows is scored in [x; h] runs that pass on fillers when another process runs it.
            # (OPSD's [x; h] pass is its teacher, above: no pi_old under [x; h])
            budget, own_trace = self.micro_batch_tokens, bool(trace_rows.any()) and not plan.opsd
            parts = {kind: microbatch.rows_by_budget(batch, budget, k, kind) for kind in ("prompt", "trace")}
            counts = distributed.agreed_counts(self.accelerator, "old-policy passes", self.state.global_step,
                                               {"prompt": len(parts["prompt"]),
                                                "trace": len(parts["trace"]) if own_trace else 0},
                                               force=self._pad_parts)
            with torch.no_grad():
                batch["old_logp_prompt"] = self._old_logps(batch, "prompt", parts["prompt"], counts["prompt"])
                batch["old_logp_trace"] = self._old_logps(batch, "trace", parts["trace"] if own_trace else [],
                                                          counts["trace"])  # zeros where no row is scored in [x; h]
        return batch

    @staticmethod
    def _turn_level_advantages(episodes: list[Episode], scored: list[dict], k: int) -> torch.Tensor:
        """MatchTIR's dual-level advantages as per-token advantages [B, C]: each assistant turn's tokens
        get (A_trajectory + A_turn) / 2 of their turn (environment-inserted tokens are masked anyway)."""
        from pact_cotrain.rewards.matchtir import dual_level_advantages

        width = max(max((len(ep.completion_ids) for ep in episodes), default=1), 1)
        token_adv = torch.zeros(len(episodes), width)
        for g in range(0, len(episodes), k):
            group = range(g, g + k)  # trajectory term on R (not a sum over turns: see rewards/matchtir.py)
            per_turn = dual_level_advantages([scored[i]["turn_rewards"] for i in group],
                                             [scored[i]["reward"] for i in group])
            for i in range(g, g + k):
                for (start, end), value in zip(episodes[i].turn_spans, per_turn[i - g]):
                    token_adv[i, start:end] = value
        return token_adv

    def _sft_batch(self, tasks: list[Task], plan: StepPlan) -> dict:
        contexts, targets, reasoning, toolcall, answer = [], [], [], [], []
        for task in tasks:
            if not task.trace:
                continue
            r = self._target(task)
            keep = [plan.reasoning_segments(n) for n in r.n_segments]  # per block: segment_linear counts its own
            comps, blocks, segs = (r.components[r.prompt_len:], r.reasoning_block[r.prompt_len:],
                                   r.reasoning_segment[r.prompt_len:])
            contexts.append(r.input_ids[: r.prompt_len])
            targets.append(r.input_ids[r.prompt_len:])
            reasoning.append([int(c == "reasoning" and s < keep[b]) for c, b, s in zip(comps, blocks, segs)])
            toolcall.append([int(c == "tool_call") for c in comps])
            answer.append([int(c == "answer") for c in comps])
        if not targets:
            return {}
        return {"sft_contexts": contexts, "sft_targets": targets, "sft_reasoning_mask": _pad(reasoning, 0, torch.float),
                "sft_toolcall_mask": _pad(toolcall, 0, torch.float), "sft_answer_mask": _pad(answer, 0, torch.float)}

    # ------------------------------------------------------------------ loss

    def _scoring_rows(self, inputs: dict, plan: StepPlan) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt_rows, trace_rows): the rollout rows scored after the prompt-only context and after
        the trace-conditioned one (also what `training_step` budgets micro-batches by)."""
        anchor = inputs["anchor"]
        prompt_rows, trace_rows = anchor | (self.method.surrogate in losses.PROMPT_GRADIENT_FORMS), ~anchor
        if self.method.anchor_mode == "mixture":  # q L_GRPO + (1-q) L_TC: both passes on every row
            prompt_rows = torch.full_like(anchor, plan.anchor_q > 0)
            trace_rows = torch.full_like(anchor, plan.anchor_q < 1)
        return prompt_rows, trace_rows

    def _opsd_loss(self, logp_prompt, old_prompt, inputs: dict, mask: torch.Tensor):
        """OPSD (losses.opsd_policy_loss) on the prompt-only pass, against the batch's teacher log-probs."""
        m = self.method
        return losses.opsd_policy_loss(
            logp_prompt, old_prompt, inputs["teacher_logp"].to(mask.device), mask, inputs["advantages"],
            m.opsd_kl_coef, m.opsd_reward_coef, m.opsd_kl_credit, m.eps_low, m.eps_high, aggregation=m.aggregation,
            max_tokens=self.sampling.max_completion_tokens)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        plan: StepPlan = inputs["plan"]
        metrics = self._metrics["train" if self.model.training else "eval"]
        started = time.perf_counter()
        rl = plan.rl and "advantages" in inputs
        sft = plan.sft_coef > 0 and "sft_targets" in inputs
        prompt_rows = trace_rows = None
        if rl:
            anchor = inputs["anchor"]
            prompt_rows, trace_rows = self._scoring_rows(inputs, plan)
        passes = self._score_passes(model, inputs, prompt_rows, trace_rows, sft)
        total = torch.zeros((), device=self.accelerator.device)
        n_tokens = 0
        if rl:
            mask = inputs["loss_mask"].to(total.device)
            logp_prompt, logp_trace = passes.get("logp_prompt"), passes.get("logp_trace")
            old_prompt = inputs.get("old_logp_prompt")
            if old_prompt is None and self.method.surrogate == "cross_context":
                # The rejected cross-context ratio pi_theta(.|x,h) / pi_old(.|x) needs pi_old(.|x): on-policy,
                # that is the sampling log-probs the rollout engine recorded.
                old_prompt = inputs["sampling_logps"]
            if plan.opsd:
                loss_rl, stats = self._opsd_loss(logp_prompt, old_prompt, inputs, mask)
            else:
                loss_rl, stats = losses.anchored_rl_loss(
                    logp_prompt, old_prompt, logp_trace, inputs.get("old_logp_trace"),
                    inputs["advantages"], mask, anchor, self.method.eps_low, self.method.eps_high,
                    mode=self.method.anchor_mode, q=plan.anchor_q, ratio_form=self.method.surrogate,
                    aggregation=self.method.aggregation,
                    # Dr. GRPO's constant per-sequence budget (TRL: max_completion_length): the completion cap.
                    max_tokens=self.sampling.max_completion_tokens)
            entropy = passes.get("entropy_prompt", 0.0) + passes.get("entropy_trace", 0.0)
            if "entropy_prompt" in passes and "entropy_trace" in passes:  # mixture: both on every row
                entropy = torch.where(prompt_rows.unsqueeze(-1).to(mask.device), passes["entropy_prompt"],
                                      passes["entropy_trace"])
            # The released regularisers (method.beta, method.entropy_coef), reduced as L_RL is so that one
            # micro-batch scale serves all: + beta KL_k3(pi_theta(.|x) || pi_ref(.|x)) on the prompt-scored
            # rows, - entropy_coef H on every RL row.
            reduce = {"aggregation": self.method.aggregation, "max_tokens": self.sampling.max_completion_tokens}
            if self.method.beta > 0 and logp_prompt is not None:
                kl = losses.kl_penalty_k3(logp_prompt, inputs["ref_logp_prompt"].to(mask.device), mask,
                                          row_on=prompt_rows, **reduce)
                loss_rl = loss_rl + self.method.beta * kl
                metrics["rl/kl_to_reference_k3"].append(float(kl.detach()))
            if self.method.entropy_coef > 0:
                loss_rl = loss_rl - self.method.entropy_coef * losses.entropy_bonus(entropy, mask, **reduce)
            loss_rl = loss_rl * inputs.get("rl_loss_scale", 1.0)  # a micro-batch's share of the step's normaliser
            total = total + plan.rl_coef * loss_rl
            n_tokens += int(mask.sum())
            metrics["loss/rl"].append(float(loss_rl.detach()))
            metrics["reward"].append(float(inputs["rewards"].mean()))
            metrics["reward_std"].append(float(inputs["rewards"].std()) if len(inputs["rewards"]) > 1 else 0.0)
            groups = inputs["rewards"].view(-1, self.num_generations)  # all-equal group: zero advantage
            metrics["rl/groups_all_equal"].append(float((groups.max(1).values == groups.min(1).values).float().mean()))
            metrics["entropy"].append(float(losses.masked_token_mean(entropy.detach(), mask)))
            metrics["rollout_seconds"].append(float(inputs["rollout_seconds"]))
            metrics["rollout_tokens"].append(float(mask.sum()))
            metrics["rollout_tokens_per_second"].append(float(mask.sum()) / max(inputs["rollout_seconds"], 1e-9))
            for key, value in stats.items():
                if torch.is_tensor(value) and value.numel() == 1 and not math.isnan(float(value)):
                    metrics[f"rl/{key}"].append(float(value))
            if logp_trace is not None and plan.rollout_trace_view is None:
                self._log_context_kl(model, inputs, passes, prompt_rows, trace_rows, mask, metrics)
            for key in ("solve_r", "solve_p", "solve_f1", "format_errors", "n_calls"):
                metrics[f"rollout/{key}"].append(sum(ep.metrics.get(key, 0.0) for ep in inputs["episodes"])
                                                 / len(inputs["episodes"]))
            cuts = [cut for ep in inputs["episodes"] for cut in ep.turn_cut]  # share of turns, not of episodes
            metrics["rollout/turns_cut"].append(sum(cuts) / len(cuts) if cuts else 0.0)
        if sft:
            logp = passes["logp_sft"]
            loss_sft, stats = losses.component_sft_loss(
                logp, inputs["sft_reasoning_mask"].to(logp.device), inputs["sft_toolcall_mask"].to(logp.device),
                plan.toolcall_weight, 1.0, inputs["sft_answer_mask"].to(logp.device), plan.answer_weight,
                phi=plan.sft_phi)
            loss_sft = loss_sft * inputs.get("sft_loss_scale", 1.0)  # a micro-batch's share of the step's N_sup
            total = total + plan.sft_coef * loss_sft
            n_tokens += passes["n_sft_tokens"]
            metrics["loss/sft"].append(float(loss_sft.detach()))
            metrics["sft/n_supervised"].append(float(stats["n_supervised"]))
        metrics["sft/coef"].append(plan.sft_coef)
        metrics["sft/toolcall_weight"].append(plan.toolcall_weight)
        metrics["sft/reasoning_fraction"].append(plan.reasoning_fraction)
        metrics["rl/coef"].append(plan.rl_coef if plan.rl else 0.0)
        metrics["forward_tokens_per_second"].append(n_tokens / max(time.perf_counter() - started, 1e-9))
        metrics["forward_tokens"].append(float(passes["n_forward_tokens"]))
        if not torch.isfinite(total):
            raise NonFiniteLossError(f"non-finite loss {float(total.detach())} at step {inputs['step'] + 1} "
                                     f"(counted from 1) "
                                     f"on the batch of tasks {inputs['task_ids']}")
        return total

    def training_step(self, model, inputs, num_items_in_batch=None):
        """One optimiser step's forward and backward. With `micro_batch_tokens`, the step's batch is built
        once and split (`microbatch.split_batch`); every part runs through TRL's own training_step
        (compute_loss, then accelerator.backward) with its losses pre-scaled by its share of the step's
        normalisers, so the gradients accumulate to the unsplit step's. TRL counts a `_step` per call;
        a step is one call here, so the count is set back to one per step."""
        if self.micro_batch_tokens is None:
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        batch = self._prepare_inputs(inputs)
        plan: StepPlan = batch["plan"]
        rl = plan.rl and "advantages" in batch
        prompt_rows, trace_rows = self._scoring_rows(batch, plan) if rl else (None, None)
        sft_weights = (plan.toolcall_weight, plan.answer_weight) if plan.sft_coef > 0 else None
        parts = microbatch.split_batch(batch, self.micro_batch_tokens, self.num_generations, prompt_rows, trace_rows,
                                       self.method.aggregation, self.sampling.max_completion_tokens, sft_weights)
        metrics, step = self._metrics["train"], self._step
        before = microbatch.metric_lengths(metrics)
        loss = torch.zeros((), device=self.args.device)
        # Under sharding every process runs as many parts (distributed.py, item 4): the extra ones repeat
        # the smallest part with zero weight, and their metrics are dropped.
        n_parts = distributed.padded_count(self.accelerator, len(parts), force=self._pad_parts,
                                           site="training parts", step=self.state.global_step)
        filler = distributed.zero_weight(min(parts, key=microbatch.part_tokens))
        for i in range(n_parts):
            real = i < len(parts)
            counted = microbatch.metric_lengths(metrics)
            with microbatch.accumulation_context(self.accelerator, model, last=i == n_parts - 1):
                loss = loss + super().training_step(model, parts[i] if real else filler, num_items_in_batch)
            if not real:
                microbatch.drop_new_metrics(metrics, counted)
        self._step = step + 1
        microbatch.merge_step_metrics(metrics, before)
        metrics["micro_batches"].append(float(len(parts)))
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """TRL's log, with every metric averaged over processes first (distributed.py)."""
        distributed.mean_metrics_across_processes(self.accelerator,
                                                  self._metrics["train" if self.model.training else "eval"])
        super().log(logs, start_time)

    def current_task_ids(self) -> list[str]:
        """Task ids of the batch being trained (for error messages)."""
        buffered = getattr(self, "_buffered_inputs", None) or []
        ids = []
        for part in buffered if isinstance(buffered, list) else [buffered]:
            if isinstance(part, dict):
                ids += [i for i in part.get("task_ids", []) if i not in ids]
        return ids


def _pad(rows: list[list], value, dtype) -> torch.Tensor:
    width = max(max((len(r) for r in rows), default=0), 1)
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=dtype)
