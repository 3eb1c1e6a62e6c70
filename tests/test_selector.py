from __future__ import annotations

import pytest

from datastore.selector import Selector, SelectorError

LABELS = {"zone": "a", "role": "rr", "rack": "r1"}


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
        ("zone == 'a' && role == 'rr'", True),
        ("zone == 'b' || role == 'rr'", True),
        ("!(zone == 'a' && has(missing))", True),
        ("missing == 'x'", False),
        ("missing != 'x'", True),
    ],
)
def test_selector_matches(text: str, expected: bool) -> None:
    assert Selector.parse(text).matches(LABELS) is expected


@pytest.mark.parametrize(
    "text", ["zone ==", "has(", "zone == 'a' extra", "zone ~ 'a'", "(all()", "zone in 'a'"]
)
def test_bad_selectors_are_refused(text: str) -> None:
    with pytest.raises(SelectorError):
        Selector.parse(text)
