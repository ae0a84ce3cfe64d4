"""Late usage past the table's bound, and library calls that failed with no response.

A "$1 call" is one input token of ``usd-1`` at $1,000,000 per million.
"""

from __future__ import annotations

import contextvars
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_harness import Otel
from techrevati.runtime import ModelPricing, agent_session, register_pricing
from techrevati.runtime.telemetry.limits import membership


@pytest.fixture(autouse=True)
def dollar_model() -> Iterator[None]:
    register_pricing("usd-1", ModelPricing(1_000_000.0, 0.0))
    yield


def _library_span(otel: Otel) -> Any:
    return otel.tracer_provider.get_tracer("some.genai.library").start_span(
        "chat usd-1",
        kind=SpanKind.CLIENT,
        attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "usd-1"},
    )


def test_a_connection_error_with_no_response_is_a_failed_call(otel: Otel) -> None:
    with agent_session("w", budget_usd=10.0, enforce_budget=True, **otel.kwargs()) as session:
        span = _library_span(otel)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "returned no token usage" warning
            span.set_status(Status(StatusCode.ERROR, "connection refused"))
            span.set_attribute("error.type", "APIConnectionError")
            span.end()
        ledger = session._ledger
        assert (ledger.calls, ledger.calls_without_usage, ledger.reserved_nano) == (1, 0, 0)
        assert ledger.spent_nano == 0


def test_a_full_late_table_books_its_oldest_call_at_an_estimate_never_loses_it(
    otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(membership, "LATE_LIMIT", 3)
    monkeypatch.setattr(membership, "LATE_EVICTED", 0)
    monkeypatch.setattr(membership, "LATE", {})
    with (
        pytest.warns(RuntimeWarning, match="booked at an estimate"),
        agent_session("w", budget_usd=100.0, enforce_budget=True, **otel.kwargs()) as session,
    ):
        first = _library_span(otel)
        first.set_attribute("gen_ai.usage.input_tokens", 2)  # learns: a usd-1 call costs $2
        first.end()
        # Five concurrent requests (overlapping spans on one thread would be one request).
        # All five threads alive at once: a finished thread's id may be reused.
        running: list[Any] = []
        together = threading.Barrier(5)

        def start() -> None:
            together.wait()
            running.append(_library_span(otel))
            together.wait()

        workers = [
            threading.Thread(target=contextvars.copy_context().run, args=(start,)) for _ in range(5)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        ledger = session._ledger
        assert ledger.calls == 6
    # The session closed with 5 calls running; the table keeps 3, the 2 oldest
    # are booked now at the learned cost.
    assert membership.LATE_EVICTED == 2
    assert ledger.spent_nano == 2_000_000_000 * 3
    for span in running:
        span.set_attribute("gen_ai.usage.input_tokens", 1)
        span.end()
    # The 3 kept book their real usage; the 2 booked at the estimate do not book twice.
    assert ledger.spent_nano == 2_000_000_000 * 3 + 1_000_000_000 * 3
    assert len(membership.LATE) == 0
