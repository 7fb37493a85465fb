"""ToolWorld: a procedural, FTRL-style tool-use suite that needs no data files.

Every task is a small invented world: lookup tools (`get_birthplace(person)`,
`get_population(city)`, ...) over tables of syllable-made names, so no answer can be
memorised. The four FTRL scenarios are generated:

    single_hop           one lookup
    parallel_single_hop  2-3 independent lookups, combined (list, sum, difference, comparison)
    multi_hop            a chain: each output is the argument of the next call (2-3 hops)
    parallel_multi_hop   2-3 independent chains, advanced in parallel and combined

Each task carries an expert trace (reasoning, canonical calls, the exact tool outputs, a final
answer), FTRL's `unsolved_set` (tool -> strings its outputs must contain) and the tables the
environment executes calls against, so tasks round-trip through the JSONL trace format.

Train and test draw entity names from disjoint pools: a name belongs to the split picked by a
hash of its lower-cased text (`split_of`), and generation rejects names of the other split.
A third split, `warmup`, is disjoint from both in entities *and* tools: its names start with "J"
(an onset the train/test names never use) and its tasks use their own relations
(`WARMUP_RELATIONS`). It teaches the tool-call format before a study without leaking any
training or evaluation tool or entity. A fourth split, `ood`, tests out of distribution: its own
tools (`OOD_RELATIONS`), held-out entity names, deeper chains and more distractors (`OOD_KNOBS`).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from typing import Sequence

from pact_cotrain.data.trace_format import Task
from pact_cotrain.envs.base import ToolCall
from pact_cotrain.envs.ftrl_scored import FtrlScoredEnv
# The relation tables live in their own module; re-exported here, where tests and recipes import them.
from pact_cotrain.envs.toolworld_relations import (OOD_RELATIONS, RELATION_BY_TOOL, RELATIONS,  # noqa: F401
                                                   WARMUP_RELATIONS, Relation, relations_for)
from pact_cotrain.envs.toolworld_relations import BACKTRACKS as _BACKTRACKS
from pact_cotrain.rewards.ftrl import matches

SCENARIOS = ("single_hop", "parallel_single_hop", "multi_hop", "parallel_multi_hop")
SPLITS = ("train", "test", "warmup", "ood")
ENTITY_TYPES = ("person", "city", "company", "product", "country")
VALUE_KINDS = ("year", "date", "number")  # terminal outputs: never the argument of another call

INSTRUCTION = (
    "Please call given tools to answer the question. Please note that all your information must be "
    "obtained by calling tools and not by answering the question directly.\n"
    "If the call fails, you need to try to correct it and continue until you arrive at an answer.\n"
    "Question: "
)


# The out-of-distribution split (`split="ood"`): tools no other split has (OOD_RELATIONS), held-out
# (test-pool) entity names, chains one hop deeper than the deepest train task (4, train 2-3) and twice
# the distractor tools (4-8, train 2-4). Only chained scenarios: a one-lookup task has no depth to add.
OOD_KNOBS = {"scenarios": ("multi_hop", "parallel_multi_hop"), "hops": 4, "branches": 2, "n_distractors": (4, 8)}


def name_pool(split: str) -> str:
    """The entity-name pool a split draws from: the OOD split reuses the held-out test pool."""
    return "test" if split == "ood" else split


# ---------------------------------------------------------------- names

_ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
           "br", "dr", "gr", "kr", "st", "tr", "th", "sk", "vr")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ei", "ou", "ae", "y")
_CODAS = ("", "", "", "n", "r", "l", "s", "k", "m", "th", "nd", "rk", "st", "x")
_CITY_SUFFIXES = ("hold", "mere", "ford", "vik", "grad", "stead", "port", "burg", "ton", "dale", "wick", "haven")
_COMPANY_SUFFIXES = ("Industries", "Labs", "Works", "Systems", "Holdings", "Dynamics", "Motors", "Foods", "Group")
_COUNTRY_SUFFIXES = ("ia", "land", "stan", "ora", "mark", "enia", "ovia")


def _word(rng: random.Random, syllables: int, coda: bool = True) -> str:
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)]
    if coda:
        parts[-1] += rng.choice(_CODAS)
    return "".join(parts).capitalize()


def _raw_name(rng: random.Random, etype: str) -> str:
    if etype == "person":
        return f"{_word(rng, rng.randint(1, 2), rng.random() < 0.5)} {_word(rng, rng.randint(1, 2))}"
    if etype == "city":
        return _word(rng, rng.randint(1, 2), coda=False) + rng.choice(_CITY_SUFFIXES)
    if etype == "company":
        return f"{_word(rng, 2)} {rng.choice(_COMPANY_SUFFIXES)}"
    if etype == "product":
        return f"{_word(rng, 2, coda=False)} {rng.choice('XSZQVR')}{rng.randint(2, 9)}"
    if etype == "country":
        return _word(rng, rng.randint(1, 2), coda=False) + rng.choice(_COUNTRY_SUFFIXES)
    raise ValueError(f"unknown entity type {etype!r}")


def split_of(name: str) -> str:
    """The split a name belongs to: warm-up names start with "J" (no train/test onset does);
    the rest split by a hash of the lower-cased text, so pools never overlap."""
    if name[:1] in ("J", "j"):
        return "warmup"
    return ("train", "test")[hashlib.sha256(name.casefold().encode("utf-8")).digest()[0] % 2]


def _warmup_name(raw: str) -> str:
    """"Braik Stol" -> "Jaik Stol": the first onset becomes "J"."""
    return "J" + raw.lstrip("BDFGHKLMNPRSTVZbdfghklmnprstvz")


def _lookup_key(value: str) -> str:
    """Lookups forgive case and extra spaces, as a real search API would."""
    return " ".join(value.split()).casefold()


# ---------------------------------------------------------------- one task's world


@dataclass
class _Hop:
    rel: Relation
    arg: str
    value: str | int

    @property
    def phrase(self) -> str:
        return self.rel.phrase.format(x=self.arg)


def _output(rel: Relation, value: str | int) -> str:
    return json.dumps({rel.key: value}, ensure_ascii=False)


class _World:
    """Hands out fresh names and values for one task and records every table entry."""

    def __init__(self, rng: random.Random, split: str):
        self.rng, self.split = rng, split
        self.names: list[str] = []  # lower-cased, every name used in the task
        self.values: dict[str, set] = {}  # tool -> values already used (kept unique per tool)
        self.tables: dict[str, dict[str, str]] = {}
        self.entities: dict[str, list[str]] = {t: [] for t in ENTITY_TYPES}  # task entities by type

    def name(self, etype: str, track: bool = True) -> str:
        while True:
            cand = _raw_name(self.rng, etype)
            if self.split == "warmup":
                cand = _warmup_name(cand)
            low = cand.casefold()
            # Same split only; no name inside another, which keeps FTRL substring matching unambiguous.
            if split_of(cand) == name_pool(self.split) and not any(low in n or n in low for n in self.names):
                self.names.append(low)
                if track:
                    self.entities[etype].append(cand)
                return cand

    def value(self, rel: Relation, track: bool = True) -> str | int:
        if rel.out in ENTITY_TYPES:
            return self.name(rel.out, track)
        used = self.values.setdefault(rel.tool, set())
        while True:
            if rel.out == "date":
                v: str | int = f"{self.rng.randint(rel.lo, rel.hi):04d}-{self.rng.randint(1, 12):02d}-{self.rng.randint(1, 28):02d}"
            else:
                v = self.rng.randint(rel.lo, rel.hi)
            if v not in used:
                used.add(v)
                return v

    def lookup(self, rel: Relation, arg: str, track: bool = True) -> str | int:
        """The value of rel(arg), created on first use and written to the table."""
        table = self.tables.setdefault(rel.tool, {})
        if arg not in table:
            value = self.value(rel, track)
            table[arg] = _output(rel, value)
            return value
        return json.loads(table[arg])[rel.key]


def _draw(rng: random.Random, knob: int | tuple[int, int]) -> int:
    return knob if isinstance(knob, int) else rng.randint(knob[0], knob[1])


def _pick_chain(rng: random.Random, rels: Sequence[Relation], hops: int, start: str | None = None,
                final: Sequence[str] | None = None) -> list[Relation]:
    """Relations r1..rh with r_i.out == r_{i+1}.arg, no tool twice, no backtracking pair."""
    for _ in range(200):
        cur, chain = start or rng.choice(ENTITY_TYPES), []
        for h in range(hops):
            last = h == hops - 1
            options = [
                r for r in rels
                if r.arg == cur and r not in chain
                and ((final is None or r.out in final) if last else r.out in ENTITY_TYPES)
                and not (chain and (chain[-1].tool, r.tool) in _BACKTRACKS)
            ]
            if not options:
                break
            chain.append(rng.choice(options))
            cur = chain[-1].out
        else:
            return chain
    raise RuntimeError(f"no {hops}-hop chain from {start} ending in {final}")


def _join(items: list[str], last: str = "and") -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" {last} " + items[-1]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _nested_phrase(branch: list[_Hop]) -> str:
    phrase = branch[0].arg
    for hop in branch:
        phrase = hop.rel.phrase.format(x=phrase)
    return phrase


# ---------------------------------------------------------------- question and answer


def _combine(rng: random.Random, branches: list[list[_Hop]], op: str) -> tuple[str, str, str, str]:
    """(question, answer, final reasoning, final content) for the branches and combine op."""
    phrases = [_nested_phrase(b) for b in branches]
    finals = [b[-1].value for b in branches]
    kind = branches[0][-1].rel.out
    if op == "single":
        ans = str(finals[0])
        return (f"What is {phrases[0]}?", ans,
                rng.choice([f"The last lookup returned {ans}, which answers the question.",
                            f"I now know that {phrases[0]} is {ans}."]),
                f"{_cap(phrases[0])} is {ans}.")
    if op == "list":
        ans = ", ".join(str(v) for v in finals)
        question = "What is " + ", what is ".join(phrases[:-1]) + ", and what is " + phrases[-1] + "?"
        facts = [f"{p} is {v}" for p, v in zip(phrases, finals)]
        return (question, ans, "I have every value the question asks for.", _cap(_join(facts)) + ".")
    values = ", ".join(str(v) for v in finals)
    if op == "sum":
        ans = str(sum(finals))
        return (f"What is the sum of {_join(phrases)}?", ans, f"Adding {_join([str(v) for v in finals])} gives {ans}.",
                f"The sum of {_join(phrases)} is {ans}.")
    if op == "difference":
        ans = str(abs(finals[0] - finals[1]))
        unit = " years" if kind == "year" else ""
        question = (f"How many years apart are {phrases[0]} and {phrases[1]}?" if kind == "year"
                    else f"What is the difference between {phrases[0]} and {phrases[1]}?")
        return (question, ans, f"The difference between {finals[0]} and {finals[1]} is {ans}.",
                f"{_cap(phrases[0])} is {finals[0]} and {phrases[1]} is {finals[1]}, so the difference is {ans}{unit}.")
    # op == "compare": the answer is the starting entity of the winning branch
    words = ("larger", "smaller") if kind == "number" else ("earlier", "later")
    word = rng.choice(words)
    pick = max if word in ("larger", "later") else min
    if len(finals) > 2:
        word = {"larger": "largest", "smaller": "smallest", "earlier": "earliest", "later": "latest"}[word]
    win = pick(range(len(finals)), key=lambda i: finals[i])
    ans = branches[win][0].arg
    start_type = branches[0][0].rel.arg
    question = f"Which is {word}: {_join(phrases, 'or')}? Answer with the name of the {start_type}."
    return (question, ans, f"Comparing {values}, the {word} one is {finals[win]}, which belongs to {ans}.",
            f"{_cap(phrases[win])} ({finals[win]}) is the {word} one, so the answer is {ans}.")


def _plan(rng: random.Random, world: _World, scenario: str, hops, branches) -> tuple[list[list[_Hop]], str]:
    """Choose relations and start entities, resolve every gold hop, pick the combine op."""
    rels = relations_for(world.split)
    if scenario in ("single_hop", "multi_hop"):
        n_hops = 1 if scenario == "single_hop" else max(2, _draw(rng, hops))
        chains, op = [_pick_chain(rng, rels, n_hops)], "single"
    else:
        n_hops = 1 if scenario == "parallel_single_hop" else max(2, _draw(rng, hops))
        n_branches = max(2, _draw(rng, branches))
        if rng.random() < 0.5:  # independent lookups, answered as a list
            chains, op = [_pick_chain(rng, rels, n_hops) for _ in range(n_branches)], "list"
        else:  # the same chain from different starts, combined arithmetically or compared
            chain = _pick_chain(rng, rels, n_hops, final=VALUE_KINDS)
            kind = chain[-1].out
            ops = {"number": ["sum", "difference", "compare"], "year": ["difference", "compare"], "date": ["compare"]}[kind]
            if n_branches > 2 and "difference" in ops:
                ops.remove("difference")  # a difference needs exactly two values
            chains, op = [chain] * n_branches, rng.choice(ops)
    plan = []
    for chain in chains:
        arg, branch = world.name(chain[0].arg), []
        for rel in chain:
            branch.append(_Hop(rel, arg, world.lookup(rel, arg)))
            arg = branch[-1].value
        plan.append(branch)
    return plan, op


# ---------------------------------------------------------------- the expert trace


def _step_reasoning(rng: random.Random, step: int, hops: list[_Hop], previous: list[_Hop]) -> str:
    need = _join([h.phrase for h in hops])
    tools = _join(sorted({h.rel.tool for h in hops}))
    if step == 0:
        if len(hops) == 1:
            return rng.choice([f"To answer, I need {need}, so I will call {tools}.",
                               f"I need {need}; {tools} can look that up."])
        return f"I need {need}. These lookups do not depend on each other, so I will make them in parallel."
    known = _join([f"{h.phrase} is {h.value}" for h in previous])
    tail = f"so I will call {tools}." if len(hops) == 1 else "which I can look up in parallel."
    return f"{_cap(known)}. Next I need {need}, {tail}"


def _trace(rng: random.Random, plan: list[list[_Hop]], final_reasoning: str, final_content: str) -> list[dict]:
    trace: list[dict] = []
    previous: list[_Hop] = []
    for step in range(max(len(b) for b in plan)):
        hops = [b[step] for b in plan if len(b) > step]
        trace.append({
            "role": "assistant",
            "reasoning": _step_reasoning(rng, step, hops, previous),
            "content": "",
            "tool_calls": [{"name": h.rel.tool, "arguments": {h.rel.arg: h.arg}} for h in hops],
        })
        trace += [{"role": "tool", "name": h.rel.tool, "content": _output(h.rel, h.value)} for h in hops]
        previous = hops
    trace.append({"role": "assistant", "reasoning": final_reasoning, "content": final_content})
    return trace


# ---------------------------------------------------------------- tools and tables


def tool_schema(rel: Relation) -> dict:
    return {
        "type": "function",
        "function": {
            "name": rel.tool,
            "description": rel.description,
            "parameters": {
                "type": "object",
                "properties": {rel.arg: {"type": "string", "description": f"The name of the {rel.arg}."}},
                "required": [rel.arg],
            },
        },
    }


def _pick_distractors(rng: random.Random, rels: Sequence[Relation], needed: list[Relation], n: int) -> list[Relation]:
    """About half confusable (same family, e.g. get_birth_year next to get_birthplace), the rest random."""
    families = {r.family for r in needed}
    unused = [r for r in rels if r not in needed]
    similar = [r for r in unused if r.family in families]
    rng.shuffle(similar)
    chosen = similar[: (n + 1) // 2]
    rest = [r for r in unused if r not in chosen]
    rng.shuffle(rest)
    return chosen + rest[: n - len(chosen)]


def _fill_tables(world: _World, needed: list[Relation], distractors: list[Relation], n_decoys: int) -> None:
    """Give every offered tool plausible entries beyond the gold ones.

    A call with a wrong but existing argument then returns a real-looking answer (as in a real
    API) instead of an error, so precision is not free; every tool also gets `n_decoys`
    entries for entities that appear nowhere else.
    """
    task_entities = {t: list(v) for t, v in world.entities.items()}  # snapshot: decoys are not task entities
    for rel in needed + distractors:
        for arg in task_entities[rel.arg][:4]:
            world.lookup(rel, arg, track=False)
        for _ in range(n_decoys):
            world.lookup(rel, world.name(rel.arg, track=False), track=False)


def _unambiguous(tables: dict[str, dict[str, str]], unsolved: dict[str, list[str]], gold: dict[str, dict[str, str]]) -> bool:
    """Every table output of a scored tool matches exactly its own expected string (gold
    entries) or none (others), so the FTRL rule credits exactly the gold calls."""
    for tool, expected in unsolved.items():
        for arg, out in tables[tool].items():
            hits = [e for e in expected if matches(e, out)]
            want = [gold[tool][arg]] if arg in gold.get(tool, {}) else []
            if hits != want:
                return False
    return True


# ---------------------------------------------------------------- generation


def _build_task(task_id: str, rng: random.Random, split: str, scenario: str, hops, branches, n_distractors, n_decoys) -> Task | None:
    world = _World(rng, split)
    plan, op = _plan(rng, world, scenario, hops, branches)
    question, answer, final_reasoning, final_content = _combine(rng, plan, op)
    needed = list(dict.fromkeys(h.rel for b in plan for h in b))  # unique, in first-use order
    distractors = _pick_distractors(rng, relations_for(split), needed, _draw(rng, n_distractors))
    _fill_tables(world, needed, distractors, n_decoys)

    unsolved: dict[str, list[str]] = {}
    gold: dict[str, dict[str, str]] = {}
    for step in range(max(len(b) for b in plan)):  # trace order, which is the order calls are made
        for b in plan:
            if len(b) > step:
                hop = b[step]
                unsolved.setdefault(hop.rel.tool, []).append(str(hop.value))
                gold.setdefault(hop.rel.tool, {})[hop.arg] = str(hop.value)
    if not _unambiguous(world.tables, unsolved, gold):
        return None

    offered = needed + distractors
    rng.shuffle(offered)
    return Task(
        id=task_id,
        messages=[{"role": "user", "content": INSTRUCTION + question}],
        tools=[tool_schema(r) for r in offered],
        trace=_trace(rng, plan, final_reasoning, final_content),
        metadata={
            "benchmark": "toolworld",
            "scenario": scenario,
            "split": split,
            "question": question,
            "answer": answer,
            "unsolved_set": unsolved,
            "toolworld_tables": {r.tool: world.tables[r.tool] for r in offered},
        },
    )


def generate_tasks(
    n: int,
    seed: int = 0,
    split: str = "train",
    scenarios: Sequence[str] | None = None,
    hops: int | tuple[int, int] | None = None,
    branches: int | tuple[int, int] | None = None,
    n_distractors: int | tuple[int, int] | None = None,
    n_decoys: int = 2,
) -> list[Task]:
    """n deterministic tasks; task i has scenario scenarios[i % len(scenarios)].

    Task i depends only on (split, seed, i, knobs), so a longer run extends a shorter one.
    `hops` applies to the multi-hop scenarios (at least 2), `branches` to the parallel ones
    (at least 2); an int fixes a knob, a (lo, hi) pair draws it per task. A knob left None takes
    the split's default: `OOD_KNOBS` for "ood", else all scenarios, 2-3 hops and branches, 2-4
    distractors.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    defaults = OOD_KNOBS if split == "ood" else {"scenarios": SCENARIOS, "hops": (2, 3), "branches": (2, 3),
                                                 "n_distractors": (2, 4)}
    scenarios = defaults["scenarios"] if scenarios is None else scenarios
    hops = defaults["hops"] if hops is None else hops
    branches = defaults["branches"] if branches is None else branches
    n_distractors = defaults["n_distractors"] if n_distractors is None else n_distractors
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown or not scenarios:
        raise ValueError(f"scenarios must be a non-empty subset of {SCENARIOS}, got {list(scenarios)}")
    tasks = []
    for i in range(n):
        task_id = f"toolworld_{split}_{seed}_{i:05d}"
        scenario = scenarios[i % len(scenarios)]
        for attempt in range(100):  # rare name/number clashes are redrawn, deterministically
            rng = random.Random(f"toolworld:{split}:{seed}:{i}:{attempt}")
            task = _build_task(task_id, rng, split, scenario, hops, branches, n_distractors, n_decoys)
            if task is not None:
                tasks.append(task)
                break
        else:
            raise RuntimeError(f"could not build {task_id}")
    return tasks


