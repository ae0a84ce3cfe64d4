"""Fleet levels above the session tree, through the core (an in-memory level).

The Redis level itself is tested against a real server in ``tests/fleet``;
here a plain in-process level implementing the same three calls checks how
the core drives any level: every call reserves, settles or releases exactly
once, refusals undo what lower levels took, and ``configure(fleet=...)`` makes
calls outside sessions count.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from otel_harness import Otel
from techrevati.runtime import (
    MaxIterationsExceededError,
    ModelPricing,
    Orchestrator,
    UsageSnapshot,
    agent_session,
    agent_turn,
    register_pricing,
)
from techrevati.runtime.telemetry.limits import membership


class MemoryLevel:
    """A fleet level kept in this process (the protocol ``FleetLimits`` implements)."""

    def __init__(self, scope: str, max_calls: int | None = None) -> None:
        self.scope = scope
        self.budget_usd: float | None = None
        self.max_calls = max_calls
        self.calls = 0
        self.spent = 0.0
        self.log: list[str] = []

    def reserve(self, model: str, expected_usd: float) -> object:
        if self.max_calls is not None and self.calls >= self.max_calls:
            self.log.append("refused")
            raise MaxIterationsExceededError(self.max_calls, scope=self.scope)
        self.calls += 1
        self.log.append("reserve")
        return object()

    def settle(self, hold: object, actual_usd: float) -> None:
        self.spent += actual_usd
        self.log.append("settle")

    def release(self, hold: object, *, ran: bool = False) -> None:
        if not ran:
            self.calls -= 1
        self.log.append("release-ran" if ran else "release")


@pytest.fixture(autouse=True)
def _prices_and_root() -> Iterator[None]:
    register_pricing("usd-1", ModelPricing(1_000_000.0, 0.0))
    yield
    membership.set_process_root(None)


def test_a_session_fleet_counts_every_call_and_names_its_scope(otel: Otel) -> None:
    level = MemoryLevel("tenant-1", max_calls=2)
    orch = Orchestrator(role="w", phase="p", fleet=level, **otel.kwargs())
    with orch.session() as session:
        session.run_turn(lambda: None, model="usd-1", usage=UsageSnapshot(1, 0))
        with pytest.raises(RuntimeError):
            session.run_turn(lambda: (_ for _ in ()).throw(RuntimeError("x")), model="usd-1")
        with pytest.raises(MaxIterationsExceededError) as err:
            session.run_turn(lambda: None, model="usd-1")
    assert err.value.scope == "tenant-1"
    assert level.log == ["reserve", "settle", "reserve", "release-ran", "refused"]
    assert (level.calls, level.spent) == (2, 1.0)
    assert session._iteration_count == 2  # the refused call was un-counted locally
    hits = [e for e in otel.span("invoke_agent w").events if e.name == "techrevati.limit.hit"]
    assert [dict(e.attributes or {})["techrevati.limit.kind"] for e in hits] == ["fleet_calls"]
    assert dict(hits[0].attributes or {})["techrevati.fleet.scope"] == "tenant-1"


def test_a_local_refusal_never_reaches_the_fleet(otel: Otel) -> None:
    level = MemoryLevel("tenant-1")
    with agent_session("w", max_iterations=1, fleet=[level], **otel.kwargs()) as session:
        session.run_turn(lambda: None, model="usd-1", usage=UsageSnapshot(1, 0))
        with pytest.raises(MaxIterationsExceededError) as err:
            session.run_turn(lambda: None, model="usd-1")
    assert err.value.scope is None
    assert level.log == ["reserve", "settle"]


def test_configure_fleet_counts_calls_in_and_out_of_sessions(otel: Otel) -> None:
    level = MemoryLevel("process", max_calls=3)
    membership.install_fleet((level,))

    @agent_turn("usd-1", usage=UsageSnapshot(1, 0))
    def ask() -> str:
        return "ok"

    ask()  # no session: still counted
    with Orchestrator(role="w", phase="p", **otel.kwargs()).session():
        ask()
    with agent_session("child-less", **otel.kwargs()):
        ask()
        with pytest.raises(MaxIterationsExceededError):
            ask()
    assert level.calls == 3
    assert level.spent == 3.0


def test_configure_rejects_a_bad_fleet_value() -> None:
    from techrevati.runtime import configure

    with pytest.raises(TypeError, match="fleet must be a FleetLimits"):
        configure(fleet="redis://nowhere", set_global=False)
    assert membership.process_root() is None


def test_a_refusal_by_a_later_scope_frees_the_earlier_ones(otel: Otel) -> None:
    tenant, user = MemoryLevel("tenant"), MemoryLevel("user", max_calls=0)
    orch = Orchestrator(role="w", phase="p", fleet=[tenant, user], **otel.kwargs())
    with orch.session() as session, pytest.raises(MaxIterationsExceededError) as err:
        session.run_turn(lambda: None, model="usd-1")
    assert err.value.scope == "user"
    assert tenant.log == ["reserve", "release"]  # released as never run: not counted
    assert (tenant.calls, session._iteration_count) == (0, 0)


def test_usage_after_the_session_closed_reaches_the_fleet(otel: Otel) -> None:
    level = MemoryLevel("tenant")
    pending: list[Any] = []
    tracer = otel.tracer_provider.get_tracer("some.genai.library")
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "usd-1"}
    with agent_session("w", fleet=level, **otel.kwargs()) as session:
        pending.append(tracer.start_span("chat usd-1", attributes=attrs))  # a stream, unread
    span = pending[0]
    span.set_attribute("gen_ai.usage.input_tokens", 2)
    span.set_attribute("gen_ai.usage.output_tokens", 0)
    span.end()  # read after the block: booked once, locally and fleet-wide
    assert session.tracker.total_cost() == 2.0
    assert level.log == ["reserve", "settle"]
    assert level.spent == 2.0


def test_the_report_lists_fleet_scopes_from_the_spans(otel: Otel) -> None:
    from techrevati.runtime.telemetry.export.jsonl import spans_to_json_line
    from techrevati.runtime.telemetry.report.exporter import (
        build_report,
        records_from_otlp_json,
        render_report,
    )

    tenant = MemoryLevel("tenant-42", max_calls=2)
    with agent_session("w", fleet=tenant, **otel.kwargs()) as session:
        for _ in range(3):
            with contextlib.suppress(MaxIterationsExceededError):
                session.run_turn(lambda: None, model="usd-1", usage=UsageSnapshot(1, 0))
    line = spans_to_json_line(tuple(otel.spans()))  # through the file format, as replayed
    report = build_report(records_from_otlp_json(json.loads(line)))
    row = report.fleet["tenant-42"]
    assert (row.sessions, row.cost_usd, dict(row.refusals)) == (1, 2.0, {"fleet_calls": 1})
    text = render_report(report)
    assert "Fleet scopes" in text
    assert "tenant-42" in text


def test_an_unpriced_model_refused_by_a_fleet_budget_names_that_budget(otel: Otel) -> None:
    # With no local budget, the refusal said "the enforced budget of $0.0000 of this
    # session" (budget_usd=0.0, scope None), under a fleet scope's $3 budget.
    from techrevati.runtime import UnpricedModelError

    level = MemoryLevel("tenant-42")
    level.budget_usd = 3.0
    membership.install_fleet((level,))

    @agent_turn("no-such-model-xyz")
    def step() -> str:
        return "text"

    with pytest.raises(UnpricedModelError) as refused:
        step()
    error = refused.value
    assert (error.budget_usd, error.scope) == (3.0, "tenant-42")
    assert error.site is not None and error.site.level == "fleet"
    assert "the enforced budget of $3.0000 of fleet scope 'tenant-42'" in str(error)
    assert level.log == []  # refused before anything was reserved
