"""Calico's label selector language: parsed once into a tree of frozen nodes, evaluated against
labels, and written back in one canonical form.

The language, as Calico's: ``all()``, ``global()``, ``has(k)``, ``k == 'v'``, ``k != 'v'``,
``k in {'a', 'b'}``, ``k not in {...}``, ``k contains 's'``, ``k starts with 's'``,
``k ends with 's'``, ``!expr``, ``expr && expr``, ``expr || expr`` and parentheses (``!`` binds
tightest, then ``&&``, then ``||``).  Strings take single or double quotes.  An empty selector
is ``all()``.  ``!=`` and ``not in`` hold for labels that are missing; the string operators do
not.  ``global()`` matches what is not namespaced: felid gives every namespaced endpoint the
label ``projectcalico.org/namespace``, as Calico does, so it means "no such label".

Two selectors that mean the same by construction (spacing, quotes, the order of a set) have
the same ``canonical`` text and ``unique_id``: policies that repeat a selector share what is
computed for it (the endpoints it matches, the kernel set holding their addresses).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

Labels = Mapping[str, str]
NAMESPACE_LABEL = "projectcalico.org/namespace"


class SelectorError(ValueError):
    """A selector that does not parse; the message names the offset of the problem."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} at offset {offset}")
        self.offset = offset


# -- the tree ---------------------------------------------------------------------------


def _quoted(value: str) -> str:
    return f"'{value}'" if '"' in value else f'"{value}"'


@dataclass(frozen=True)
class All:
    def matches(self, labels: Labels) -> bool:
        return True

    def canonical(self) -> str:
        return "all()"


@dataclass(frozen=True)
class Global:
    def matches(self, labels: Labels) -> bool:
        return NAMESPACE_LABEL not in labels

    def canonical(self) -> str:
        return "global()"


@dataclass(frozen=True)
class Has:
    key: str

    def matches(self, labels: Labels) -> bool:
        return self.key in labels

    def canonical(self) -> str:
        return f"has({self.key})"


@dataclass(frozen=True)
class Compare:
    """``key <op> value`` for ==, !=, contains, starts with, ends with."""

    key: str
    op: str
    value: str

    def matches(self, labels: Labels) -> bool:
        found = labels.get(self.key)
        if self.op == "!=":
            return found != self.value
        if found is None:
            return False
        if self.op == "==":
            return found == self.value
        if self.op == "contains":
            return self.value in found
        if self.op == "starts with":
            return found.startswith(self.value)
        return found.endswith(self.value)

    def canonical(self) -> str:
        return f"{self.key} {self.op} {_quoted(self.value)}"


@dataclass(frozen=True)
class In:
    key: str
    values: frozenset[str]
    negated: bool = False

    def matches(self, labels: Labels) -> bool:
        return (labels.get(self.key) in self.values) != self.negated

    def canonical(self) -> str:
        members = ", ".join(_quoted(v) for v in sorted(self.values))
        return f"{self.key} {'not in' if self.negated else 'in'} {{{members}}}"


@dataclass(frozen=True)
class Not:
    inner: Node

    def matches(self, labels: Labels) -> bool:
        return not self.inner.matches(labels)

    def canonical(self) -> str:
        inner = self.inner.canonical()
        return f"!{inner}" if isinstance(self.inner, All | Global | Has | Not) else f"!({inner})"


@dataclass(frozen=True)
class And:
    terms: tuple[Node, ...]

    def matches(self, labels: Labels) -> bool:
        return all(t.matches(labels) for t in self.terms)

    def canonical(self) -> str:
        return " && ".join(f"({t.canonical()})" if isinstance(t, Or) else t.canonical() for t in self.terms)


@dataclass(frozen=True)
class Or:
    terms: tuple[Node, ...]

    def matches(self, labels: Labels) -> bool:
        return any(t.matches(labels) for t in self.terms)

    def canonical(self) -> str:
        return " || ".join(t.canonical() for t in self.terms)


Node = All | Global | Has | Compare | In | Not | And | Or


def both(*nodes: Node) -> Node:
    """All of ``nodes`` (``all()`` dropped, nested ands flattened)."""
    terms: list[Node] = []
    for node in nodes:
        if isinstance(node, And):
            terms.extend(node.terms)
        elif not isinstance(node, All):
            terms.append(node)
    if not terms:
        return All()
    return terms[0] if len(terms) == 1 else And(tuple(terms))


def with_prefix(node: Node, prefix: str) -> Node:
    """``node`` asking about ``prefix + key`` wherever it asks about ``key``: how a namespace
    selector becomes a selector on the labels endpoints inherit from their namespace.
    ``global()`` and ``all()`` ask about no key and stay as they are."""
    if isinstance(node, Has):
        return Has(prefix + node.key)
    if isinstance(node, Compare):
        return Compare(prefix + node.key, node.op, node.value)
    if isinstance(node, In):
        return In(prefix + node.key, node.values, node.negated)
    if isinstance(node, Not):
        return Not(with_prefix(node.inner, prefix))
    if isinstance(node, And):
        return And(tuple(with_prefix(t, prefix) for t in node.terms))
    if isinstance(node, Or):
        return Or(tuple(with_prefix(t, prefix) for t in node.terms))
    return node


