"""Task rows from anywhere `datasets` reads, and from rows in memory (the Python API).

    load_task_rows("tasks.jsonl")            # JSONL: path:line: field: reason on a bad row
    load_task_rows("tasks.parquet")          # parquet (also .csv, .json, .arrow), read by `datasets`
    load_task_rows("my_dataset/")            # a `save_to_disk` folder, or a folder of data files
    load_task_rows("org/name", split="train")   # a dataset id: `datasets.load_dataset`
    tasks_from_rows([{"prompt": "...", "answer": 3}, ...], "train_dataset")

A row is the task/trace format of `trace_format.py`, loosened the way TRL's rows are:

* `prompt` (TRL's column: a list of messages, or a string read as one user message) may stand
  instead of `messages`;
* `tools` may be omitted when the tools come from `tools=`, an environment or MCP servers:
  `default_tools(row)` then gives them (the trace is checked against them);
* `id` may be omitted: the row's position names it (`row-<n>`, counting from 1);
* every other column is kept as metadata, which reaches `reset(**row)` and the reward functions.

Rows read by `datasets` (parquet, folders, ids) hold nested records as Arrow structs, which give every
record the union of the keys and None for the ones it lacks; such None values inside `messages`,
`trace` and `tools` are dropped, and tool-call `arguments` stored as JSON strings are decoded. Each row
is then validated as a JSONL row is. A source that cannot be read is a UserError of one line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable

from pact_cotrain.errors import UserError

from .trace_format import DEFAULT_MAX_ROW_BYTES, Task, TraceFormatError, _Invalid, read_jsonl, task_from_record

DefaultTools = Callable[[dict], list[dict]]
DATA_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}
_NESTED = ("messages", "prompt", "trace", "tools")


def _drop_none(value):
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def _decode_arguments(messages) -> None:
    for msg in messages or []:
        for call in (msg.get("tool_calls") or []) if isinstance(msg, dict) else []:
            if isinstance(call, dict) and isinstance(call.get("arguments"), str):
                try:
                    call["arguments"] = json.loads(call["arguments"])
                except json.JSONDecodeError:
                    pass  # left as is: the validator names the field


def normalise_row(row: dict, position: int, default_tools: DefaultTools | None = None,
                  from_arrow: bool = False) -> dict:
    """A loosened row (module docstring) as a task/trace record; raises _Invalid naming the field."""
    if not isinstance(row, dict):
        raise _Invalid("<record>", "must be a JSON object")
    record = dict(row)
    if from_arrow:
        for key in _NESTED:
            if key in record and record[key] is not None:
                record[key] = _drop_none(record[key])
        _decode_arguments(record.get("trace"))
        _decode_arguments(record.get("messages"))
    if "messages" not in record and "prompt" in record:
        prompt = record.pop("prompt")
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        record["messages"] = prompt
    elif "messages" in record and "prompt" in record:
        raise _Invalid("prompt", "a row has `messages` or TRL's `prompt`, not both")
    if record.get("id") is None:
        record["id"] = f"row-{position}"
    if record.get("trace") is None:
        record.pop("trace", None)
    if record.get("tools") is None:
        record["tools"] = list(default_tools(record)) if default_tools is not None else []
    return record


def tasks_from_rows(rows: Iterable[dict], where: str, default_tools: DefaultTools | None = None,
                    from_arrow: bool = True) -> list[Task]:
    """Validated Tasks from rows in memory; TraceFormatError `where: row N: field: reason` on the first
    bad row (N from 1), counting all bad rows, and on duplicate ids."""
    tasks, first_error, bad, seen = [], None, 0, {}
    for position, row in enumerate(rows, start=1):
        try:
            task = task_from_record(normalise_row(row, position, default_tools, from_arrow))
            if task.id in seen:
                raise _Invalid("id", f"duplicate id {task.id!r} (first in row {seen[task.id]})")
            seen[task.id] = position
            tasks.append(task)
        except _Invalid as exc:
            bad += 1
            first_error = first_error or (position, exc.field_name, exc.reason)
    if first_error is not None:
        position, field_name, reason = first_error
        raise TraceFormatError(f"{where}: row {position}", None, field_name, reason, bad_rows=bad)
    if not tasks:
        raise TraceFormatError(where, None, "<rows>", "no task rows")
    return tasks


def _is_local(path: str) -> bool:
    return Path(path).exists() or Path(path).suffix in DATA_SUFFIXES or path.startswith((".", "/", "~"))


def load_dataset_rows(path: str, split: str | None = "train") -> list[dict]:
    """The rows of a data file `datasets` reads, a `save_to_disk` folder, a folder of data files or a
    dataset id, as dicts. UserError (one line) when it cannot be read."""
    import datasets

    split = split or "train"
    local = Path(path).expanduser()
    try:
        if local.is_file():
            builder = DATA_SUFFIXES.get(local.suffix)
            if builder is None:
                raise UserError(f"data.path={path}: cannot read a {local.suffix or 'suffix-less'} file; give JSONL, "
                                f"parquet, CSV, JSON or Arrow, a dataset folder or a dataset id")
            dataset = datasets.load_dataset(builder, data_files=str(local), split="train")
        elif local.is_dir() and any((local / name).exists() for name in
                                    ("dataset_info.json", "state.json", "dataset_dict.json")):
            dataset = datasets.load_from_disk(str(local))  # written by save_to_disk
            if isinstance(dataset, datasets.DatasetDict):
                if split not in dataset:
                    raise UserError(f"data.path={path}: no split {split!r} (splits: {', '.join(dataset)}); "
                                    f"set data.split")
                dataset = dataset[split]
        else:
            dataset = datasets.load_dataset(str(local) if local.is_dir() else path, split=split)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds; the user gets one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"data.path={path}: `datasets` could not load it ({type(exc).__name__}: {first})") from None
    return dataset.to_list()


def load_task_rows(path: str, split: str | None = "train", default_tools: DefaultTools | None = None,
                   max_row_bytes: int = DEFAULT_MAX_ROW_BYTES) -> list[Task]:
    """Validated Tasks from a JSONL file (errors as `path:line: field: reason`), or from whatever
    `load_dataset_rows` reads (errors as `path: row N: field: reason`)."""
    if not path:
        raise UserError("data.path is not set: give a JSONL or parquet file, a dataset folder or a dataset id")
    if Path(path).suffix == ".jsonl" or (Path(path).is_file() and Path(path).suffix not in DATA_SUFFIXES):
        if not Path(path).is_file():
            raise UserError(f"data.path={path!r}: no such file (a task/trace JSONL; `pact data convert` or "
                            "`pact data traces` writes one)")
        positions = iter(range(1, 1 << 62))
        return read_jsonl(path, lambda record: task_from_record(normalise_row(record, next(positions), default_tools)),
                          max_row_bytes)
    if _is_local(path) and not Path(path).expanduser().exists():
        raise UserError(f"data.path={path!r}: no such file or folder")
    return tasks_from_rows(load_dataset_rows(path, split), path, default_tools)
