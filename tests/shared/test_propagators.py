"""A shared session whose id cannot travel: the global propagator carries no baggage.

With ``OTEL_PROPAGATORS=tracecontext`` a service called from a shared session
got no baggage, so its calls ran outside the session's cap (6 calls under a cap
of 3, in the probe that found it) and nothing said so.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
from opentelemetry import propagate
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from techrevati.runtime import agent_session
from techrevati.runtime.fleet.sessions import RedisSessionStore
from techrevati.runtime.telemetry.limits import remote


@pytest.fixture
def textmap() -> Iterator[None]:
    before = propagate.get_global_textmap()
    yield
    propagate.set_global_textmap(before)


def test_a_shared_session_warns_once_when_baggage_cannot_travel(
    store: RedisSessionStore, textmap: None
) -> None:
    propagate.set_global_textmap(CompositePropagator([TraceContextTextMapPropagator()]))
    with (
        pytest.warns(RuntimeWarning) as caught,
        agent_session("planner", max_iterations=3, shared=True),  # the user's line
    ):
        pass
    said = [str(w.message) for w in caught if "baggage" in str(w.message)]
    assert len(said) == 1
    assert said[0].startswith("a shared session needs W3C baggage to travel between services")
    assert "fields ['traceparent', 'tracestate']" in said[0]
    assert "Add 'baggage' to OTEL_PROPAGATORS" in said[0]
    assert caught[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with agent_session("planner", max_iterations=3, shared=True):
            pass  # said once for this propagator


def test_the_default_propagators_carry_it_silently(store: RedisSessionStore, textmap: None) -> None:
    propagate.set_global_textmap(
        CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with agent_session("planner", max_iterations=3, shared=True):
            pass


def test_a_receiving_service_is_told_too(redis_server: object, textmap: None) -> None:
    from techrevati.runtime import configure

    propagate.set_global_textmap(TraceContextTextMapPropagator())
    try:
        with pytest.warns(RuntimeWarning, match="a shared session of another service needs W3C"):
            handle = configure(
                session_store=redis_server.url,  # type: ignore[attr-defined]
                set_global=False,
                spans_file=False,
                report=False,
                metrics=False,
            )
        handle.shutdown(timeout_s=1)
    finally:
        remote.install_store(None)
