"""ToolWorld's out-of-distribution split: its own tools, held-out entity names, 4-hop chains, 4-8
distractors; deterministic, and every expert trace replays to a perfect score."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest

from pact_cotrain.envs.toolworld import (
    OOD_RELATIONS,
    RELATIONS,
    WARMUP_RELATIONS,
    generate_tasks,
    make_env,
    split_of,
)
from tests.test_toolworld import _names, _replay

N = 256  # the size of the study's OOD evaluation set


@pytest.fixture(scope="module")
def ood():
    return generate_tasks(N, seed=0, split="ood")


def _digest(tasks) -> str:
    return hashlib.sha256(json.dumps([t.to_record() for t in tasks], sort_keys=True).encode()).hexdigest()


def _call_turns(task) -> list[dict]:
    return [m for m in task.trace if m["role"] == "assistant" and m.get("tool_calls")]


def test_ood_generation_is_deterministic_and_extends(ood):
    assert len(ood) == N
    assert _digest(generate_tasks(N, seed=0, split="ood")) == _digest(ood)
    assert _digest(generate_tasks(40, seed=0, split="ood")) == _digest(ood[:40])  # a longer set extends a shorter one
    assert _digest(generate_tasks(40, seed=1, split="ood")) != _digest(ood[:40])
    assert len({t.id for t in ood}) == N and ood[7].id == "toolworld_ood_0_00007"
    assert {t.metadata["split"] for t in ood} == {"ood"}


def test_ood_tools_occur_in_no_other_split(ood):
    ood_tools = {r.tool for r in OOD_RELATIONS}
    assert not ood_tools & {r.tool for r in RELATIONS + WARMUP_RELATIONS}
    assert {t for task in ood for t in task.tool_names} <= ood_tools
    others = (generate_tasks(400, seed=0, split="train") + generate_tasks(256, seed=0, split="warmup")
              + generate_tasks(256, seed=1000, split="test"))
    assert not {t for task in others for t in task.tool_names} & ood_tools


def test_ood_entity_names_come_from_the_held_out_pool(ood):
    names = _names(ood)
    assert len(names) > 2000
    assert {split_of(n) for n in names} == {"test"}  # never a training (or warm-up) name
    train = _names(generate_tasks(400, seed=0, split="train"))
    assert not {n.casefold() for n in names} & {n.casefold() for n in train}


def test_ood_chains_are_deeper_and_distractors_more_than_in_training(ood):
    assert Counter(t.metadata["scenario"] for t in ood) == {"multi_hop": N // 2, "parallel_multi_hop": N // 2}
    train = generate_tasks(400, seed=0, split="train")
    deepest_train = max(len(_call_turns(t)) for t in train)
    most_train_distractors = max(len(t.tool_names) - len(t.metadata["unsolved_set"]) for t in train)
    assert (deepest_train, most_train_distractors) == (3, 4)
    distractors = Counter()
    for task in ood:
        turns = _call_turns(task)
        assert len(turns) == deepest_train + 1 == 4
        width = 1 if task.metadata["scenario"] == "multi_hop" else 2
        assert all(len(turn["tool_calls"]) == width for turn in turns)
        n = len(task.tool_names) - len(task.metadata["unsolved_set"])
        distractors[n] += 1
        assert len(task.tool_names) == len(set(task.tool_names))
        assert set(task.metadata["toolworld_tables"]) == set(task.tool_names)
    assert set(distractors) == {4, 5, 6, 7, 8}  # twice training's 2-4, every count drawn


def test_every_ood_expert_trace_calls_offered_tools_and_replays_perfectly(ood):
    for task in ood:
        offered = set(task.tool_names)
        assert {c["name"] for turn in _call_turns(task) for c in turn["tool_calls"]} <= offered, task.id
        env = make_env(task)
        pairs, results = _replay(task, env)
        assert all(env_msgs == trace_msgs for env_msgs, trace_msgs in pairs), task.id
        m = env.metrics()
        assert (m["solve_r"], m["solve_p"], m["solve_f1"], m["answer_correct"]) == (1.0, 1.0, 1.0, 1.0), task.id


def test_ood_knobs_can_still_be_set():
    tasks = generate_tasks(6, seed=3, split="ood", scenarios=("single_hop",), n_distractors=2)
    assert all(len(_call_turns(t)) == 1 and len(t.tool_names) == 3 for t in tasks)
    assert {t for task in tasks for t in task.tool_names} <= {r.tool for r in OOD_RELATIONS}


def test_a_study_set_can_take_the_ood_tools_at_the_training_structure(tmp_path):
    """Study v2's toolworld_ood_tools: the OOD split's tools, every scenario, 2-3 hops, 2-4 distractors."""
    from pact_cotrain.data.trace_format import load_tasks
    from pact_cotrain.study.runner import load_study
    from pact_cotrain.study.evaluate import write_generated_sets

    study = load_study("v2")
    study["eval"]["sets"] = {"toolworld_ood_tools": study["eval"]["sets"]["toolworld_ood_tools"]}
    study["eval"]["sets"]["toolworld_ood_tools"]["toolworld"]["n"] = 16
    write_generated_sets(study, tmp_path)
    tasks = load_tasks(str(tmp_path / "eval_toolworld_ood_tools.jsonl"))
    assert {t.metadata["scenario"] for t in tasks} == {"single_hop", "parallel_single_hop", "multi_hop",
                                                        "parallel_multi_hop"}
    assert {t for task in tasks for t in task.tool_names} <= {r.tool for r in OOD_RELATIONS}
    assert max(len(_call_turns(t)) for t in tasks) <= 3  # the training depth, not the OOD split's 4 hops
