"""Token-exact multi-turn rollouts from the prompt alone.

Each episode is a list of token ids that grows turn by turn: the model samples an assistant turn
(ending with its end-of-turn token), the environment executes the calls, and the observation text
(the template's tool-response turn and the next assistant header) is tokenised and appended. The
ids returned are exactly the ids the model was fed and sampled; nothing is re-rendered. The engine
sees `task.messages` and `task.tools` through the environment, never `task.trace`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from pact_cotrain.data.trace_format import Task
from pact_cotrain.envs.base import EnvFactory, Environment
from pact_cotrain.envs.parsing import CLOSE_TAG, OPEN_TAG
from pact_cotrain.render import (apply_template, encode, label_generated_text, observation_text,
                                 trace_conditioned_messages)
from pact_cotrain.rollout.backends import GenerationBackend, HFBackend

STEP_THREADS = 32  # environment steps run side by side at most (only for envs with `concurrent_steps`)


@dataclass
class SamplingConfig:
    temperature: float = 1.0
    top_p: float = 1.0
    greedy: bool = False
    max_turns: int = 10  # assistant turns per episode
    max_new_tokens_per_turn: int = 256
    max_completion_tokens: int = 2048  # generated + inserted tokens after the prompt


@dataclass
class Episode:
    task_id: str
    sample_index: int
    prompt_ids: list[int]
    completion_ids: list[int]  # everything after the prompt: sampled and environment-inserted
    logprobs: list[float]  # sampling log-prob per completion token (0.0 on inserted tokens)
    generated_mask: list[int]  # 1 = sampled by the model, 0 = inserted by the environment
    turn_spans: list[tuple[int, int]]  # [start, end) of each assistant turn in completion_ids
    messages: list[dict]  # the decoded conversation (prompt messages, assistant turns, tool messages)
    reward: float = 0.0
    step_rewards: list[float] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    stop_reason: str = ""
    turn_cut: list[bool] = field(default_factory=list)  # per assistant turn: cut by a token limit
    # The prompt as env.reset() gave it (before the hint baseline's trace block): the trainer builds
    # the trace-conditioned context [x; h] from it, since an environment may rewrite task.messages.
    env_messages: list[dict] | None = None
    env_tools: list[dict] | None = None

    @property
    def n_generated(self) -> int:
        return sum(self.generated_mask)


class RolloutEngine:
    def __init__(self, model, tokenizer, env_factory: EnvFactory, sampling: SamplingConfig | None = None,
                 backend: GenerationBackend | None = None, reuse_kv_cache: bool = True):
        self.tokenizer = tokenizer
        self.env_factory = env_factory
        self.sampling = sampling or SamplingConfig()
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.backend = backend or HFBackend(model, tokenizer.eos_token_id, pad, reuse_cache=reuse_kv_cache)
        self._step_pool: ThreadPoolExecutor | None = None  # started on the first concurrent step

    def rollout(self, tasks: list[Task], k: int = 1, seed: int | None = None,
                context_trace_view: str | None = None,
                on_episode_done: Callable[[Episode], None] | None = None) -> list[Episode]:
        """K episodes per task, laid out task-major: [t0s0, t0s1, ..., t1s0, ...].

        `context_trace_view` is only for the hint-in-rollout baseline: the expert trace is put in the
        rollout's context (training then differs from inference). PACT never sets it.
        `on_episode_done(episode)` is called once per episode as soon as it ends (progress reports)."""
        if seed is not None:
            torch.manual_seed(seed)
        clear_cache = getattr(self.backend, "clear_cache", lambda: None)
        clear_cache()  # a KV cache from before this call may hold keys of older weights
        cfg = self.sampling
        states = []
        for task in tasks:
            for sample in range(k):
                env = self.env_factory(task)
                env_messages, tools = env.reset(task)
                messages = env_messages
                if context_trace_view is not None:
                    messages = trace_conditioned_messages(replace(task, messages=env_messages), context_trace_view)
                ids = encode(self.tokenizer, apply_template(self.tokenizer, messages, tools, add_generation_prompt=True))
                episode = Episode(task.id, sample, ids, [], [], [], [], [dict(m) for m in messages],
                                  env_messages=[dict(m) for m in env_messages], env_tools=list(tools or []))
                states.append(_State(episode, env, tools, min(cfg.max_turns, getattr(env, "max_steps", cfg.max_turns))))

        while active := [s for s in states if not s.episode.stop_reason]:
            budgets = [cfg.max_completion_tokens - len(s.episode.completion_ids) for s in active]
            for s, budget in zip(active, budgets):
                if budget <= 0:
                    s.episode.stop_reason = "max_completion_tokens"
                    if on_episode_done is not None:
                        on_episode_done(s.finish())
            active = [s for s in active if not s.episode.stop_reason]
            if not active:
                break
            max_new = min(cfg.max_new_tokens_per_turn, max(cfg.max_completion_tokens - len(s.episode.completion_ids)
                                                            for s in active))
            turns = self.backend.generate([s.episode.prompt_ids + s.episode.completion_ids for s in active],
                                          max_new, cfg.temperature, cfg.top_p, cfg.greedy)
            pending = [self._record_turn(state, turn) for state, turn in zip(active, turns)]
            results = self._step_envs([(state.env, text) for state, (text, _) in zip(active, pending)])
            for state, (_, cut), result in zip(active, pending, results):
                self._apply_step(state, cut, result)
                if on_episode_done is not None and state.episode.stop_reason:
                    on_episode_done(state.finish())
        clear_cache()
        return [s.finish() for s in states]

    def _advance(self, state: "_State", turn) -> None:
        """One episode's turn: record the sampled ids, step its environment, append the observation."""
        text, cut = self._record_turn(state, turn)
        self._apply_step(state, cut, state.env.step(text))

    def _record_turn(self, state: "_State", turn) -> tuple[str, str]:
        """Append a sampled turn to its episode; (the text its environment executes, why it was cut or "")."""
        ep, cfg = state.episode, self.sampling
        budget = cfg.max_completion_tokens - len(ep.completion_ids)
        ids, logps = turn.token_ids[:budget], turn.logprobs[:budget]
        finished = turn.finished and len(ids) == len(turn.token_ids)
        start = len(ep.completion_ids)
        ep.completion_ids += ids
        ep.logprobs += logps
        ep.generated_mask += [1] * len(ids)
        ep.turn_spans.append((start, len(ep.completion_ids)))
        text = self.tokenizer.decode(ids[:-1] if finished else ids, skip_special_tokens=False)
        ep.messages.append({"role": "assistant", "content": text})
        ep.turn_cut.append(not finished)
        state.turns += 1
        cut = "" if finished else ("max_new_tokens_per_turn" if len(ids) >= cfg.max_new_tokens_per_turn
                                   else "max_completion_tokens")
        # A cut turn still runs its complete calls, as the official harnesses run whatever a cut
        # response holds; the episode then goes on unless the completion budget is spent.
        return (text if finished else complete_calls_text(text)), cut

    def _step_envs(self, work: list[tuple[Environment, str]]) -> list:
        """env.step(text) for each pair, results in order. Environments that declare `concurrent_steps`
        (their tools wait on I/O or on user code of their own) are stepped side by side on threads;
        the others one after another here, as before. Nothing token-related happens on the threads."""
        results: list = [None] * len(work)
        side_by_side = [i for i, (env, _) in enumerate(work) if getattr(env, "concurrent_steps", False)]
        futures = {}
        if len(side_by_side) > 1:
            if self._step_pool is None:
                self._step_pool = ThreadPoolExecutor(max_workers=STEP_THREADS, thread_name_prefix="pact-env-step")
            futures = {i: self._step_pool.submit(work[i][0].step, work[i][1]) for i in side_by_side}
        for i, (env, text) in enumerate(work):
            if i not in futures:
                results[i] = env.step(text)
        for i, future in futures.items():
            results[i] = future.result()
        return results

    def _apply_step(self, state: "_State", cut: str, result) -> None:
        """Record an environment step and append its observation's tokens (or end the episode)."""
        ep, cfg = state.episode, self.sampling
        ep.step_rewards.append(result.reward)
        ep.messages += result.tool_messages
        if result.done or cut == "max_completion_tokens":
            ep.stop_reason = cut or "done"
            return
        if state.turns >= state.max_turns:
            ep.stop_reason = "max_turns"
            return
        obs = encode(self.tokenizer, observation_text(self.tokenizer, result.tool_messages, state.tools))
        if cut:  # the end-of-turn token the model did not sample is inserted, so the template stays intact
            obs = [self.tokenizer.eos_token_id] + obs
        if len(ep.completion_ids) + len(obs) >= cfg.max_completion_tokens:
            ep.stop_reason = "max_completion_tokens"
            return
        ep.completion_ids += obs
        ep.logprobs += [0.0] * len(obs)
        ep.generated_mask += [0] * len(obs)


