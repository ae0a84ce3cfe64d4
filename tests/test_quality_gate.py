"""Tests for techrevati.runtime.quality_gate (API contract §9)."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError
from enum import IntEnum

import pytest

from techrevati.runtime.quality_gate import QualityGate, QualityGateOutcome, QualityLevel


def test_levels_are_int_enum_with_contract_values() -> None:
    assert issubclass(QualityLevel, IntEnum)
    assert [(m.name, m.value) for m in QualityLevel] == [
        ("MINIMAL", 1),
        ("STANDARD", 2),
        ("STRICT", 3),
        ("RELEASE", 4),
    ]


def test_levels_strictly_ordered() -> None:
    assert QualityLevel.MINIMAL < QualityLevel.STANDARD < QualityLevel.STRICT
    assert QualityLevel.STRICT < QualityLevel.RELEASE
    assert sorted([QualityLevel.RELEASE, QualityLevel.MINIMAL]) == [
        QualityLevel.MINIMAL,
        QualityLevel.RELEASE,
    ]


@pytest.mark.parametrize(
    ("level", "label"),
    [
        (QualityLevel.MINIMAL, "Minimal"),
        (QualityLevel.STANDARD, "Standard"),
        (QualityLevel.STRICT, "Strict"),
        (QualityLevel.RELEASE, "Release"),
    ],
)
def test_label_is_title_case_name(level: QualityLevel, label: str) -> None:
    assert level.label == label


@pytest.mark.parametrize(
    ("observed", "expected"),
    [
        (None, False),
        (QualityLevel.MINIMAL, False),
        (QualityLevel.STANDARD, True),
        (QualityLevel.STRICT, True),
        (QualityLevel.RELEASE, True),
    ],
)
def test_evaluate(observed: QualityLevel | None, expected: bool) -> None:
    gate = QualityGate(QualityLevel.STANDARD)
    outcome = gate.evaluate(observed)
    assert outcome == QualityGateOutcome(expected, QualityLevel.STANDARD, observed)
    assert outcome.satisfied is expected
    assert outcome.is_satisfied() is expected


def test_is_satisfied_by_equal_counts() -> None:
    gate = QualityGate(required_level=QualityLevel.STRICT)
    assert gate.is_satisfied_by(QualityLevel.STRICT) is True
    assert gate.is_satisfied_by(QualityLevel.RELEASE) is True
    assert gate.is_satisfied_by(QualityLevel.STANDARD) is False


def test_outcome_to_dict_uses_names() -> None:
    outcome = QualityGateOutcome(False, QualityLevel.STRICT, QualityLevel.MINIMAL)
    assert outcome.to_dict() == {
        "satisfied": False,
        "required_level": "STRICT",
        "observed_level": "MINIMAL",
    }
    none_outcome = QualityGate(QualityLevel.RELEASE).evaluate(None)
    assert none_outcome.to_dict() == {
        "satisfied": False,
        "required_level": "RELEASE",
        "observed_level": None,
    }
    json.dumps(none_outcome.to_dict())


def test_frozen() -> None:
    gate = QualityGate(QualityLevel.MINIMAL)
    with pytest.raises(FrozenInstanceError):
        gate.required_level = QualityLevel.RELEASE  # type: ignore[misc]
    outcome = gate.evaluate(QualityLevel.MINIMAL)
    with pytest.raises(FrozenInstanceError):
        outcome.satisfied = False  # type: ignore[misc]
