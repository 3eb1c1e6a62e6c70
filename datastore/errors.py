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


class Refused(DatastoreError):
    """etcd refused a request it could serve (too many operations, too large): not an outage."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"etcd refused the request: {reason}")
        self.reason = reason


class PartlyWritten(DatastoreError):
    """A write too large for one transaction stopped after ``written`` of ``total`` resources."""

    def __init__(self, written: int, total: int, cause: DatastoreError) -> None:
        super().__init__(
            f"{cause}; the first {written} of {total} resources were written, the rest not "
            "(applying the same file again finishes it)"
        )
        self.written = written
        self.total = total
        self.cause = cause


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


class InvalidName(DatastoreError):
    """A name that would become part of a key (a node, namespace, pod, container, handle) is not one."""

    def __init__(self, what: str, message: str) -> None:
        super().__init__(f"{what}: {message}")
        self.what = what
        self.message = message


def quoted(value: object, limit: int = 60) -> str:
    """``value`` for a message, cut short: a hostile input must not make a huge (or slow) message."""
    if isinstance(value, bool | float) or (isinstance(value, int) and abs(value) < 10**limit):
        return repr(value)
    if isinstance(value, int):
        return f"a number of more than {limit} digits"
    if isinstance(value, list | tuple) and len(value) <= 10 and all(isinstance(v, str | int) for v in value):
        inner = ", ".join(quoted(v, limit) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    if not isinstance(value, str):
        return f"a {type(value).__name__}"
    shown = repr(value[:limit])
    return shown if len(value) <= limit else f"{shown[:-1]}...{shown[-1]} ({len(value)} characters)"


class BatchItemFailed(DatastoreError):
    """One resource of a multi-resource write was refused; nothing was written."""

    def __init__(self, index: int, cause: DatastoreError) -> None:
        super().__init__(str(cause))
        self.index = index
        self.cause = cause
