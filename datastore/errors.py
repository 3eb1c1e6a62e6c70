"""Typed datastore errors: callers branch on the type, users read the message."""

from __future__ import annotations


class DatastoreError(Exception):
    """Base of every error the datastore layer raises on purpose."""


class NotFound(DatastoreError):
    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found")
        self.what = what


class AlreadyExists(DatastoreError):
    def __init__(self, what: str) -> None:
        super().__init__(f"{what} already exists")
        self.what = what


class Conflict(DatastoreError):
    """A compare-and-swap lost: the stored object changed since it was read."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} was modified concurrently (resource version changed); re-read and retry")
        self.what = what


class Unavailable(DatastoreError):
    """etcd could not be reached; the message names the endpoints tried."""

    def __init__(self, endpoints: str, reason: str) -> None:
        super().__init__(f"etcd unavailable at {endpoints}: {reason}")
        self.endpoints = endpoints
        self.reason = reason


class Compacted(DatastoreError):
    """A read or watch asked for a revision etcd has already compacted away."""

    def __init__(self, revision: int) -> None:
        super().__init__(f"revision {revision} has been compacted")
        self.revision = revision


class ValidationFailed(DatastoreError):
    """A resource is not acceptable; ``field`` is the dotted path of the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class BatchItemFailed(DatastoreError):
    """One resource of a multi-resource write was refused; nothing was written."""

    def __init__(self, index: int, cause: DatastoreError) -> None:
        super().__init__(str(cause))
        self.index = index
        self.cause = cause