# ---------------------------------------------------------------- the environment

class ToolworldEnv(FtrlScoredEnv):
    """One episode over a ToolWorld task (the Environment protocol).

    step(): read calls from the visible text (after any `</think>`), validated against the
    task's schemas; execute valid ones against the task's tables; answer every block in text
    order (an output, or an error observation); score the step with FTRL's per-step reward.
    The episode is done at a turn with no `<tool_call>` markup, or after `max_steps` turns.
    """

    def __init__(self, max_steps: int = 10, reward: str = "solve_f1"):
        self._tables: dict = {}
        self._params: dict[str, str | None] = {}
        super().__init__(max_steps, reward)

    def _load(self, task: Task) -> None:
        tables = task.metadata.get("toolworld_tables") or {}
        self._tables = {tool: {_lookup_key(k): v for k, v in entries.items()} for tool, entries in tables.items()}
        self._params = {}
        for schema in task.tools:
            params = schema["function"].get("parameters") or {}
            names = params.get("required") or list(params.get("properties") or {})
            self._params[schema["function"]["name"]] = names[0] if names else None

    def execute(self, call: ToolCall) -> tuple[str, bool]:
        """(output, found). Unknown keys get an API-style error object, not an exception."""
        param, table = self._params.get(call.name), self._tables.get(call.name)
        if param is None or table is None:
            return json.dumps({"error": f"{call.name} is unavailable"}), False
        value = call.arguments.get(param)
        if not isinstance(value, str):
            return json.dumps({"error": f"'{param}' must be a string"}), False
        output = table.get(_lookup_key(value))
        if output is None:
            shown = value if len(value) <= 80 else value[:77] + "..."
            return json.dumps({"error": f"no {param} named {shown}"}, ensure_ascii=False), False
        return output, True


def make_env(task: Task | None = None, max_steps: int = 10, reward: str = "solve_f1") -> ToolworldEnv:
    """EnvFactory for the rollout engine: a fresh environment per episode."""
    return ToolworldEnv(max_steps=max_steps, reward=reward)
