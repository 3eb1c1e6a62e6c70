"""felid's entry points: felidctl (``ctl``), felid-node (``node``), the CNI plugins (``cni``), the CLI."""

__version__ = "0.1.0"