@dataclass
class _State:
    episode: Episode
    env: Environment
    tools: list[dict]
    max_turns: int
    turns: int = 0

    def finish(self) -> Episode:
        self.episode.metrics = dict(self.env.metrics())
        self.episode.metrics["turns_cut"] = sum(self.episode.turn_cut)
        self.episode.reward = float(self.episode.metrics.get("reward", 0.0))
        return self.episode


def complete_calls_text(text: str) -> str:
    """The part of a cut turn that can be executed: all of it, except a trailing `<tool_call>` block the
    cut left without its `</tool_call>` (its arguments may be unfinished)."""
    last_open, last_close = text.rfind(OPEN_TAG), text.rfind(CLOSE_TAG)
    return text[:last_open] if last_open > last_close else text


def component_token_counts(episode: Episode, tokenizer) -> dict[str, int]:
    """Sampled tokens per component (reasoning / tool_call / answer) and environment-inserted ones.
    Each sampled id is decoded on its own so the count is over the ids actually sampled."""
    counts = {"reasoning": 0, "tool_call": 0, "answer": 0}
    for start, end in episode.turn_spans:
        pieces = [tokenizer.decode([i], skip_special_tokens=False) for i in episode.completion_ids[start:end]]
        spans = label_generated_text("".join(pieces))
        offset = 0
        for piece in pieces:
            counts[next((lab for s, e, lab in spans if s <= offset < e), "answer")] += 1
            offset += len(piece)
    counts["inserted"] = len(episode.completion_ids) - episode.n_generated
    return counts
