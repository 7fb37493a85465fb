"""Prompts that cannot fit the model's context with room for the completion, found before training.

A prompt is overlong when its tokens exceed `train.max_prompt_tokens`, or (by default) the model's
context (`config.max_position_embeddings`) minus `sampling.max_completion_tokens`. Each is reported
with its id (and `path:line` when it comes from a file); more than `train.max_overlong_prompts`
(default 0) is refused unless `train.drop_overlong: true`, which drops them.
"""

from __future__ import annotations

from pact_cotrain.data.trace_format import Task
from pact_cotrain.render import prompt_ids
from pact_cotrain.training.checkpoints import RunError


def prompt_budget(cfg: dict, model) -> int | None:
    train = cfg["train"]
    if train.get("max_prompt_tokens"):
        return int(train["max_prompt_tokens"])
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if context is None:
        return None
    return int(context) - int(cfg["sampling"]["max_completion_tokens"])


def _lines_of(path: str, ids: set[str]) -> dict[str, int]:
    from pact_cotrain.data.trace_format import iter_rows, task_from_record

    return {item.id: line for line, item in iter_rows(path, task_from_record) if isinstance(item, Task) and item.id in ids}


def check_prompt_lengths(tasks: list[Task], tokenizer, model, cfg: dict, log=print) -> list[Task]:
    """The tasks to train on; RunError when too many prompts are overlong and dropping is not allowed."""
    budget = prompt_budget(cfg, model)
    if budget is None:
        return tasks
    lengths = {t.id: len(prompt_ids(tokenizer, t)) for t in tasks}
    overlong = [t for t in tasks if lengths[t.id] > budget]
    if not overlong:
        return tasks
    data = cfg.get("data", {})
    lines = _lines_of(data["path"], {t.id for t in overlong}) if data.get("source") == "file" else {}
    where = [f"{data['path']}:{lines[t.id]}" if t.id in lines else "" for t in overlong]
    for task, at in zip(overlong, where):
        log(f"{at + ': ' if at else ''}task {task.id}: prompt of {lengths[task.id]} tokens exceeds the "
            f"{budget}-token prompt budget")
    train = cfg["train"]
    summary = f"{len(overlong)} of {len(tasks)} tasks have a prompt over {budget} tokens"
    if train.get("drop_overlong"):
        log(f"{summary}: dropped (train.drop_overlong)")
        kept = [t for t in tasks if lengths[t.id] <= budget]
        if not kept:
            raise RunError(f"{summary}: no task is left to train on")
        return kept
    if len(overlong) > int(train.get("max_overlong_prompts") or 0):
        first = f"{where[0]}: " if where[0] else ""
        raise RunError(f"{first}{summary} (first: {overlong[0].id}); shorten them, raise train.max_prompt_tokens, "
                       f"or set train.drop_overlong=true")
    return tasks
