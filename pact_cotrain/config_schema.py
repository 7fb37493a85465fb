"""The type and range of every config value, checked when a config loads (`config.load_config`).

The JSON schema is derived, not written out: each key's type comes from its default in base.yaml
(an int default takes integers, a float default numbers, a bool default true/false, ...) and, for
`method.*` and `sampling.*`, from the MethodConfig / SamplingConfig field annotations. `RULES` adds
what a default cannot say: ranges, the names a string may take, and the keys whose null default
stands for a typed value. jsonschema checks the merged config; the first violation is one line
naming where the value came from (the config file or the override), the key, the value and what is
allowed.
"""

from __future__ import annotations

import math
from dataclasses import fields

import jsonschema

from pact_cotrain import losses
from pact_cotrain.errors import did_you_mean
from pact_cotrain.render import TRACE_VIEWS
from pact_cotrain.rollout.engine import SamplingConfig
from pact_cotrain.training.methods import METHODS, REWARDS, MethodConfig

INTEGER = {"type": "integer"}
NUMBER = {"type": "number"}


def _at_least(n: int) -> dict:
    return {"type": "integer", "minimum": n}


def _null_or(schema: dict) -> dict:
    return {"anyOf": [{"type": "null"}, schema]}


def _unit() -> dict:
    return {"type": "number", "minimum": 0, "maximum": 1}


def _one_of(*names) -> dict:
    return {"enum": list(names)}


# What a default cannot say. Keys not listed take the type of their default (null: anything).
RULES: dict[str, dict] = {
    "dtype": _one_of("float32", "bfloat16", "float16"),
    "seed": _at_least(0),
    "phases": _null_or({"type": "array", "items": {"type": "object"}}),
    "data.source": _one_of("toolworld", "file"),
    "data.path": _null_or({"type": "string"}),
    "data.n_train": _at_least(1),
    "data.split": _null_or({"type": "string"}),  # toolworld's split, or the split read from data.path
    # A positive step count: null / 0 / -1 would fall back to TRL's epochs mode, which nothing here reads
    # (run_train compares steps to it), and an epoch count is not a step count.
    "train.max_steps": _at_least(1),
    "train.prompts_per_step": _null_or(_at_least(1)),  # null: train.global_prompts_per_step decides
    "train.global_prompts_per_step": _null_or(_at_least(1)),
    "tool_timeout_s": {"type": "number", "exclusiveMinimum": 0},
    "max_tool_output_chars": _at_least(1),
    "tool_sandbox": {"type": "boolean"},
    "train.k": _at_least(1),
    "train.learning_rate": {"type": "number", "exclusiveMinimum": 0},
    "train.warmup_steps": _at_least(0),
    "train.num_iterations": _at_least(1),
    "train.micro_batch_tokens": _null_or(_at_least(1)),
    "train.max_grad_norm": _null_or({"type": "number", "minimum": 0}),  # 0 / null: no clipping (transformers)
    "train.rollout_dtype": _null_or(_one_of("auto", "float32", "bfloat16", "float16")),
    "train.rollout_backend": _one_of("hf", "vllm"),
    "train.forward_per_group": _null_or({"type": "boolean"}),
    "train.attn_implementation": _null_or({"type": "string"}),
    # YAML reads an unquoted `no` as false; precision.resolve_mixed_precision takes it (and null) as "no".
    "train.mixed_precision": _null_or(_one_of("no", "bf16", "fp32", "auto", False)),
    "train.save_steps": _at_least(0),  # 0: no checkpoints
    "train.save_total_limit": _null_or(_at_least(0)),  # null / 0: keep all
    "train.max_prompt_tokens": _null_or(_at_least(1)),
    "train.max_overlong_prompts": _at_least(0),
    "train.logging_steps": _at_least(1),
    "train.context_kl_steps": _at_least(0),
    "train.report_to": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    "train.progress": _one_of("rich", "tqdm"),
    "train.lora": _null_or({"type": "object"}),
    "sampling.temperature": {"type": "number", "exclusiveMinimum": 0},
    "sampling.top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "sampling.max_turns": _at_least(1),
    "sampling.max_new_tokens_per_turn": _at_least(1),
    "sampling.max_completion_tokens": _at_least(1),
    "sampling.generation_batch_size": _null_or(_at_least(1)),
    "method.name": _one_of(*METHODS),
    "method.reward": _one_of(*REWARDS),
    "method.anchor_q": _unit(),
    "method.anchor_mode": _one_of("sample", "mixture"),
    "method.surrogate": _one_of(*losses.TRACE_RATIO_FORMS),
    "method.trace_view": _one_of(*TRACE_VIEWS),
    "method.reasoning_schedule": _one_of(*losses.REASONING_SCHEDULES),
    "method.toolcall_schedule": _one_of("linear", "staged", "constant", "none"),
    "method.answer_weight": _null_or({"type": "number", "minimum": 0}),
    "method.sft_coef": {"type": "number", "minimum": 0},
    "method.sft_fraction": _unit(),
    "method.chord_schedule": _one_of("paper", "linear", "cosine", "constant"),
    "method.chord_mu_peak": _unit(),
    "method.chord_mu_valley": _unit(),
    "method.chord_mu_warmup_steps": _at_least(0),
    "method.chord_mu_decay_steps": _null_or(_at_least(0)),
    "method.eps_low": {"type": "number", "minimum": 0},
    "method.eps_high": {"type": "number", "minimum": 0},
    "method.aggregation": _one_of("token_mean", "seq_mean_token_mean", "token_sum_norm"),
}


