"""Lazy access to the pinned bfcl_eval wheel: its data files, function docs, backend classes,
executor and checker, and the long_context module constants its backends share and mutate.

Data, tool docs, backends and the checker all come from the pinned `bfcl-eval==2026.3.23` wheel
(installed with `pip install --no-deps bfcl-eval==2026.3.23 mpmath`; the multi-turn checker and the
eight backends of the four categories need nothing else). `bfcl_eval` is imported lazily, so this
module (and the "bfcl" benchmark) can be imported without it; loading or running an episode then
raises an ImportError that says how to install it.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import json
from pathlib import Path
from typing import Sequence

BFCL_VERSION = "2026.3.23"
INSTALL_HINT = f"pip install --no-deps bfcl-eval=={BFCL_VERSION} mpmath"
VERSION_PREFIX = "BFCL_v4"
CATEGORIES = ("multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param", "multi_turn_long_context")


class BfclUnavailable(ImportError):
    pass


@functools.lru_cache(maxsize=1)
def _bfcl() -> dict:
    """BFCL's modules and constants, imported on first use (never bfcl_eval.constants.eval_config,
    which creates directories inside site-packages on import)."""
    try:
        import bfcl_eval
        from bfcl_eval.constants import executable_backend_config as backend_config
        from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_checker, multi_turn_utils
    except ImportError as exc:  # pragma: no cover - exercised only without bfcl_eval
        raise BfclUnavailable(f"BFCL needs the bfcl_eval package ({exc}); install it with `{INSTALL_HINT}`") from exc
    data = Path(bfcl_eval.__file__).resolve().parent / "data"
    # Long-context backends put the dicts of this module's constants into their state (TravelAPI's
    # extra credit cards and bookings) and then mutate them: snapshot them before any use.
    long_context = importlib.import_module(f"{backend_config.BACKEND_PATH_PREFIX}.long_context")
    shared = [(long_context, name, copy.deepcopy(value)) for name, value in vars(long_context).items()
              if not name.startswith("_") and isinstance(value, (dict, list))]
    return {
        "shared": shared,
        "data": data,
        "doc_files": dict(backend_config.MULTI_TURN_FUNC_DOC_FILE_MAPPING),
        "class_modules": dict(backend_config.CLASS_FILE_PATH_MAPPING),
        "execute": multi_turn_utils.execute_multi_turn_func_call,
        "globals": multi_turn_utils.execute_multi_turn_func_call.__globals__,
        "checker": multi_turn_checker.multi_turn_checker,
    }


def _restore_shared_constants() -> None:
    """Put back any long_context constant a backend call mutated (in place: modules hold them by name)."""
    for module, name, pristine in _bfcl()["shared"]:
        current = getattr(module, name)
        if current != pristine:
            if isinstance(current, dict):
                current.clear()
                current.update(copy.deepcopy(pristine))
            else:
                current[:] = copy.deepcopy(pristine)


def bfcl_available() -> bool:
    try:
        _bfcl()
        return True
    except ImportError:
        return False


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@functools.lru_cache(maxsize=None)
def _func_docs(class_name: str) -> tuple[dict, ...]:
    b = _bfcl()
    return tuple(_read_jsonl(b["data"] / "multi_turn_func_doc" / b["doc_files"][class_name]))


@functools.lru_cache(maxsize=None)
def _backend_class(class_name: str) -> type:
    module = importlib.import_module(_bfcl()["class_modules"][class_name])
    return getattr(module, class_name)


@functools.lru_cache(maxsize=None)
def _public_methods(class_name: str) -> frozenset[str]:
    cls = _backend_class(class_name)
    return frozenset(n for n, m in inspect.getmembers(cls, inspect.isfunction) if not n.startswith("_"))


def _method_owner(name: str, involved_classes: Sequence[str]) -> str | None:
    """The class whose method BFCL runs for `name`: the last involved class that has it (BFCL's
    method -> instance mapping is filled in class order, later classes overwriting earlier ones)."""
    owner = None
    for class_name in involved_classes:
        if name in _public_methods(class_name):
            owner = class_name
    return owner
