"""Calico's selector language: every operator, precedence, errors with their offset, and one
canonical form for every spelling of a selector."""

from __future__ import annotations

import pytest

from datastore.selector import NAMESPACE_LABEL, Selector, SelectorError

LABELS = {"zone": "a", "role": "rr", "rack": "r1", "app": "web-frontend", "k8s/tier": "gold.1"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", True),
        ("all()", True),
        ("has(zone)", True),
        ("!has(zone)", False),
        ("zone == 'a'", True),
        ('zone == "b"', False),
        ("zone != 'b'", True),
        ("rack in {'r1', 'r2'}", True),
        ("rack not in {'r1'}", False),
        ("rack in {}", False),
        ("zone == 'a' && role == 'rr'", True),
        ("zone == 'b' || role == 'rr'", True),
        ("!(zone == 'a' && has(missing))", True),
        ("missing == 'x'", False),
        ("missing != 'x'", True),  # != and not in hold for a missing label
        ("missing not in {'x'}", True),
        ("app contains 'front'", True),
        ("app contains 'back'", False),
        ("app starts with 'web-'", True),
        ("app ends with 'end'", True),
        ("app ends with 'web'", False),
        ("missing contains ''", False),  # the string operators need the label
        ("k8s/tier == 'gold.1'", True),
        ("global()", True),  # these labels have no namespace
        # ! binds tightest, then &&, then ||
        ("zone == 'b' && role == 'rr' || rack == 'r1'", True),
        ("zone == 'b' && (role == 'rr' || rack == 'r1')", False),
        ("!zone == 'a'", False),
        ("!!has(zone)", True),
        ("has == 'x'", False),  # a label may be called has, in or all
    ],
)
def test_selector_matches(text: str, expected: bool) -> None:
    assert Selector.parse(text).matches(LABELS) is expected


def test_global_matches_only_what_is_not_namespaced() -> None:
    assert not Selector.parse("global()").matches({NAMESPACE_LABEL: "default"})
    assert Selector.parse("!global()").matches({NAMESPACE_LABEL: "default"})


@pytest.mark.parametrize(
    ("text", "offset", "says"),
    [
        ("zone ==", 7, "expected a quoted string, found the end"),
        ("has(", 4, "expected a label key"),
        ("zone == 'a' extra", 12, "unexpected 'extra' after a complete selector"),
        ("zone ~ 'a'", 5, "unexpected character '~'"),
        ("(all()", 6, "expected ')'"),
        ("zone in 'a'", 8, "expected '{'"),
        ("zone == 'a", 8, "a string that is never closed"),
        ("app starts 'x'", 11, "expected 'with'"),
        ("zone is 'a'", 5, "unknown operator 'is'"),
        ("zone == a", 8, "expected a quoted string, found 'a'"),
        ("zone == 'a' &&", 14, "expected a label"),
        ("'zone' == 'a'", 0, "expected a label key"),
    ],
)
def test_a_bad_selector_is_refused_naming_the_offset(text: str, offset: int, says: str) -> None:
    with pytest.raises(SelectorError) as caught:
        Selector.parse(text)
    assert caught.value.offset == offset and says in str(caught.value)
    assert str(caught.value).endswith(f"at offset {offset}")


def test_every_spelling_of_a_selector_has_one_canonical_form_and_id() -> None:
    spellings = [
        "role == 'db' && tier in {'b', 'a'}",
        'role=="db"&&tier in {"a","b"}',
        "(role == 'db') && (tier in {'a', 'b', 'a'})",
    ]
    parsed = [Selector.parse(s) for s in spellings]
    assert {p.canonical for p in parsed} == {'role == "db" && tier in {"a", "b"}'}
    assert len({p.unique_id for p in parsed}) == 1
    assert Selector.parse("role == 'web'").unique_id != parsed[0].unique_id
    # The canonical form parses back to itself, parentheses where precedence needs them.
    for text in (
        "(a == 'x' || b == 'y') && !(c in {'z'})",
        '!has(a) || b contains "it\'s"',
        "a starts with 'p' && !global()",
        "",
    ):
        canonical = Selector.parse(text).canonical
        assert Selector.parse(canonical).canonical == canonical
        assert Selector.parse(canonical).root == Selector.parse(text).root
    grouped = Selector.parse("(a == 'x' || b == 'y') && c == 'z'")
    assert grouped.canonical == '(a == "x" || b == "y") && c == "z"'