def _type_of_default(value) -> dict:
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return INTEGER
    if isinstance(value, float):
        return NUMBER
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, list):
        return {"type": "array"}
    if isinstance(value, dict):
        return {"type": "object"}
    return {}  # null: anything, unless RULES says otherwise


def _type_of_annotation(annotation) -> dict:
    """A dataclass field's annotation (a string under `from __future__ import annotations`)."""
    table = {"str": {"type": "string"}, "float": NUMBER, "int": INTEGER, "bool": {"type": "boolean"},
             "dict": {"type": "object"}, "float | None": _null_or(NUMBER), "int | None": _null_or(INTEGER)}
    return table.get(str(annotation).replace("typing.", ""), {})


def key_schemas(base: dict) -> dict[str, dict]:
    """dotted key -> its JSON schema: the default's type, the dataclass field's, then RULES."""
    out: dict[str, dict] = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            dotted = prefix + key
            if isinstance(value, dict) and value:
                walk(value, dotted + ".")
            else:
                out[dotted] = _type_of_default(value)

    walk(base, "")
    for section, cls in (("method", MethodConfig), ("sampling", SamplingConfig)):
        for f in fields(cls):
            out[f"{section}.{f.name}"] = _type_of_annotation(f.type)
    out.update(RULES)
    return out


def build_schema(base: dict) -> dict:
    """The whole config as one JSON schema (nested objects for the sections)."""
    root: dict = {"type": "object", "properties": {}}
    for dotted, schema in key_schemas(base).items():
        node = root
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node["properties"].setdefault(part, {"type": "object", "properties": {}})
        node["properties"][parts[-1]] = schema
    return root


def describe(schema: dict) -> str:
    """What a key's schema allows, in words: `an integer >= 1`, `one of: hf, vllm`, `null or ...`."""
    if "anyOf" in schema:
        return " or ".join(describe(s) for s in schema["anyOf"])
    if "enum" in schema:
        return "one of: " + ", ".join("no" if v is False else str(v) for v in schema["enum"])
    kind = schema.get("type")
    words = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
             "array": "a list", "object": "a mapping", "null": "null"}.get(kind, "any value")
    bounds = []
    if "minimum" in schema:
        bounds.append(f">= {schema['minimum']}")
    if "exclusiveMinimum" in schema:
        bounds.append(f"> {schema['exclusiveMinimum']}")
    if "maximum" in schema:
        bounds.append(f"<= {schema['maximum']}")
    return " ".join([words, " and ".join(bounds)]).strip()


def coerce_numbers(cfg: dict, schemas: dict[str, dict]) -> None:
    """YAML 1.1 reads `5e-6` (no dot) as a string: such a string becomes the float it spells where
    the key takes a number. Nothing else is coerced."""
    for dotted, schema in schemas.items():
        wanted = [s.get("type") for s in schema.get("anyOf", [schema])]
        if "number" not in wanted:
            continue
        *parents, last = dotted.split(".")
        node = cfg
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(last), str):
            try:
                value = float(node[last])
            except ValueError:
                continue
            if math.isfinite(value):
                node[last] = value


def check_values(cfg: dict, base: dict, origin: dict[str, str]) -> str | None:
    """The first value `cfg` gets wrong, as one line (None when all fit). `origin` maps a dotted key
    (or a section) to where it was set: the config file or `override 'a.b=v'`."""
    schemas = key_schemas(base)
    coerce_numbers(cfg, schemas)
    for key, value in _leaves(cfg):
        if isinstance(value, float) and not math.isfinite(value):  # jsonschema's bounds let nan through
            return f"{_origin(key, origin)}: {key}={value} is not allowed: config values are finite numbers"
    validator = jsonschema.Draft202012Validator(build_schema(base))
    errors = sorted(validator.iter_errors(cfg), key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return None
    error = errors[0]
    key = ".".join(str(p) for p in error.absolute_path)
    # An anyOf / enum error sits on the key itself; a type error inside a section names the section.
    schema = schemas.get(key, error.schema)
    where = _origin(key, origin)
    value = error.instance
    shown = "null" if value is None else repr(value)
    if isinstance(value, float) and not math.isfinite(value):
        shown = str(value)
    hint = ""
    choices = [c for s in schema.get("anyOf", [schema]) for c in s.get("enum", []) if isinstance(c, str)]
    if isinstance(value, str) and choices:
        hint = did_you_mean(value, choices)
    return f"{where}: {key}={shown} is not allowed: {key} takes {describe(schema)}{hint}"


def _leaves(node, prefix: str = ""):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _origin(key: str, origin: dict[str, str]) -> str:
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        found = origin.get(".".join(parts[:n]))
        if found:
            return found
    return "pact_cotrain/configs/base.yaml"
