"""Expert traces from a teacher: a stronger model is run through the same environment the training
run will use, and for each task the best trajectory whose reward is at least `min_reward` is kept
(the recipe of APIGen-MT, Toucan and NeMo Gym's rollout collection).

    collect_traces(tasks, env_factory, teacher, out="traces.jsonl", samples=4, min_reward=1.0)

Two teachers:

* `LocalTeacher`: a local model, rolled out by our engine (`rollout/engine.py`), prompt-only, with
  the same chat template and call parser as training.
* `OpenAITeacher`: any OpenAI-compatible chat-completions endpoint (`vllm serve MODEL
  --enable-auto-tool-choice --tool-call-parser hermes`, a hosted API), called through the `openai`
  client with the tools in the request and `tool_calls` in the answer. Failed requests are retried by
  the client (`max_retries`, with its backoff) before the sample counts as failed.

Either way each assistant turn is executed by `env.step`, so the tool messages written are the ones the
environment really returned, and the reward is the environment's (`metrics()["reward"]`: a TRL
environment's `get_reward`, a benchmark's own score) unless a `reward` is given (the user's
`reward_funcs` as `rewards.user.RewardFunctions`, or an `EpisodeReward`). A trajectory is kept only when it is clean: every call block parsed and
fitted its schema, no turn was cut by a token limit, and it ended on an answer (not on the turn limit).
Rows are written with `messages` and `tools` as the environment showed them, so `pact data validate`
checks the trace against exactly those tools.

Resumable: every task tried is recorded in `OUT.collect.jsonl` (one line per task: the reward of each
sample and the outcome). A rerun skips tasks already traced or tried without reaching `min_reward`, and
tries again the ones whose requests failed.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Iterable, Protocol

from pact_cotrain.data.trace_format import Task
from pact_cotrain.envs.base import EnvFactory
from pact_cotrain.envs.parsing import parse_tool_calls, render_assistant_text, split_reasoning
from pact_cotrain.errors import UserError

# The outcomes recorded per task in OUT.collect.jsonl.
TRACED, BELOW, FAILED = "traced", "below_min_reward", "failed"


@dataclass
class Trajectory:
    """One teacher episode, as trace messages (assistant turns and the environment's tool messages)."""

    messages: list[dict] = field(default_factory=list)
    tools: list[dict] = field(default_factory=list)  # the tool schemas the environment showed
    reward: float | None = 0.0  # None: lost to a reward-function fault
    clean: bool = True
    problem: str = ""  # why it is not clean, or the request error of a failed sample
    failed: bool = False  # the teacher could not be asked (request failed after retries)

    def reject(self, problem: str) -> None:
        if self.clean:
            self.clean, self.problem = False, problem


class Teacher(Protocol):
    def trajectories(self, task: Task, env_factory: EnvFactory, samples: int) -> list[Trajectory]:
        """`samples` episodes of `task`, each in a fresh environment from `env_factory`."""


def assistant_turn(text: str, tools: list[dict], turn: int) -> tuple[dict, list[str]]:
    """An assistant turn as written by a model -> (the trace message, the problems of its call blocks).
    Call ids are `call_<turn>_<i>`, answered in order by the tool messages that follow."""
    reasoning, visible = split_reasoning(text)
    parsed = parse_tool_calls(visible, tools)
    message: dict = {"role": "assistant", "content": parsed.content}
    if reasoning:
        message["reasoning"] = reasoning
    if parsed.calls:
        message["tool_calls"] = [{"id": f"call_{turn}_{i}", "name": c.name, "arguments": c.arguments}
                                 for i, c in enumerate(parsed.calls)]
    return message, [f"{e.name or 'tool call'}: {e.reason}" for e in parsed.errors]


def answer_tool_messages(assistant: dict, tool_messages: list[dict]) -> list[dict]:
    """The environment's tool messages (one per call, in order) with the `tool_call_id` of the call each
    answers, so the trace links every response to its call."""
    calls = assistant.get("tool_calls") or []
    out = []
    for call, message in zip(calls, tool_messages):
        out.append({"role": "tool", "tool_call_id": call["id"], "name": call["name"],
                    "content": str(message.get("content", ""))})
    return out


def finish(trajectory: Trajectory, episode, task: Task, reward) -> Trajectory:
    """Score a finished trajectory: with `reward` (an `EpisodeReward`, or the user's `reward_funcs` as
    `rewards.user.RewardFunctions`) when given, else the environment's reward (`metrics()["reward"]`). A
    reward function's fault loses the trajectory (never kept, never scored 0)."""
    if reward is None:
        value = float(episode.metrics.get("reward", 0.0))
    else:
        from pact_cotrain.rewards.user import score_batch

        value = float(score_batch(reward, [episode], [task])[0]["reward"])
    if not math.isfinite(value):
        trajectory.reject("the reward was lost to a reward-function fault")
        trajectory.reward = None
        return trajectory
    trajectory.reward = value
    return trajectory


class LocalTeacher:
    """A local model (registry name, directory or Hub id) rolled out by the project's engine."""

    def __init__(self, model, tokenizer, max_turns: int = 10, max_new_tokens_per_turn: int = 512,
                 max_completion_tokens: int = 4096, temperature: float = 1.0, seed: int = 0,
                 reward=None):
        from pact_cotrain.rollout.engine import SamplingConfig

        self.model, self.tokenizer, self.seed, self.reward = model, tokenizer, seed, reward
        self.sampling = SamplingConfig(temperature=temperature, greedy=temperature == 0.0, max_turns=max_turns,
                                       max_new_tokens_per_turn=max_new_tokens_per_turn,
                                       max_completion_tokens=max_completion_tokens)

    def trajectories(self, task: Task, env_factory: EnvFactory, samples: int) -> list[Trajectory]:
        from pact_cotrain.rollout.engine import RolloutEngine

        engine = RolloutEngine(self.model, self.tokenizer, env_factory, self.sampling)
        episodes = engine.rollout([task], k=samples, seed=self.seed + _stable_hash(task.id))
        return [self._trajectory(ep, task) for ep in episodes]

    def _trajectory(self, episode, task: Task) -> Trajectory:
        tools = episode.env_tools or []
        trajectory = Trajectory(tools=list(tools))
        turns = episode.messages[len(episode.env_messages or []):]
        turn = 0
        for i, message in enumerate(turns):
            if message["role"] != "assistant":
                continue
            assistant, problems = assistant_turn(message["content"], tools, turn)
            if problems:
                trajectory.reject(f"turn {turn + 1}: {problems[0]}")
            responses = []
            for following in turns[i + 1:]:
                if following["role"] != "tool":
                    break
                responses.append(following)
            trajectory.messages.append(assistant)
            trajectory.messages += answer_tool_messages(assistant, responses)
            turn += 1
        if any(episode.turn_cut):
            trajectory.reject("a turn was cut by the token limit")
        if episode.stop_reason != "done":
            trajectory.reject(f"the episode ended on {episode.stop_reason}, not on an answer")
        return finish(trajectory, episode, task, self.reward)


class OpenAITeacher:
    """A chat-completions endpoint through the `openai` client; the tools go in the request."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, max_turns: int = 10,
                 max_tokens: int = 1024, temperature: float = 1.0, max_retries: int = 3, timeout_s: float = 120.0,
                 reward=None, check: bool = True):
        from openai import OpenAI

        self.base_url, self.model, self.reward = base_url, model, reward
        self.max_turns, self.max_tokens, self.temperature = max_turns, max_tokens, temperature
        # The client retries connection errors, 408, 409, 429 and 5xx with backoff, max_retries times.
        self.client = OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
                             max_retries=max_retries, timeout=timeout_s)
        if check:
            self.check()

    def check(self) -> None:
        """One line, before any task, when the endpoint cannot be reached or does not serve the model."""
        import openai

        try:
            served = [m.id for m in self.client.with_options(max_retries=1, timeout=15.0).models.list()]
        except openai.APIConnectionError as exc:
            raise UserError(f"--teacher-url {self.base_url}: cannot be reached ({exc.__cause__ or exc})") from None
        except openai.APIStatusError as exc:
            raise UserError(f"--teacher-url {self.base_url}: GET /models answered {exc.status_code}") from None
        if served and self.model not in served:
            raise UserError(f"--teacher-model {self.model!r} is not served by {self.base_url} "
                            f"(it serves {', '.join(served)})")

    def trajectories(self, task: Task, env_factory: EnvFactory, samples: int) -> list[Trajectory]:
        return [self._episode(task, env_factory) for _ in range(samples)]

    def _episode(self, task: Task, env_factory: EnvFactory) -> Trajectory:
        import openai

        env = env_factory(task)
        messages, tools = env.reset(task)
        chat = [dict(m) for m in messages]
        trajectory = Trajectory(tools=list(tools or []))
        request = {"model": self.model, "max_tokens": self.max_tokens, "temperature": self.temperature}
        if tools:
            request["tools"] = tools
        ended_on_answer = False
        for turn in range(min(self.max_turns, getattr(env, "max_steps", self.max_turns))):
            try:
                answer = self.client.chat.completions.create(messages=chat, **request).choices[0]
            except openai.OpenAIError as exc:  # after the client's retries
                return Trajectory(failed=True, clean=False, problem=f"request failed: {_one_line(exc)}")
            reply = answer.message
            calls, bad = [], []
            for call in reply.tool_calls or []:
                try:
                    arguments = json.loads(call.function.arguments or "{}")
                except json.JSONDecodeError:
                    bad.append(call.function.name)
                    arguments = {}
                calls.append({"id": call.id, "name": call.function.name, "arguments": arguments})
            reasoning = getattr(reply, "reasoning_content", None) or (reply.model_extra or {}).get("reasoning_content")
            # The environment executes the calls from the text a model would have written (no reasoning:
            # calls are read from the visible part only); the schema check is the parser's, as in training.
            text = render_assistant_text({"content": reply.content or "", "tool_calls": calls})
            problems = [f"{e.name or 'tool call'}: {e.reason}" for e in parse_tool_calls(text, tools).errors]
            problems = [f"{name}: the arguments are not JSON" for name in bad] + problems
            assistant: dict = {"role": "assistant", "content": (reply.content or "").strip()}
            if reasoning:
                assistant["reasoning"] = reasoning.strip()
            if calls:
                assistant["tool_calls"] = [{"id": f"call_{turn}_{i}", "name": c["name"], "arguments": c["arguments"]}
                                           for i, c in enumerate(calls)]
            if problems:
                trajectory.reject(f"turn {turn + 1}: {problems[0]}")
            if answer.finish_reason == "length":
                trajectory.reject(f"turn {turn + 1} was cut by max_tokens")
            result = env.step(text)
            trajectory.messages.append(assistant)
            trajectory.messages += answer_tool_messages(assistant, result.tool_messages)
            if not calls:
                ended_on_answer = True
                break
            # The endpoint sees its own call ids answered by what the environment returned.
            chat.append({"role": "assistant", "content": reply.content or "",
                         "tool_calls": [{"id": c["id"], "type": "function",
                                         "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
                                        for c in calls]})
            chat += [{"role": "tool", "tool_call_id": c["id"], "content": str(m.get("content", ""))}
                     for c, m in zip(calls, result.tool_messages)]
            if result.done:
                break
        if not ended_on_answer:
            trajectory.reject("the episode ended before the teacher answered")
        from pact_cotrain.rollout.engine import Episode

        # What a reward function reads of an episode: the prompt, the turns as a model writes them, the metrics.
        turns = [{"role": "assistant", "content": render_assistant_text(m)} if m["role"] == "assistant" else m
                 for m in trajectory.messages]
        episode = Episode(task.id, 0, [], [], [], [], [], [dict(m) for m in messages] + turns,
                          metrics=dict(env.metrics()), env_messages=[dict(m) for m in messages], env_tools=list(tools or []))
        return finish(trajectory, episode, task, self.reward)


def best_kept(trajectories: list[Trajectory], min_reward: float) -> Trajectory | None:
    """The clean trajectory with the highest reward, if it reaches `min_reward` (the first on ties)."""
    clean = [t for t in trajectories if t.clean and t.reward is not None and t.reward >= min_reward]
    return max(clean, key=lambda t: t.reward) if clean else None


def collect_traces(tasks: list[Task], env_factory: EnvFactory, teacher: Teacher, out: str, samples: int = 4,
                   min_reward: float = 1.0, concurrency: int = 1, progress: bool = True) -> dict:
    """Run `teacher` on every task not yet done in `out`, append each traced task to `out` (JSONL) as
    it finishes, and return the report (yield, reward distribution, failures)."""
    if samples < 1:
        raise UserError(f"--samples must be >= 1, got {samples}")
    log_path = out + ".collect.jsonl"
    done = _tried(log_path)
    written = _written_ids(out)  # traced before a kill that came before its log line: not traced twice
    todo = [t for t in tasks if done.get(t.id) not in (TRACED, BELOW) and t.id not in written]
    from pact_cotrain.progress import Progress

    bar = Progress("collect traces", total=len(tasks), unit="task", start=len(tasks) - len(todo),
                   mode="auto" if progress else "off")

    def run(task: Task) -> tuple[Task, list[Trajectory]]:
        return task, teacher.trajectories(task, env_factory, samples)

    with bar, open(out, "a", encoding="utf-8") as rows, open(log_path, "a", encoding="utf-8") as log:
        pool = ThreadPoolExecutor(max_workers=max(1, concurrency))
        try:
            for task, trajectories in (pool.map(run, todo) if concurrency > 1 else map(run, todo)):
                kept = best_kept(trajectories, min_reward)
                outcome = TRACED if kept else (FAILED if all(t.failed for t in trajectories) else BELOW)
                if kept is not None:
                    rows.write(json.dumps(traced_row(task, kept).to_record(), ensure_ascii=False) + "\n")
                    _sync(rows)
                log.write(json.dumps({"id": task.id, "outcome": outcome,
                                      "rewards": [None if t.failed else t.reward for t in trajectories],
                                      "lost": sum(t.reward is None and not t.failed for t in trajectories),
                                      "problems": sorted({t.problem for t in trajectories if t.problem})}) + "\n")
                _sync(log)
                bar.advance()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    report = collection_report(log_path, min_reward, [t.id for t in tasks])
    if progress:
        print(format_collection_report(report, out), file=sys.stderr)
    return report


def traced_row(task: Task, kept: Trajectory) -> Task:
    """The task with its trace and the tools the environment showed (so validation checks the calls
    against them); its messages and other columns as they were, since training calls `reset` again."""
    return replace(task, tools=kept.tools or task.tools, trace=kept.messages)


def collection_report(log_path: str, min_reward: float, ids: Iterable[str] | None = None) -> dict:
    """Yield and reward distribution over the tasks of `ids` (all in the log when None), from OUT.collect.jsonl."""
    latest: dict[str, dict] = {}
    if os.path.exists(log_path):
        with open(log_path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    record = json.loads(line)
                    latest[record["id"]] = record
    wanted = list(latest) if ids is None else [i for i in ids if i in latest]
    records = [latest[i] for i in wanted]
    rewards = [r for rec in records for r in rec["rewards"] if r is not None]
    best = [max(r for r in rec["rewards"] if r is not None) for rec in records
            if any(r is not None for r in rec["rewards"])]
    counts = {o: sum(rec["outcome"] == o for rec in records) for o in (TRACED, BELOW, FAILED)}
    report = {"tried": len(records), **counts, "yield": counts[TRACED] / len(records) if records else 0.0,
              "min_reward": min_reward, "samples": len(rewards),
              "lost_samples": sum(rec.get("lost", 0) for rec in records)}
    report["failed_samples"] = sum(r is None for rec in records for r in rec["rewards"]) - report["lost_samples"]
    if rewards:
        report["reward"] = {"mean": statistics.fmean(rewards), "min": min(rewards), "max": max(rewards),
                            "quartiles": statistics.quantiles(rewards, n=4, method="inclusive")
                            if len(rewards) > 1 else [rewards[0]] * 3,
                            "share_at_least_min": sum(r >= min_reward for r in rewards) / len(rewards)}
        report["best_reward_per_task_mean"] = statistics.fmean(best)
    problems: dict[str, int] = {}
    for rec in records:
        for problem in rec.get("problems", []):
            key = problem.split(":", 1)[0] if problem.startswith("turn ") else problem[:80]
            problems[key] = problems.get(key, 0) + 1
    report["problems"] = dict(sorted(problems.items(), key=lambda kv: -kv[1])[:10])
    return report


def format_collection_report(report: dict, out: str) -> str:
    lines = [f"traced {report[TRACED]} of {report['tried']} tasks tried (yield {100 * report['yield']:.1f}%, "
             f"reward >= {report['min_reward']:g}) -> {out}; {report[BELOW]} below the reward, {report[FAILED]} failed"]
    if "reward" in report:
        r = report["reward"]
        q = ", ".join(f"{v:.3f}" for v in r["quartiles"])
        lines.append(f"  reward over {report['samples']} samples: mean {r['mean']:.3f}, min {r['min']:.3f}, "
                     f"quartiles [{q}], max {r['max']:.3f}; {100 * r['share_at_least_min']:.1f}% of samples reach "
                     f"it; best per task mean {report['best_reward_per_task_mean']:.3f}")
    if report["failed_samples"]:
        lines.append(f"  {report['failed_samples']} samples failed (requests that failed after the client's retries)")
    if report["lost_samples"]:
        lines.append(f"  {report['lost_samples']} samples lost to reward-function faults (not scored, not kept)")
    for problem, n in report["problems"].items():
        lines.append(f"  rejected or failed ({n} tasks): {problem}")
    return "\n".join(lines)


def _tried(log_path: str) -> dict[str, str]:
    """id -> outcome of every task already tried (the last record of each id wins)."""
    outcomes: dict[str, str] = {}
    if os.path.exists(log_path):
        with open(log_path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:  # a line cut by a kill: that task is simply tried again
                        continue
                    outcomes[record["id"]] = record["outcome"]
    return outcomes


def _written_ids(out: str) -> set[str]:
    """Ids of the rows already in `out`. A last line cut by a kill is removed first (its task's log line
    was never written, so the task is tried again)."""
    if not os.path.exists(out):
        return set()
    with open(out, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)
            data = data[: data.rfind(b"\n") + 1]
    return {json.loads(line)["id"] for line in data.decode("utf-8").splitlines() if line.strip()}


def _sync(handle) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _one_line(exc: Exception) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


def _stable_hash(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode()) % 100_000
