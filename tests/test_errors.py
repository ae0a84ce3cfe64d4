"""Every public exception survives a pickle round trip, and the limit errors say what happened.

Errors cross processes (multiprocessing, Celery results, shared sessions), so an
exception that cannot be rebuilt from its pickle turns into a confusing
``TypeError`` in the parent. The list of exceptions is found by walking the
package, so a new public exception without a sample here fails the test.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import techrevati.runtime as package
from techrevati.runtime import (
    AgentStatus,
    BudgetExceededError,
    MaxIterationsExceededError,
    ModelPricing,
    Orchestrator,
    UnpricedModelError,
    UsageSnapshot,
    agent_session,
    register_pricing,
)
from techrevati.runtime.guardrails import GuardrailOutcome
from techrevati.runtime.permissions import PermissionOutcome
from techrevati.runtime.usage_tracking import LimitSite, usd_pair


def _public_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(package.__path__, prefix="techrevati.runtime."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                not name.startswith("_")
                and inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__.startswith("techrevati.")
            ):
                found[value.__qualname__] = value
    return found


SITE = LimitSite("parent", False, "planner", "planner-1", "researcher", "researcher-2")
SAMPLES: dict[str, list[Any]] = {
    "BudgetExceededError": [
        lambda c: c(10.0, 12.5),
        lambda c: c(0.05, 0.066, scope="tenant-42"),
        lambda c: c(0.0003, 0.000306, site=LimitSite("own", True, "writer", "writer-1")),
        lambda c: c(0.05, 0.05, site=SITE),
    ],
    "MaxIterationsExceededError": [
        lambda c: c(3),
        lambda c: c(10, scope="tenant-42"),
        lambda c: c(25, site=SITE),
    ],
    "UnpricedModelError": [
        lambda c: c("my-finetune", 1.0),
        lambda c: c("my-finetune", 1.0, 0.25, site=LimitSite("own", False, "w", "w-1")),
    ],
    "FleetUnavailableError": [lambda c: c("tenant-42", "TimeoutError: timed out")],
    "TurnTimeoutError": [lambda c: c(0.05)],
    "PermissionDeniedError": [lambda c: c(PermissionOutcome(False, "role 'w' may not"))],
    "CircuitOpenError": [
        lambda c: c("model-api"),
        lambda c: c("model-api", reason="8 hung"),
        lambda c: c(
            "model-api",
            failures=5,
            last_failure="ConnectionError: connection refused",
            retry_in_seconds=12.5,
            recovery_timeout_seconds=30.0,
        ),
    ],
    "GuardrailViolatedError": [
        lambda c: c(
            GuardrailOutcome(False, "pii"), guardrail="no_pii", role="w", tool="t", stage="post"
        )
    ],
    "InvalidTransitionError": [lambda c: c(AgentStatus.COMPLETED, AgentStatus.RUNNING)],
    "LoopDetectedError": [lambda c: c("repeat", "search", 3)],
    "OutputFileError": [lambda c: c("telemetry-out/spans.jsonl is a symbolic link")],
    "BadRecord": [lambda c: c("line 3: not JSON")],
}


# Exceptions that never reach a caller: control flow inside the package.
INTERNAL = {
    "ProbeWait": "an admission that must wait for a probe; caught by the turn that waits",
    "NotComparable": "a value loop detection cannot compare; caught by the loop watch",
    "TooBig": "a value too large to walk (a NotComparable); caught by the loop watch",
    "ToolFailedError": "an Agents SDK tool's error the SDK gave the model as text; on its span",
}


def test_every_public_exception_has_a_sample() -> None:
    missing = sorted(set(_public_exceptions()) - set(SAMPLES) - set(INTERNAL))
    assert not missing, (
        f"add a sample for {missing} to SAMPLES (or, if never raised to a caller, to INTERNAL)"
    )
    assert all(INTERNAL.values())


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_survives_a_pickle_round_trip(name: str) -> None:
    cls = _public_exceptions()[name]
    for make in SAMPLES[name]:
        error = make(cls)
        clone = pickle.loads(pickle.dumps(error))
        assert type(clone) is cls
        assert str(clone) == str(error)
        assert clone.args == error.args
        assert vars(clone) == vars(error), name


def test_a_raised_limit_error_survives_with_its_site() -> None:
    orch = Orchestrator(role="writer", max_iterations=1)
    with pytest.raises(MaxIterationsExceededError) as stop, orch.session() as session:
        session.run_turn(lambda: "a", model="")
        session.run_turn(lambda: "b", model="")
    clone = pickle.loads(pickle.dumps(stop.value))
    assert clone.site == stop.value.site
    assert clone.site.level == "own" and clone.site.role == "writer"
    assert str(clone) == str(stop.value)


# --- the messages ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "limit", "strict", "printed"),
    [
        (12.5, 10.0, True, ("12.5000", "10.0000")),
        (0.000306, 0.0003, True, ("0.00031", "0.00030")),  # the "$0.0003 > $0.0003"
        (0.050000001, 0.05, True, ("0.050000001", "0.050000000")),
        (0.05, 0.05, False, ("0.0500", "0.0500")),
        # A small budget reached: 4 decimals printed "$0.0001 >= $0.0000" (the budget
        # as zero, the spend doubled); each amount keeps two significant digits.
        (0.000057, 0.00004, False, ("0.000057", "0.000040")),
        (0.000142, 0.00012, False, ("0.00014", "0.00012")),
    ],
)
def test_amounts_are_printed_so_the_comparison_is_true(
    amount: float, limit: float, strict: bool, printed: tuple[str, str]
) -> None:
    assert usd_pair(amount, limit, strict=strict) == printed
    a, b = (float(x) for x in printed)
    assert (a > b) if strict else (a >= b)


@given(
    limit=st.floats(min_value=1e-9, max_value=1e4),
    factor=st.floats(min_value=1.0, max_value=100.0),
    strict=st.booleans(),
)
def test_each_printed_amount_is_within_five_percent_of_its_value(
    limit: float, factor: float, strict: bool
) -> None:
    amount = limit * factor
    if strict and amount == limit:
        amount = limit * (1 + 1e-6)
    a, b = usd_pair(amount, limit, strict=strict)
    assert (float(a) > float(b)) if strict else (float(a) >= float(b))
    assert float(a) == pytest.approx(amount, rel=0.05)
    assert float(b) == pytest.approx(limit, rel=0.05)


def _amounts(message: str) -> tuple[float, str, float]:
    m = re.search(
        r"\$([0-9.]+) (?:spent or reserved by calls in flight )?(>=|>) \$([0-9.]+)", message
    )
    assert m, message
    return float(m[1]), m[2], float(m[3])


@pytest.fixture
def model_a() -> None:
    register_pricing("docs-model-a", ModelPricing(input_per_million=3.0, output_per_million=15.0))


def test_a_crossing_names_the_session_says_it_ran_and_prints_a_true_inequality(
    model_a: None,
) -> None:
    # 102 input tokens at $3/M = $0.000306 against a $0.0003 budget: 4 decimals would
    # print "$0.0003 > $0.0003".
    orch = Orchestrator(role="writer", budget_usd=0.0003, enforce_budget=True)
    with pytest.raises(BudgetExceededError) as stop, orch.session() as session:
        session.run_turn(lambda: "x", model="docs-model-a", usage=UsageSnapshot(102, 0))
    message = str(stop.value)
    spent, sign, budget = _amounts(message)
    assert sign == ">" and spent > budget
    assert f"session 'writer' ({session.worker.worker_id})" in message
    assert "ran and was paid for" in message and "booked" in message
    assert "Raise budget_usd" in message
    assert stop.value.site == LimitSite("own", True, "writer", session.worker.worker_id)
    assert (stop.value.budget_usd, stop.value.scope) == (0.0003, None)


def test_the_orchestrators_log_line_prints_the_errors_amounts(
    model_a: None, caplog: pytest.LogCaptureFixture
) -> None:
    # 19 input tokens at $3/M = $0.000057 against a $0.00004 budget: the line printed
    # "spent $0.0001 of its $4e-05 budget" (the tracker's 4 decimals, a float's repr).
    orch = Orchestrator(role="writer", budget_usd=0.00004, enforce_budget=True)
    with (
        caplog.at_level("WARNING", logger="techrevati.runtime.orchestrator"),
        pytest.raises(BudgetExceededError),
        orch.session() as session,
    ):
        session.run_turn(lambda: "x", model="docs-model-a", usage=UsageSnapshot(19, 0))
    lines = [r.getMessage() for r in caplog.records if "budget_exceeded" in r.getMessage()]
    assert lines == [
        f"budget_exceeded: session 'writer' ({session.worker.worker_id}) spent $0.000057 "
        "of its $0.000040 budget"
    ]


def test_the_log_line_of_a_soft_budget_says_the_session_goes_on(
    model_a: None, caplog: pytest.LogCaptureFixture
) -> None:
    # A soft budget crossed logged the same line as an enforced one: a reader took
    # the session for stopped while it ran on.
    orch = Orchestrator(role="writer", budget_usd=0.00004)
    with (
        caplog.at_level("WARNING", logger="techrevati.runtime.orchestrator"),
        orch.session() as session,
    ):
        session.run_turn(lambda: "x", model="docs-model-a", usage=UsageSnapshot(19, 0))
        session.run_turn(lambda: "y", model="docs-model-a", usage=UsageSnapshot(19, 0))
    lines = [r.getMessage() for r in caplog.records if "budget_exceeded" in r.getMessage()]
    assert lines == [
        f"budget_exceeded: session 'writer' ({session.worker.worker_id}) spent $0.000057 "
        "of its $0.000040 budget (a soft budget: the session goes on)"
    ]


def test_a_refusal_by_calls_in_flight_says_what_they_reserved(model_a: None) -> None:
    # A burst of first calls reserves their estimates: "Raise budget_usd" read wrong
    # when next to nothing was spent. The message splits spent from reserved.
    from techrevati.runtime.telemetry.limits.ledger import Ledger
    from techrevati.runtime.usage_tracking import UsageTracker

    ledger = Ledger(UsageTracker(), budget_usd=1.0, enforce_budget=True, role="burst")
    first = ledger.admit("docs-model-a", 0.6)
    ledger.settle(first, "docs-model-a", UsageSnapshot(10, 0))  # $0.00003 spent
    ledger.admit("docs-model-a", 0.6)  # in flight
    ledger.admit("docs-model-a", 0.6)  # in flight: $1.2 reserved
    with pytest.raises(BudgetExceededError) as refused:
        ledger.admit("docs-model-a", 0.6)
    error = refused.value
    assert error.reserved_usd == pytest.approx(1.2)
    assert error.current_cost_usd == pytest.approx(1.20003)
    message = str(error)
    assert "Of that, $0.000030 was spent and $1.2000 is reserved by calls still in flight" in (
        message
    )
    # The reservations may come from usage= given up front (these do: admit's expected),
    # learned costs or call_estimate_usd, not only from requests: each source is named,
    # and no advice (set max_tokens) that fits only requests.
    assert (
        "each at what it is expected to cost until it is booked: the usage= it was given, "
        "the most its model has cost so far, call_estimate_usd, or what its request asks "
        "for (its max_tokens, else a default output length)."
    ) in message
    assert "max_tokens on" not in message
    assert message.endswith("Let the calls in flight finish, or raise budget_usd.")
    again = pickle.loads(pickle.dumps(error))
    assert (again.reserved_usd, str(again)) == (error.reserved_usd, message)


def test_a_refusal_says_the_call_never_ran(model_a: None) -> None:
    orch = Orchestrator(role="writer", budget_usd=0.03, enforce_budget=True)
    ran = []
    with orch.session() as session:
        for _ in range(2):  # $0.015 each: spend lands exactly on the budget, no raise
            session.run_turn(
                lambda: ran.append(1), model="docs-model-a", usage=UsageSnapshot(5000, 0)
            )
        with pytest.raises(BudgetExceededError) as stop:
            session.run_turn(lambda: ran.append(1), model="docs-model-a", usage=UsageSnapshot(1, 1))
    assert len(ran) == 2
    message = str(stop.value)
    value, sign, budget = _amounts(message)
    assert (value, sign, budget) == (0.03, ">=", 0.03)
    assert "refused before it ran" in message and "nothing was booked" in message
    assert stop.value.site == LimitSite("own", False, "writer", session.worker.worker_id)


@pytest.mark.parametrize(
    ("model", "allow_unpriced"), [("", False), ("no-such-model-xyz", True), ("docs-model-a", False)]
)
def test_a_zero_budget_says_no_call_may_run(
    model_a: None, model: str, allow_unpriced: bool
) -> None:
    # It read "$0.0000 spent or reserved by calls in flight >= $0.0000 ... Let the calls
    # in flight finish, set max_tokens ...", with nothing spent and nothing in flight.
    ran = []
    zero = agent_session("zero", budget_usd=0, enforce_budget=True, allow_unpriced=allow_unpriced)
    with zero as session:
        with pytest.raises(BudgetExceededError) as stop:
            session.run_turn(lambda: ran.append(1), model=model, usage=UsageSnapshot(1, 1))
        assert session.run_tool("lookup", lambda: "found") == "found"  # tools still run
    assert ran == []
    assert str(stop.value) == (
        f"budget reached: the budget of session 'zero' ({session.worker.worker_id}) is $0, "
        "so no model call may run. This call was refused before it ran: nothing was sent "
        "and nothing was booked. Raise budget_usd."
    )


def test_a_zero_budget_of_a_parent_or_a_fleet_scope_says_whose_to_raise() -> None:
    parent = BudgetExceededError(0.0, 0.0, site=LimitSite("parent", False, "p", "p-1", "c", "c-1"))
    assert "is $0, so no model call may run" in str(parent)
    assert str(parent).endswith("Raise the parent session's budget_usd.")
    fleet = BudgetExceededError(0.0, 0.0, site=LimitSite("fleet", False, scope="tenant"))
    assert str(fleet).startswith("budget reached: the budget of fleet scope 'tenant' is $0")
    assert str(fleet).endswith("Raise the scope's budget_usd.")
    assert "calls in flight" not in str(fleet)


def test_a_parents_cap_hit_inside_a_child_names_the_parent() -> None:
    # One with per session: the child must open inside the parent's block.
    with agent_session("planner", max_iterations=2) as parent:  # noqa: SIM117
        with agent_session("researcher", max_iterations=5) as child:
            child.run_turn(lambda: "a", model="")
            child.run_turn(lambda: "b", model="")
            with pytest.raises(MaxIterationsExceededError) as stop:
                child.run_turn(lambda: "c", model="")
    error = stop.value
    assert error.max_iterations == 2 and error.scope is None
    assert error.site == LimitSite(
        "parent",
        False,
        "planner",
        parent.worker.worker_id,
        "researcher",
        child.worker.worker_id,
    )
    message = str(error)
    assert message.startswith(
        f"the parent session 'planner' ({parent.worker.worker_id}) of session 'researcher'"
    )
    assert "max_iterations=2" in message and "max_iterations=5" not in message
    assert "model call 3 was refused before it ran" in message


def test_the_default_cap_is_named_as_such() -> None:
    with pytest.raises(MaxIterationsExceededError) as stop, agent_session("looper") as session:
        for _ in range(30):
            session.run_turn(lambda: None, model="")
    assert stop.value.max_iterations == 25
    assert "max_iterations=25 (the default cap of 25)" in str(stop.value)
    with (
        pytest.raises(MaxIterationsExceededError) as small,
        agent_session("w", max_iterations=2) as s,
    ):
        for _ in range(3):
            s.run_turn(lambda: None, model="")
    assert "the default cap" not in str(small.value)
    # 25 given by hand is the session's own cap, not the default, though equal to it.
    with (
        pytest.raises(MaxIterationsExceededError) as explicit,
        agent_session("w", max_iterations=25) as s,
    ):
        for _ in range(26):
            s.run_turn(lambda: None, model="")
    assert "max_iterations=25: model call 26 was refused" in str(explicit.value)
    assert "the default cap" not in str(explicit.value)
    again = pickle.loads(pickle.dumps(stop.value))
    assert str(again) == str(stop.value) and again.max_iterations == 25


def test_an_unpriced_model_names_the_session_and_says_it_never_ran() -> None:
    orch = Orchestrator(role="writer", budget_usd=1.0, enforce_budget=True)
    ran = []
    with pytest.raises(UnpricedModelError) as stop, orch.session() as session:
        session.run_turn(
            lambda: ran.append(1), model="no-such-model-xyz", usage=UsageSnapshot(1, 1)
        )
    assert ran == []
    message = str(stop.value)
    assert f"session 'writer' ({session.worker.worker_id})" in message
    assert "refused before it ran" in message and "allow_unpriced=True" in message
    assert isinstance(stop.value, BudgetExceededError) and stop.value.model == "no-such-model-xyz"


def test_plain_constructors_keep_the_contract_messages() -> None:
    assert str(BudgetExceededError(10.0, 12.5)) == "budget exceeded: $12.5000 > $10.0000"
    assert (
        str(MaxIterationsExceededError(3))
        == "session reached max_iterations=3; raise the cap or shorten the loop"
    )


def test_a_budget_prints_as_it_was_set_and_the_split_as_the_total() -> None:
    """'$0.000114 > $0.000100' for a budget set at $0.00009975; '$0.002467 ... Of that,
    $0.0000 was spent and $0.0025 is reserved' mixed six and four decimals."""
    from techrevati.runtime.usage_tracking import LimitSite, usd_pair

    assert usd_pair(0.000114, 0.00009975, strict=True) == ("0.00011400", "0.00009975")
    refused = BudgetExceededError(
        0.0001, 0.002467, site=LimitSite("own", False, "w", "w-1"), reserved_usd=0.002467
    )
    assert "$0.00247 spent or reserved by calls in flight >= $0.00010" in str(refused)
    assert "Of that, $0.00000 was spent and $0.00247 is reserved" in str(refused)


def test_an_unknown_agent_session_option_names_agent_session_and_the_close_one() -> None:
    # It read "Orchestrator.__init__() got an unexpected keyword argument 'budget'":
    # a class the caller never wrote, and no word of budget_usd.
    with pytest.raises(TypeError) as wrong:
        agent_session("w", budget=1.0)
    assert str(wrong.value) == (
        "agent_session() got an unexpected keyword argument 'budget'; did you mean 'budget_usd'?"
    )
    with pytest.raises(TypeError, match=r"argument 'zzz'$"):
        agent_session("w", zzz=1)
    assert agent_session("w", budget_usd=1.0, loop_guard=None).orchestrator.budget_usd == 1.0


def test_the_retried_attempts_warning_counts_in_words() -> None:
    # It read "2 attempt(s) of a call ...": the number is known, so is its grammar.
    from techrevati.runtime.telemetry.limits.ledger import _retried_warning

    two = _retried_warning(2, "m")
    assert two.startswith("2 attempts of a call of model 'm' timed out waiting for their response")
    assert "(s)" not in two
    one = _retried_warning(1, "m")
    assert one.startswith("1 attempt of a call of model 'm' timed out waiting for its response")
    assert "retried it" in one and "booked with the call at its request's upper bound" in one
