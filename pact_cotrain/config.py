"""Configs are data: `configs/base.yaml` holds every key and its default, a method file (e.g.
`configs/pact.yaml`) overrides some, and `a.b=value` overrides (YAML values) override any.

`load_config` merges the three and refuses a key base.yaml does not know, naming the closest known
key. Used by `pact train`, `pact study`, `pact plan` and the Python API alike.
"""

from __future__ import annotations

import copy
import os
from importlib import resources
from pathlib import Path

import yaml

from pact_cotrain.errors import UserError, closest, did_you_mean
from pact_cotrain.rollout.engine import SamplingConfig
from pact_cotrain.training.methods import MethodConfig


def builtin_text(name: str) -> str:
    return resources.files("pact_cotrain").joinpath(f"configs/{name}.yaml").read_text()


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (over or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def builtin_configs() -> list[str]:
    """The names `--config` accepts besides a path: configs/<name>.yaml, base excepted."""
    folder = resources.files("pact_cotrain").joinpath("configs")
    return sorted(f.name[:-5] for f in folder.iterdir() if f.name.endswith(".yaml") and f.name != "base.yaml")


def config_text(config: str) -> str:
    if os.path.exists(config):
        return Path(config).read_text()
    if config in builtin_configs():
        return builtin_text(config)
    raise UserError(f"unknown config {config!r} (not a file, not a built-in){did_you_mean(config, builtin_configs())}; "
                    f"built-ins: {', '.join(builtin_configs())}")


def known_config_keys(base: dict) -> tuple[set[str], set[str]]:
    """(every dotted key a config may set, the keys below which anything goes).

    The keys are base.yaml's, plus `method.<field>` for every MethodConfig field and `sampling.<field>`
    for every SamplingConfig field (both are built from those sections). A key whose default is a
    mapping with no keys or null (`train.vllm`, `train.lora`, `method.extra`) takes any sub-keys."""
    from dataclasses import fields

    keys, free = set(), set()

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            dotted = prefix + key
            keys.add(dotted)
            if isinstance(value, dict) and value:
                walk(value, dotted + ".")
            elif value is None or isinstance(value, dict):
                free.add(dotted)

    walk(base, "")
    for section, cls in (("method", MethodConfig), ("sampling", SamplingConfig)):
        for f in fields(cls):
            keys.add(f"{section}.{f.name}")
            if f.name == "extra":
                free.add(f"{section}.{f.name}")
    return keys, free


def _suggest(key: str, keys: set[str]) -> str:
    """The known key a typo most likely meant: same last part elsewhere (`max_steps` -> `train.max_steps`),
    else the closest spelling."""
    last = key.rsplit(".", 1)[-1]
    same_name = sorted(k for k in keys if k.rsplit(".", 1)[-1] == last and k != key)
    if same_name:
        return f"; did you mean `{same_name[0]}`?"
    hint = did_you_mean(key, keys)
    if hint:
        return hint
    by_last = {k.rsplit(".", 1)[-1]: k for k in sorted(keys)}
    match = closest(last, by_last)
    return f"; did you mean `{by_last[match[0]]}`?" if match else ""


def _unknown_keys(node: dict, keys: set[str], free: set[str], prefix: str = "") -> list[str]:
    out = []
    for key, value in node.items():
        dotted = prefix + str(key)
        if dotted in free:
            continue
        if dotted not in keys:
            out.append(dotted)
        elif isinstance(value, dict) and any(k.startswith(dotted + ".") for k in keys):
            out += _unknown_keys(value, keys, free, dotted + ".")
    return out


def _check_keys(node: dict, keys: set[str], free: set[str], where: str, full_key: str | None = None) -> None:
    unknown = _unknown_keys(node, keys, free)
    if unknown:
        key = full_key or unknown[0]
        raise UserError(f"{where}: unknown config key `{key}`{_suggest(key, keys)} "
                        "(every key is listed in pact_cotrain/configs/base.yaml)")


def load_config(config: str, overrides: list[str] = ()) -> dict:
    """Base defaults <- the config file (path or built-in name) <- `a.b=value` overrides (YAML values).

    A key that base.yaml (or MethodConfig / SamplingConfig) does not know is refused with the closest
    known key, rather than silently ignored; a value of the wrong type or range is refused with the
    file or override that set it (`config_schema`); bad YAML with its file and line."""
    from pact_cotrain.config_schema import check_values

    base = yaml.safe_load(builtin_text("base"))
    keys, free = known_config_keys(base)
    where = config_where(config)
    loaded = parse_yaml(config_text(config), where) or {}
    if not isinstance(loaded, dict):
        raise UserError(f"{where}: a config is a YAML mapping of keys, got {type(loaded).__name__}")
    _check_keys(loaded, keys, free, where)
    origin = {key: where for key in _dotted_keys(loaded)}
    cfg = _merge(base, loaded)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r} is not key=value (e.g. train.max_steps=20)")
        key, raw = item.split("=", 1)
        _check_keys(_nested(key, None), keys, free, f"override {item!r}", full_key=key)
        node = cfg
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = parse_yaml(raw, f"override {item!r}")
        origin = {k: v for k, v in origin.items() if not k.startswith(key + ".")}
        origin[key] = f"override {item!r}"
    data = cfg.get("data") or {}
    if data.get("source") is None:  # a data.path means the rows are read from it
        data["source"] = "file" if data.get("path") else "toolworld"
    problem = check_values(cfg, base, origin)
    if problem:
        raise UserError(problem)
    try:
        MethodConfig(**cfg["method"])
    except ValueError as exc:  # a combination MethodConfig refuses
        raise UserError(f"{where}: {exc}") from None
    return cfg


def config_where(config: str) -> str:
    """How messages name a config: its path, or the built-in file a name stands for."""
    if os.path.exists(config) or config not in builtin_configs():
        return config
    return f"pact_cotrain/configs/{config}.yaml"


def parse_yaml(text: str, where: str):
    """yaml.safe_load, with a parse error as one line naming the file (or override), line and column."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if mark is not None and not where.startswith("override"):  # an override's value is one short line
            where = f"{where}:{mark.line + 1}:{mark.column + 1}"
        raise UserError(f"{where}: not valid YAML: {problem}") from None


def _dotted_keys(node: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in node.items():
        dotted = prefix + str(key)
        out.append(dotted)
        if isinstance(value, dict):
            out += _dotted_keys(value, dotted + ".")
    return out


def _nested(dotted: str, value) -> dict:
    """`a.b.c` -> {"a": {"b": {"c": value}}}, the shape _check_keys walks."""
    for part in reversed(dotted.split(".")):
        value = {part: value}
    return value
