"""felid's entry points: felidctl (``ctl``), felid-node (``node``), the CNI plugins (``cni``), the CLI."""

from datastore.version import VERSION as __version__

__all__ = ["__version__"]
