"""Settings declared once, as pydantic fields, and resolved from every source.

A settings class is a frozen model whose fields carry a type, a default and a
``description``.  From that one declaration come: the environment variable
(``<PREFIX><FIELD_NAME>``), the config-file key (camelCase), the command-line
flag (``--field-name``), validation, and the generated reference in
``docs/configuration.md``.  Precedence, highest first: flag, environment,
config file, default.
"""

from __future__ import annotations

import argparse
import socket
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from datastore.errors import ValidationFailed, quoted
from datastore.models.base import valid_name


class Settings(BaseModel):
    """Base of every settings declaration. ``ENV_PREFIX`` names its variables."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    ENV_PREFIX: typing.ClassVar[str] = "FELID_"

    @classmethod
    def file_key(cls, field: str) -> str:
        """camelCase, unless the field's alias spells it (``etcdCACertFile``)."""
        return cls.model_fields[field].alias or to_camel(field)

    @classmethod
    def env_name(cls, field: str) -> str:
        return cls.ENV_PREFIX + field.upper()

    @classmethod
    def flag_name(cls, field: str) -> str:
        return "--" + field.replace("_", "-")

    @classmethod
    def default_of(cls, field: str) -> Any:
        """The declared default of ``field``: other modules ask for it instead of repeating it."""
        return cls.model_fields[field].get_default(call_default_factory=True)


S = TypeVar("S", bound=Settings)


def _is_sequence(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_sequence(a) for a in typing.get_args(annotation))
    return origin in (tuple, list)


def _from_text(annotation: Any, text: str) -> Any:
    """Environment and flags are text; lists are comma-separated there."""
    if _is_sequence(annotation):
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def _type_name(annotation: Any) -> str:
    if _is_sequence(annotation):
        return "list"
    if typing.get_origin(annotation) is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])  # a validated type: shown as its base
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if args:
        return " or ".join(_type_name(a) for a in args)
    return getattr(annotation, "__name__", str(annotation))


def resolve(
    cls: type[S],
    *,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    file_values: Mapping[str, Any] | None = None,
) -> S:
    """Build ``cls`` from its sources; a bad value raises ValidationFailed naming its source."""
    flags, environ, file_values = flags or {}, environ or {}, file_values or {}
    known_file_keys = {cls.file_key(n) for n in cls.model_fields} | set(cls.model_fields)
    for key in file_values:
        if key not in known_file_keys:
            raise ValidationFailed(f"config file: {key}", "unknown setting")
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, field in cls.model_fields.items():
        env = cls.env_name(name)
        if flags.get(name) is not None:
            raw, sources[name] = flags[name], cls.flag_name(name)
            values[name] = _from_text(field.annotation, raw) if isinstance(raw, str) else raw
        elif env in environ and environ[env] != "":
            values[name], sources[name] = _from_text(field.annotation, environ[env]), env
        elif cls.file_key(name) in file_values or name in file_values:
            key = cls.file_key(name) if cls.file_key(name) in file_values else name
            values[name], sources[name] = file_values[key], f"config file: {key}"
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else ""
        message = str(err["msg"]).removeprefix("Value error, ")
        raise ValidationFailed(
            sources.get(name, name), f"{message} (got {quoted(err.get('input'))})"
        ) from None


def unknown_variables(
    environ: Mapping[str, str], declared: Iterable[type[Settings]], also: Iterable[str] = ()
) -> list[str]:
    """The variables of ``environ`` that carry one of these settings' prefixes but name none of
    them (nor ``also``): a misspelt setting, which would otherwise be silently left out."""
    prefixes = tuple({cls.ENV_PREFIX for cls in declared})
    known = {cls.env_name(name) for cls in declared for name in cls.model_fields} | set(also)
    return sorted(key for key in environ if key.startswith(prefixes) and key not in known)


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type[Settings]) -> None:
    """One command-line flag per setting of ``cls``; unset flags stay None (lower sources apply)."""
    for name, field in cls.model_fields.items():
        if field.annotation is bool:
            parser.add_argument(
                cls.flag_name(name), dest=name, action="store_const", const=True, help=field.description
            )
        else:
            parser.add_argument(cls.flag_name(name), dest=name, metavar="VALUE", help=field.description)


def reference_table(cls: type[Settings], flags: bool = True) -> str:
    """Markdown reference of a settings class, generated from its declaration."""
    rows = [
        "| setting | environment | config file | flag | type | default | description |",
        "|---|---|---|---|---|---|---|",
    ]
    if not flags:
        rows = [
            r.replace(" flag |", "").replace("|---|---|---|---|---|---|---|", "|---|---|---|---|---|---|")
            for r in rows
        ]
    for name, field in cls.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, tuple | list):
            default = ",".join(str(d) for d in default)
        type_name = _type_name(field.annotation)
        shown = "(unset)" if default is None else f"`{default}`"
        flag = f" `{cls.flag_name(name)}` |" if flags else ""
        rows.append(
            f"| `{name}` | `{cls.env_name(name)}` | `{cls.file_key(name)}` |{flag} "
            f"{type_name} | {shown} | {field.description or ''} |"
        )
    return "\n".join(rows) + "\n"


def node_name(configured: str | None, source: str) -> str:
    """This host's node name: ``configured`` (``source`` names where it came from), else the
    hostname lower-cased as Calico does; InvalidName unless it is an RFC 1123 name."""
    if configured:
        return valid_name(configured, source)
    return valid_name(socket.gethostname().strip().lower(), "the hostname (set FELID_NODENAME)")
