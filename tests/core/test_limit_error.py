"""``limit_error``: our refusal found inside whatever a framework raised instead (issue 21)."""

from __future__ import annotations

import pytest

from techrevati.runtime import (
    BudgetExceededError,
    FleetUnavailableError,
    MaxIterationsExceededError,
    UnpricedModelError,
    limit_error,
)


class AgentGenerationError(Exception):
    """Shaped like smolagents' wrapper: raised ``from`` the model call's error."""


def test_our_error_as_is() -> None:
    error = MaxIterationsExceededError(5)
    assert limit_error(error) is error


def test_found_through_cause_and_context_at_any_depth() -> None:
    ours = BudgetExceededError(0.5, 0.6)
    try:
        try:
            try:
                raise ours
            except BudgetExceededError as exc:
                raise AgentGenerationError("Error while generating output") from exc
        except AgentGenerationError:
            raise RuntimeError("the run failed")  # noqa: B904 (implicit context, on purpose)
    except RuntimeError as outer:
        assert outer.__cause__ is None and outer.__context__ is not None
        assert limit_error(outer) is ours


def test_found_inside_exception_groups() -> None:
    ours = FleetUnavailableError("team", "redis down")
    group = ExceptionGroup("task group", [ValueError("other"), RuntimeError("x")])
    nested = BaseExceptionGroup("outer", [group, ExceptionGroup("inner", [ours])])
    assert limit_error(nested) is ours


def test_subclasses_count_and_the_nearest_wins() -> None:
    near = UnpricedModelError("my-finetune", 1.0)
    far = MaxIterationsExceededError(3)
    wrapper = AgentGenerationError("wrapped")
    wrapper.__cause__ = near
    near.__context__ = far
    assert limit_error(wrapper) is near


def test_none_when_it_is_not_ours_and_cycles_end() -> None:
    a, b = ValueError("a"), KeyError("b")
    a.__context__ = b
    b.__context__ = a  # a cycle: the walk still ends
    assert limit_error(a) is None
    assert limit_error(None) is None


def test_bad_input_is_named() -> None:
    with pytest.raises(TypeError, match="takes an exception, got str: 'boom'"):
        limit_error("boom")  # type: ignore[arg-type]
