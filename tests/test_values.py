"""Flags and numbers from other libraries: NumPy's scalars are accepted, strings never.

NumPy is not a dependency; its scalars are stood in for by what makes them one: a
``numbers.Real`` / ``numbers.Integral`` that is not a Python float or int
(``fractions.Fraction`` here), and a boolean type named as NumPy names its own.
"""

from __future__ import annotations

import warnings
from fractions import Fraction

import pytest

from techrevati.runtime import GuardrailOutcome, Orchestrator
from techrevati.runtime.policy_engine import PolicyEngine, is_flag, is_real, is_whole
from techrevati.runtime.retry_policy import backoff_delay, smaller_context_budget

#: What ``numpy.bool_`` looks like from here: a type of module numpy named bool.
NumpyBool = type("bool", (), {"__module__": "numpy", "__bool__": lambda self: True})


def test_what_counts_as_a_flag_and_a_number() -> None:
    assert is_flag(True) and is_flag(NumpyBool()) and not is_flag("no") and not is_flag(1)
    assert is_whole(3) and not is_whole(True) and not is_whole(2.0)
    assert is_real(Fraction(1, 2)) and is_real(7) and not is_real(False) and not is_real("1")


def test_numbers_and_flags_of_other_libraries_are_accepted() -> None:
    # A classifier's score < threshold is a NumPy boolean, np.int64 counts are common:
    # the exact-type checks refused them (a tool a guardrail allowed no longer ran).
    assert GuardrailOutcome(allowed=NumpyBool()).allowed is True  # type: ignore[arg-type]
    assert backoff_delay(1, base=Fraction(2), jitter="none") == 2  # type: ignore[arg-type]
    assert smaller_context_budget(10_000, Fraction(3, 4)) == 7500  # type: ignore[arg-type]
    with Orchestrator(role="w", policy_engine=PolicyEngine([])).session() as session:
        assert session.evaluate_policy(phase_completed=NumpyBool()) == []  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="phase_completed must be True or False"):
            session.evaluate_policy(phase_completed="no")  # type: ignore[arg-type]


def test_enforce_budget_without_a_budget_is_warned_about_at_the_users_line() -> None:
    # A probe: agent_session("w", enforce_budget=True) was accepted without a word, and
    # enforced nothing: read as "enforce a budget", it has none to enforce.
    from techrevati.runtime import agent_session

    with pytest.warns(UserWarning, match="enforce_budget=True has no budget to enforce") as seen:
        orchestrator = Orchestrator(role="writer", enforce_budget=True)
    assert seen[0].filename == __file__
    assert len(seen) == 1
    with warnings.catch_warnings():
        # Said once, where it is written: not again at each session it opens (it was,
        # each time pointing at the session's line).
        warnings.simplefilter("error")
        with orchestrator.session():
            pass
        with orchestrator.session():
            pass
    with (
        pytest.warns(UserWarning, match="session 'w': enforce_budget=True"),
        agent_session("w", enforce_budget=True),
    ):
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Orchestrator(role="writer", enforce_budget=True, budget_usd=1.0)
        Orchestrator(role="writer", budget_usd=1.0)
