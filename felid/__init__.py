"""felid's entry points: felidctl (``ctl``), felid-node (``node``), the CNI plugins (``cni``), the CLI.

``__version__`` is read from the package metadata on first use, not at import: a CNI plugin
imports this package for every pod, and reading the metadata costs it more than its whole
fast path (``felid.cni.fastpath``).
"""

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    if name == "__version__":
        from datastore.version import VERSION

        return VERSION
    raise AttributeError(f"module 'felid' has no attribute {name!r}")
