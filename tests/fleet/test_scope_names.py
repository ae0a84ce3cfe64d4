"""Odd scope names are refused when the scope is built, with the name in the error."""

from __future__ import annotations

import pytest

from techrevati.runtime import FleetLimits

CLOSED = "redis://127.0.0.1:1/0"  # never contacted: names are checked first


@pytest.mark.parametrize(
    ("scope", "why"),
    [
        ("", "non-empty"),
        ("a{b}", "braces"),
        ("x" * 10_000, "at most"),
        ("a\udc80b", "lone surrogates"),
        ("a\x00b", "control characters"),
        ("tenant\x1b[2J", "control characters"),
        ("a\x9bb", "control characters"),
    ],
    ids=["empty", "braces", "huge", "surrogate", "nul", "escape", "c1"],
)
def test_an_odd_scope_name_is_a_clear_error(scope: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        FleetLimits(CLOSED, scope=scope, max_calls=1)


def test_an_ordinary_name_is_accepted() -> None:
    assert FleetLimits(CLOSED, scope="tenant-42 / eu", max_calls=1).scope == "tenant-42 / eu"


@pytest.mark.parametrize("scope", [5, None, b"tenant"], ids=["int", "none", "bytes"])
def test_a_scope_that_is_not_a_string_is_a_type_error(scope: object) -> None:
    # It was a ValueError, as if the value were only out of range.
    with pytest.raises(TypeError) as caught:
        FleetLimits(CLOSED, scope=scope, max_calls=1)  # type: ignore[arg-type]
    expected = f"FleetLimits scope must be a non-empty string, got {type(scope).__name__}: "
    assert str(caught.value) == expected + repr(scope)
