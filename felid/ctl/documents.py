"""Reading resource documents (multi-document YAML or JSON) from a file or stdin."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from datastore.errors import ValidationFailed
from datastore.models import Resource, parse_resource


@dataclass(frozen=True)
class Document:
    source: str
    index: int  # 1-based, as users count documents
    resource: Resource


class DocumentError(Exception):
    """One line: which file, which document, which field, what is wrong."""

    def __init__(self, source: str, index: int | None, label: str, field: str, message: str) -> None:
        where = source if index is None else f"{source}: document {index}{label}"
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")


def _label(raw: Any) -> str:
    if isinstance(raw, dict) and isinstance(raw.get("metadata"), dict):
        return f" ({raw.get('kind', '?')} {raw['metadata'].get('name', '?')!r})"
    return ""


def _decode(text: str, source: str) -> list[Any]:
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DocumentError(
                source, None, "", "", f"invalid JSON at line {exc.lineno}: {exc.msg}"
            ) from None
        return data if isinstance(data, list) else [data]
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise DocumentError(source, None, "", "", f"invalid YAML{where}: {problem}") from None


def _expand_lists(raw_docs: list[Any]) -> list[Any]:
    """``kind: List`` / ``<Kind>List`` documents stand for their items, as in calicoctl."""
    out: list[Any] = []
    for doc in raw_docs:
        if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") and "items" in doc:
            out.extend(doc["items"] or [])
        else:
            out.append(doc)
    return out


def read_documents(path: str) -> list[Document]:
    """Every document of ``path`` ('-' is stdin), all validated before any is returned."""
    source = "<stdin>" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise DocumentError(source, None, "", "", exc.strerror or str(exc)) from None
    raw_docs = _expand_lists(_decode(text, source))
    if not raw_docs:
        raise DocumentError(source, None, "", "", "no resources found")
    docs = []
    for index, raw in enumerate(raw_docs, start=1):
        try:
            docs.append(Document(source, index, parse_resource(raw)))
        except ValidationFailed as exc:
            raise DocumentError(source, index, _label(raw), exc.field, exc.message) from None
    return docs
