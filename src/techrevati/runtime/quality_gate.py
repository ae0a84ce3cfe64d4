"""Quality levels and the gate that compares an observed level with a required one.

Example::

    >>> from techrevati.runtime.quality_gate import QualityGate, QualityLevel
    >>> QualityGate(QualityLevel.STANDARD).evaluate(QualityLevel.STRICT).satisfied
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

__all__ = ["QualityGate", "QualityGateOutcome", "QualityLevel"]


class QualityLevel(IntEnum):
    """Ordered quality levels; a higher value is a stricter level.

    Example::

        >>> QualityLevel.RELEASE > QualityLevel.MINIMAL
        True
        >>> QualityLevel.MINIMAL.label
        'Minimal'
    """

    MINIMAL = 1
    STANDARD = 2
    STRICT = 3
    RELEASE = 4

    @property
    def label(self) -> str:
        """The member name in title case, for human-facing output."""
        return self.name.title()


@dataclass(frozen=True)
class QualityGateOutcome:
    """Result of one gate evaluation.

    Example::

        >>> QualityGateOutcome(True, QualityLevel.STANDARD, QualityLevel.STRICT).to_dict()
        {'satisfied': True, 'required_level': 'STANDARD', 'observed_level': 'STRICT'}
    """

    satisfied: bool
    required_level: QualityLevel
    observed_level: QualityLevel | None

    def is_satisfied(self) -> bool:
        """Return whether the gate was satisfied."""
        return self.satisfied

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly dict; levels are member names, not numbers."""
        return {
            "satisfied": self.satisfied,
            "required_level": self.required_level.name,
            "observed_level": None if self.observed_level is None else self.observed_level.name,
        }


@dataclass(frozen=True)
class QualityGate:
    """A gate that passes when the observed level is at least ``required_level``.

    Example::

        >>> gate = QualityGate(QualityLevel.STANDARD)
        >>> gate.evaluate(None).satisfied
        False
        >>> gate.is_satisfied_by(QualityLevel.STANDARD)
        True
    """

    required_level: QualityLevel

    def __post_init__(self) -> None:
        if not isinstance(self.required_level, QualityLevel):
            raise TypeError(
                f"QualityGate required_level must be a QualityLevel, got {self.required_level!r}"
            )

    def evaluate(self, observed: QualityLevel | None) -> QualityGateOutcome:
        """Compare ``observed`` with the required level; ``None`` never satisfies."""
        if observed is not None and not isinstance(observed, QualityLevel):
            raise TypeError(f"observed must be a QualityLevel or None, got {observed!r}")
        satisfied = observed is not None and observed >= self.required_level
        return QualityGateOutcome(satisfied, self.required_level, observed)

    def is_satisfied_by(self, observed: QualityLevel) -> bool:
        """Return ``observed >= required_level`` (no ``None`` handling)."""
        return observed >= self.required_level
