"""Reading resource documents (multi-document YAML or JSON) from a file or stdin.

Strictly, as Kubernetes decodes manifests: UTF-8 text only, a key at most once in
a mapping, only the schema's camelCase field names (the models refuse the rest).
Hostile input gets one line, never a traceback or a hang: nesting is bounded, and
YAML aliases may not expand a document beyond ``MAX_NODES`` values (a "billion
laughs" file is refused before anything is built from it).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from datastore.errors import ValidationFailed, quoted
from datastore.models import Resource, parse_noting

MAX_DEPTH = 64  # resources nest a few levels; anything deeper is not one
MAX_NODES = 100_000  # values in one document, counting every expansion of an alias


@dataclass(frozen=True)
class Document:
    source: str
    index: int  # 1-based, as users count documents
    resource: Resource
    warnings: tuple[str, ...] = ()  # Calico fields accepted because felid already does what they ask

    @property
    def label(self) -> str:
        return f" ({self.resource.KIND} {quoted(self.resource.name)})"

    def where(self) -> str:
        return f"{self.source}: document {self.index}{self.label}"


class DocumentError(Exception):
    """One line: which file, which document, which field, what is wrong."""

    def __init__(self, source: str, index: int | None, label: str, field: str, message: str) -> None:
        where = source if index is None else f"{source}: document {index}{label}"
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")


class _Refused(Exception):
    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, deep nesting and alias expansion past a bound."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: SafeLoader reports it
                break
            if duplicate:
                raise _Refused(f"duplicate key {quoted(key)}", key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: Node) -> int:
    """How many values ``node`` stands for once every alias is expanded (aliases share nodes)."""
    sizes: dict[int, int] = {}

    def size(n: Node, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep", n.start_mark.line + 1)
        known = sizes.get(id(n))
        if known is not None:
            return known
        total = 1
        if isinstance(n, SequenceNode):
            total += sum(size(child, depth + 1) for child in n.value)
        elif isinstance(n, MappingNode):
            total += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in n.value)
        if total > MAX_NODES:
            raise _Refused(f"expands to more than {MAX_NODES} values (YAML aliases?)", n.start_mark.line + 1)
        sizes[id(n)] = total
        return total

    return size(node, 0)


def _yaml_documents(text: str) -> list[Any]:
    loader = _StrictLoader(text)
    try:
        documents = []
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                _expanded_size(node)
            documents.append(loader.construct_document(node))
        return [d for d in documents if d is not None]
    finally:
        loader.dispose()


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"duplicate key {quoted(key)}")
        out[key] = value
    return out


def _json_depth(text: str) -> int:
    """How deep the brackets nest, outside strings."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _decode(text: str, source: str) -> list[Any]:
    stripped = text.lstrip()
    try:
        if stripped.startswith(("{", "[")):
            if _json_depth(stripped) > MAX_DEPTH:
                raise _Refused(f"nested more than {MAX_DEPTH} levels deep")
            try:
                data = json.loads(text, object_pairs_hook=_json_object)
            except json.JSONDecodeError as exc:
                raise DocumentError(
                    source, None, "", "", f"invalid JSON at line {exc.lineno}: {exc.msg}"
                ) from None
            return data if isinstance(data, list) else [data]
        return _yaml_documents(text)
    except _Refused as exc:
        where = f" at line {exc.line}" if exc.line is not None else ""
        kind = "JSON" if stripped.startswith(("{", "[")) else "YAML"
        raise DocumentError(source, None, "", "", f"refused {kind}{where}: {exc}") from None
    except RecursionError:
        raise DocumentError(source, None, "", "", "nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DocumentError(source, None, "", "", f"invalid YAML{where}: {problem}") from None


def _expand_lists(raw_docs: list[Any], source: str) -> list[Any]:
    """``kind: List`` / ``<Kind>List`` documents stand for their items, as in calicoctl, and so does
    a plain YAML list of resources."""
    out: list[Any] = []
    for index, doc in enumerate(raw_docs, start=1):
        if isinstance(doc, list):
            out.extend(doc)
        elif isinstance(doc, dict) and isinstance(doc.get("kind"), str) and doc["kind"].endswith("List"):
            items = doc.get("items")
            if items is None:
                continue
            if not isinstance(items, list):
                raise DocumentError(
                    source, index, f" ({doc['kind']})", "items", "must be a list of resources"
                )
            out.extend(items)
        else:
            out.append(doc)
    return out


def _as_kubernetes_decodes(raw: Any) -> Any:
    """What Kubernetes' decoding makes of a manifest before its schema sees it: an empty ``spec:``
    is an empty spec (every field its default), and a YAML scalar that is not text where metadata
    takes text (a name ``1234``; labels and annotations such as ``enabled: true``, ``yes``, ``3``)
    is the text JSON would spell it with."""
    if not isinstance(raw, dict):
        return raw
    out = dict(raw)
    if "spec" in out and out["spec"] is None:
        out["spec"] = {}
    metadata = out.get("metadata")
    if isinstance(metadata, dict):
        metadata = dict(metadata)
        if _scalar(metadata.get("name")):
            metadata["name"] = _text_of(metadata["name"])
        for field in ("labels", "annotations"):
            values = metadata.get(field)
            if isinstance(values, dict):
                metadata[field] = {
                    _text_of(k) if _scalar(k) else k: _text_of(v) if _scalar(v) else v
                    for k, v in values.items()
                }
        out["metadata"] = metadata
    return out


def _scalar(value: Any) -> bool:
    return isinstance(value, (bool, int, float))


def _text_of(value: bool | int | float) -> str:
    return json.dumps(value)  # true, 3, 1.5: as the YAML-to-JSON step of Kubernetes' decoder spells them


def _label(raw: Any) -> str:
    if isinstance(raw, dict) and isinstance(raw.get("metadata"), dict):
        return f" ({_kind(raw.get('kind', '?'))} {quoted(raw['metadata'].get('name', '?'))})"
    return ""


def _kind(kind: Any) -> str:
    return kind if isinstance(kind, str) and kind.isidentifier() and len(kind) <= 40 else quoted(kind)


def _text(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(
            source, None, "", "", f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}"
        ) from None


def read_documents(path: str) -> list[Document]:
    """Every document of ``path`` ('-' is stdin), all validated before any is returned."""
    source = "<stdin>" if path == "-" else path
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise DocumentError(source, None, "", "", exc.strerror or str(exc)) from None
    raw_docs = _expand_lists(_decode(_text(data, source), source), source)
    if not raw_docs:
        raise DocumentError(source, None, "", "", "no resources found")
    docs = []
    for index, raw in enumerate(raw_docs, start=1):
        try:
            resource, warnings = parse_noting(_as_kubernetes_decodes(raw))
            docs.append(Document(source, index, resource, tuple(warnings)))
        except ValidationFailed as exc:
            raise DocumentError(source, index, _label(raw), exc.field, exc.message) from None
    return docs
