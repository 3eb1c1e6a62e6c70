"""Calico's label selector language, parsed once and evaluated against labels.

Grammar (a subset of Calico's that covers what node and peer selectors use):
``all()``, ``has(k)``, ``!has(k)``, ``k == 'v'``, ``k != 'v'``, ``k in {'a', 'b'}``,
``k not in {...}``, ``!expr``, ``expr && expr``, ``expr || expr``, parentheses.
An empty selector means ``all()``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Labels = Mapping[str, str]
Predicate = Callable[[Labels], bool]

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<op>&&|\|\||==|!=|!|\(|\)|\{|\}|,)
    | (?P<str>'[^']*'|"[^"]*")
    | (?P<word>[A-Za-z0-9_./-]+)
    )""",
    re.VERBOSE,
)


class SelectorError(ValueError):
    pass


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise SelectorError(f"unexpected character {text[pos:].strip()[0]!r} at offset {pos}")
        tokens.append(m.group("op") or m.group("str") or m.group("word") or "")
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def next(self, description: str) -> str:
        tok = self.peek()
        if tok is None:
            raise SelectorError(f"expected {description} at end of selector")
        self.pos += 1
        return tok

    def take(self, literal: str) -> str:
        tok = self.next(repr(literal))
        if tok != literal:
            raise SelectorError(f"expected {literal!r}, found {tok!r}")
        return tok

    def parse(self) -> Predicate:
        if not self.tokens:
            return lambda _labels: True
        pred = self.parse_or()
        if self.peek() is not None:
            raise SelectorError(f"unexpected {self.peek()!r}")
        return pred

    def parse_or(self) -> Predicate:
        terms = [self.parse_and()]
        while self.peek() == "||":
            self.take("||")
            terms.append(self.parse_and())
        return terms[0] if len(terms) == 1 else (lambda lb: any(t(lb) for t in terms))

    def parse_and(self) -> Predicate:
        terms = [self.parse_unary()]
        while self.peek() == "&&":
            self.take("&&")
            terms.append(self.parse_unary())
        return terms[0] if len(terms) == 1 else (lambda lb: all(t(lb) for t in terms))

    def parse_unary(self) -> Predicate:
        tok = self.peek()
        if tok == "!":
            self.take("!")
            inner = self.parse_unary()
            return lambda lb: not inner(lb)
        if tok == "(":
            self.take("(")
            inner = self.parse_or()
            self.take(")")
            return inner
        return self.parse_atom()

    def parse_atom(self) -> Predicate:
        word = self.next("a label or function")
        if word in ("all", "has"):
            self.take("(")
            if word == "all":
                self.take(")")
                return lambda _lb: True
            key = self.label_key()
            self.take(")")
            return lambda lb: key in lb
        key = self._check_key(word)
        op = self.next("an operator")
        if op in ("==", "!="):
            value = self.string()
            if op == "==":
                return lambda lb: lb.get(key) == value
            return lambda lb: lb.get(key) != value
        if op == "in" or (op == "not" and self.take("in") == "in"):
            values = self.string_set()
            if op == "in":
                return lambda lb: lb.get(key) in values
            return lambda lb: lb.get(key) not in values
        raise SelectorError(f"unknown operator {op!r}")

    def label_key(self) -> str:
        return self._check_key(self.next("a label key"))

    @staticmethod
    def _check_key(word: str) -> str:
        if word in ("&&", "||", "!", "(", ")", "{", "}", ",") or word[0] in "'\"":
            raise SelectorError(f"expected a label key, found {word!r}")
        return word

    def string(self) -> str:
        tok = self.next("a quoted string")
        if tok[0] not in "'\"":
            raise SelectorError(f"expected a quoted string, found {tok!r}")
        return tok[1:-1]

    def string_set(self) -> frozenset[str]:
        self.take("{")
        values: set[str] = set()
        if self.peek() != "}":
            values.add(self.string())
            while self.peek() == ",":
                self.take(",")
                values.add(self.string())
        self.take("}")
        return frozenset(values)


@dataclass(frozen=True)
class Selector:
    """A parsed selector; ``Selector.parse("role == 'rr'").matches(labels)``."""

    text: str
    predicate: Predicate

    @classmethod
    def parse(cls, text: str) -> Selector:
        return cls(text, _Parser(text).parse())

    def matches(self, labels: Labels) -> bool:
        return self.predicate(labels)
