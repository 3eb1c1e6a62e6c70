"""felid entry points: the felidctl CLI, the felid command, and process helpers."""

__version__ = "0.1.0"
