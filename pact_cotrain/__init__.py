"""pact-cotrain: Privileged trAce Co-Training for multi-turn tool-use agents."""

__version__ = "0.1.0"
