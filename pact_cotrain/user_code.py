"""A user's own Python objects named in a config or on the command line as `MODULE:ATTR`.

    resolve("my_agent:Env", "env")                  -> the class `Env` of my_agent.py
    resolve_list(["rewards:exact", "trace_match"], "reward_funcs", builtins={"trace_match": f})

The current directory is put on the import path first, as `python -m` would, so a module next to
the config imports without installing it. A spec that does not import is a UserError of one line
naming the spec and the key, raised before any model loads.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from pact_cotrain.errors import UserError


def _with_cwd_on_path() -> None:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def is_spec(value: Any) -> bool:
    """`MODULE:ATTR` (not a URL, not a Windows drive)."""
    return isinstance(value, str) and value.count(":") == 1 and "://" not in value and not value.startswith(":") \
        and not value.endswith(":")


def resolve(spec: Any, key: str) -> Any:
    """The object `spec` names (`module.sub:attr.sub`); any other value is returned as is."""
    if not isinstance(spec, str):
        return spec
    if not is_spec(spec):
        raise UserError(f"{key}={spec!r}: expected MODULE:ATTR (e.g. my_agent:Env, a name in my_agent.py in the "
                        f"current directory)")
    module_name, attr_path = spec.split(":")
    _with_cwd_on_path()
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"{key}={spec}: cannot import module {module_name!r} ({exc}); the current directory "
                        f"{os.getcwd()} is on the import path") from None
    except Exception as exc:  # the module itself fails while importing: name it, in one line
        raise UserError(f"{key}={spec}: importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    value = module
    for part in attr_path.split("."):
        if not hasattr(value, part):
            raise UserError(f"{key}={spec}: module {module_name!r} ({getattr(module, '__file__', '?')}) has no "
                            f"attribute {attr_path!r}")
        value = getattr(value, part)
    return value


def resolve_list(specs: Any, key: str, builtins: dict[str, Any] | None = None) -> list:
    """A list of objects: each item a MODULE:ATTR spec, a built-in name (`builtins`) or an object.
    A single spec naming a list (e.g. `tools=my_agent:TOOLS`) gives that list."""
    if specs is None:
        return []
    items = specs if isinstance(specs, (list, tuple)) else [specs]
    out: list = []
    for item in items:
        if isinstance(item, str) and builtins is not None and item in builtins:
            out.append(builtins[item])
            continue
        if isinstance(item, str) and not is_spec(item) and builtins is not None:
            raise UserError(f"{key}: {item!r} is neither MODULE:ATTR nor a built-in "
                            f"({', '.join(sorted(builtins))})")
        value = resolve(item, key)
        if isinstance(value, (list, tuple)) and isinstance(item, str):
            out.extend(value)
        else:
            out.append(value)
    return out
