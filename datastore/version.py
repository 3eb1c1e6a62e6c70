"""felid's version, as its package metadata (pyproject.toml) declares it: typha's hellos carry it."""

from importlib.metadata import version

VERSION = version("felid")
