"""Backends with isolated state: one set of BFCL backend instances per episode.

Isolation: BFCL caches backend instances in the globals of `multi_turn_utils`, keyed by
`{model_name}_{test_entry_id}_{class}_instance`. Every env (and every expert-trace run) uses its own
model name `pact_bfcl_<uuid4 hex>`, moves its instances out of those globals right after each
execution call (putting them back just before the next), and deletes whatever the checker creates
under its name once the score is computed. So K samples of one entry never share state, and no
instance outlives its env in BFCL's module globals (metrics() may be called at any time). One more
leak is BFCL's own: long-context backends put dicts of the `long_context` module's constants into
their state and mutate them (e.g. TravelAPI books on an extension credit card), which would carry
over to every later episode. Each episode's instances are deep-copied right after creation, and
those constants are snapshotted at first use and restored after every execution and every check.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from pact_cotrain.data.trace_format import Task

from .data import category_of
from .wheel import _bfcl, _public_methods, _restore_shared_constants


class _Backends:
    """One set of BFCL backend instances for one episode, executed through BFCL's own
    `execute_multi_turn_func_call` under a unique model name, and kept out of BFCL's module globals
    between calls (see the module docstring)."""

    def __init__(self, task: Task):
        b = _bfcl()
        meta = task.metadata
        self._execute, self._globals = b["execute"], b["globals"]
        self.model_name = f"pact_bfcl_{uuid.uuid4().hex}"
        self.prefix = self.model_name + "_"
        self.entry_id = str(meta.get("bfcl_id") or task.id)
        self.initial_config = meta.get("initial_config") or {}
        self.involved = list(meta["involved_classes"])
        self.long_context = bool(meta.get("long_context", "long_context" in category_of(self.entry_id)))
        self.methods = {name for c in self.involved for name in _public_methods(c)}
        self._held: dict[str, Any] = {}
        self.run([])  # create the instances from the initial config
        for instance in self._held.values():  # own copies of anything shared with module constants
            instance.__dict__ = copy.deepcopy(instance.__dict__)

    def _release(self) -> dict[str, Any]:
        g = self._globals
        return {k: g.pop(k) for k in [k for k in list(g) if isinstance(k, str) and k.startswith(self.prefix)]}

    def run(self, calls: list[str]) -> list[str]:
        self._globals.update(self._held)
        try:
            results, _ = self._execute(calls, self.initial_config, self.involved, self.model_name, self.entry_id,
                                       long_context=self.long_context, is_evaL_run=False)
        finally:
            self._held = self._release()
            _restore_shared_constants()
        # BFCL prefixes every `identifier(` in a call string with its instance name, string literals
        # included, so an output can echo that name: show a fixed one, keeping samples reproducible.
        return [(r if isinstance(r, str) else str(r)).replace(self.model_name, "model") for r in results]

    def check(self, decoded: list[list[list[str]]], ground_truth: list[list[str]]) -> dict:
        """BFCL's multi-turn checker on `decoded` ([turn][step][call string]); its instances are
        created under this model name and deleted afterwards."""
        entry = {"id": self.entry_id, "initial_config": self.initial_config, "involved_classes": self.involved}
        try:
            return _bfcl()["checker"](decoded, ground_truth, entry, category_of(self.entry_id), self.model_name)
        except Exception as exc:  # an assertion inside the checker, or a backend raising
            return {"valid": False, "error_type": "checker_exception", "error_message": f"{type(exc).__name__}: {exc}"}
        finally:
            self._release()
            _restore_shared_constants()

    def close(self) -> None:
        self._held = {}
        self._release()