# -- parsing ----------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<op>&&|\|\||==|!=|!|\(|\)|\{|\}|,)
    | (?P<str>'[^']*'|"[^"]*")
    | (?P<word>[A-Za-z0-9_./-]+)""",
    re.VERBOSE,
)
_PUNCTUATION = frozenset({"&&", "||", "==", "!=", "!", "(", ")", "{", "}", ","})
_STRING_OPERATORS = {"contains": "contains", "starts": "starts with", "ends": "ends with"}


@dataclass(frozen=True)
class _Token:
    text: str
    offset: int

    @property
    def quoted(self) -> bool:
        return self.text[:1] in ("'", '"')


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = _skip_space(text, 0)
    while pos < len(text):
        found = _TOKEN.match(text, pos)
        if found is None:
            if text[pos] in "'\"":
                raise SelectorError(f"a string that is never closed (no {text[pos]} after it)", pos)
            raise SelectorError(f"unexpected character {text[pos]!r}", pos)
        tokens.append(_Token(found.group(), pos))
        pos = _skip_space(text, found.end())
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos].text if self.pos < len(self.tokens) else None

    def next(self, wanted: str) -> _Token:
        if self.pos >= len(self.tokens):
            raise SelectorError(f"expected {wanted}, found the end", len(self.text))
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def take(self, literal: str) -> None:
        token = self.next(repr(literal))
        if token.text != literal:
            raise SelectorError(f"expected {literal!r}, found {token.text!r}", token.offset)

    def parse(self) -> Node:
        if not self.tokens:
            return All()
        node = self.parse_or()
        if self.pos < len(self.tokens):
            token = self.tokens[self.pos]
            raise SelectorError(f"unexpected {token.text!r} after a complete selector", token.offset)
        return node

    def parse_or(self) -> Node:
        terms = [self.parse_and()]
        while self.peek() == "||":
            self.pos += 1
            terms.append(self.parse_and())
        return terms[0] if len(terms) == 1 else Or(tuple(terms))

    def parse_and(self) -> Node:
        terms = [self.parse_unary()]
        while self.peek() == "&&":
            self.pos += 1
            terms.append(self.parse_unary())
        return terms[0] if len(terms) == 1 else And(tuple(terms))

    def parse_unary(self) -> Node:
        if self.peek() == "!":
            self.pos += 1
            return Not(self.parse_unary())
        if self.peek() == "(":
            self.pos += 1
            inner = self.parse_or()
            self.take(")")
            return inner
        return self.parse_atom()

    def parse_atom(self) -> Node:
        word = self.next("a label, all(), global() or has()")
        if word.text in ("all", "global", "has") and self.peek() == "(":
            self.pos += 1
            if word.text == "has":
                key = self.key(self.next("a label key"))
                self.take(")")
                return Has(key)
            self.take(")")
            return All() if word.text == "all" else Global()
        key = self.key(word)
        op = self.next("an operator (==, !=, in, not in, contains, starts with, ends with)")
        if op.text in ("==", "!="):
            return Compare(key, op.text, self.string())
        if op.text == "in":
            return In(key, self.string_set())
        if op.text == "not":
            self.take("in")
            return In(key, self.string_set(), negated=True)
        if op.text in _STRING_OPERATORS:
            if op.text != "contains":
                self.take("with")
            return Compare(key, _STRING_OPERATORS[op.text], self.string())
        raise SelectorError(f"unknown operator {op.text!r}", op.offset)

    @staticmethod
    def key(token: _Token) -> str:
        if token.text in _PUNCTUATION or token.quoted:
            raise SelectorError(f"expected a label key, found {token.text!r}", token.offset)
        return token.text

    def string(self) -> str:
        token = self.next("a quoted string")
        if not token.quoted:
            raise SelectorError(f"expected a quoted string, found {token.text!r}", token.offset)
        return token.text[1:-1]

    def string_set(self) -> frozenset[str]:
        self.take("{")
        values: set[str] = set()
        if self.peek() != "}":
            values.add(self.string())
            while self.peek() == ",":
                self.pos += 1
                values.add(self.string())
        self.take("}")
        return frozenset(values)


@dataclass(frozen=True)
class Selector:
    """A parsed selector: ``Selector.parse("role == 'rr'").matches(labels)``."""

    text: str
    root: Node

    @classmethod
    def parse(cls, text: str) -> Selector:
        return cls(text, _Parser(text).parse())

    @classmethod
    def of(cls, root: Node) -> Selector:
        """A selector made from a tree (a composition of others), its text the canonical one."""
        return cls(root.canonical(), root)

    def matches(self, labels: Labels) -> bool:
        return self.root.matches(labels)

    @cached_property
    def canonical(self) -> str:
        return self.root.canonical()

    @cached_property
    def unique_id(self) -> str:
        """A short name for what this selector means (the same for every spelling of it)."""
        return short_id(self.canonical)


def short_id(text: str) -> str:
    """20 characters, [a-z2-7], naming ``text``: short enough for a kernel set's name."""
    return base64.b32encode(hashlib.sha224(text.encode()).digest()).decode().lower()[:20]
