"""pact-cotrain: Privileged trAce Co-Training for multi-turn tool-use agents.

    from pact_cotrain import PACTConfig, PACTTrainer      # TRL's GRPOConfig / GRPOTrainer, drop-in

Both are imported on first use, so `import pact_cotrain` (and the `pact` CLI) stays light.
"""

__version__ = "0.1.0"

_LAZY = {"PACTConfig": "pact_cotrain.training.api", "PACTTrainer": "pact_cotrain.training.trainer"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pact_cotrain' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
