"""A first burst of model calls under a fleet scope's budget, on threads and on an event loop.

OpenLLMetry's OpenAI instrumentation starts its span naming only the operation
(no model): the span is admitted "unnamed", and the client guard decides it
again as a call of its request's model (``Ledger.admit_named``) before the
request is sent. The official instrumentation's span names its model at its
start ("named"); a client without instrumentation has the guard as its door
("bare"). Here the session's only enforced budget (or the tighter one) is a
fleet scope's, in Redis: 20 first calls of a priced model, no max_tokens, under
a fleet budget of five calls. Exactly five reach the server, each booked once,
locally and in the fleet, and nothing stays reserved.

Before: an unnamed span asked the fleet at its start as a call of model "",
reserving nothing there, and 20 of 20 ran; a named burst on an event loop, and a
bare client's on threads and on an event loop, each held its request's bound at
the fleet, and 1 ran (still so for a bare client on threads under a fleet budget
alone); a call the fleet refused after the local levels admitted it was booked at
an estimate when its span ended, though never sent.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import ThreadingHTTPServer
from typing import Any

import openai
import pytest
from opentelemetry import trace as otel_trace

from fake_openai import FakeOpenAI, chat_completion, serve
from otel_harness import Otel, make_otel
from techrevati.runtime import (
    BudgetExceededError,
    FleetLimits,
    ModelPricing,
    agent_session,
    register_pricing,
)
from techrevati.runtime.telemetry.limits import guard, membership

from .redis_server import RedisServer

#: model-a at $3 / $15 per million: 1000 in + 100 out = $0.0045.
ONE_CALL = 0.0045
FIVE_CALLS = 5 * ONE_CALL
TEN_CALLS = 10 * ONE_CALL
CALLS = 20
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = make_otel()
    yield o
    o.shutdown()


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    # 20 requests may arrive at once when the limit breaks: a listen backlog of 5 reset
    # some of them (APIConnectionError), hiding how many calls the limits let through.
    monkeypatch.setattr(ThreadingHTTPServer, "request_queue_size", 128)
    register_pricing("model-a", ModelPricing(3.0, 15.0))  # (the root conftest restores)
    guard.uninstall_guard()
    with serve(FakeOpenAI(chat_completion("model-a", 1000, 100), delay=0.2)) as fake:
        yield fake
    guard.uninstall_guard()


# --- A call as each producer wraps it: OpenLLMetry's span (no model at its start,
# --- named at its end), the official instrumentation's (named at its start), none.


def _span(otel: Otel, kind: str) -> Any:
    if kind == "named":
        tracer = otel.tracer_provider.get_tracer("opentelemetry.instrumentation.genai.openai")
        return tracer.start_span(
            "chat model-a",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "model-a",
                "gen_ai.provider.name": "openai",
            },
        )
    tracer = otel.tracer_provider.get_tracer("opentelemetry.instrumentation.openai.v1")
    return tracer.start_span("openai.chat", attributes={"gen_ai.operation.name": "chat"})


def _answered(span: Any) -> None:
    """End the span as its instrumentation does once the call was answered (ONE_CALL)."""
    span.set_attribute("gen_ai.usage.input_tokens", 1000)
    span.set_attribute("gen_ai.usage.output_tokens", 100)
    span.end()


def _call(otel: Otel, kind: str, send: Callable[[], object]) -> None:
    if kind == "bare":  # the client alone: the guard is its door
        send()
        return
    span = _span(otel, kind)
    try:
        with otel_trace.use_span(span, end_on_exit=False):
            send()
    except BaseException:
        span.end()
        raise
    span.set_attribute("gen_ai.request.model", "model-a")
    _answered(span)


async def _acall(otel: Otel, kind: str, send: Callable[[], Awaitable[object]]) -> None:
    if kind == "bare":
        await send()
        return
    span = _span(otel, kind)
    try:
        await send()
    except BaseException:
        span.end()
        raise
    span.set_attribute("gen_ai.request.model", "model-a")
    _answered(span)


def _outcome(fn: Callable[[], object]) -> str:
    try:
        fn()
    except BudgetExceededError as stop:
        return "crossed" if stop.site is not None and stop.site.ran else "refused"
    except Exception as other:  # anything else is a failure of the test
        return f"other:{type(other).__name__}"
    return "ran"


async def _aoutcome(call: Awaitable[Any]) -> str:
    try:
        await call
    except BudgetExceededError as stop:
        return "crossed" if stop.site is not None and stop.site.ran else "refused"
    except Exception as other:
        return f"other:{type(other).__name__}"
    return "ran"


def _thread_burst(session: Any, otel: Otel, api: FakeOpenAI, kind: str) -> list[str]:
    client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
    start = threading.Barrier(CALLS)

    def one(_: int) -> str:
        start.wait()
        return _outcome(
            lambda: _call(
                otel,
                kind,
                lambda: client.chat.completions.create(model="model-a", messages=MESSAGES),
            )
        )

    with ThreadPoolExecutor(max_workers=CALLS) as pool:
        return list(pool.map(session.wrap(one), range(CALLS)))


def _loop_burst(otel: Otel, api: FakeOpenAI, kind: str) -> list[str]:
    async def main() -> list[str]:
        client = openai.AsyncOpenAI(base_url=api.url, api_key="k", max_retries=0)

        async def send() -> None:
            await client.chat.completions.create(model="model-a", messages=MESSAGES)

        calls = (_aoutcome(_acall(otel, kind, send)) for _ in range(CALLS))
        return list(await asyncio.gather(*calls))

    return asyncio.run(main())


#: Observed per case (printed with -s; the report quotes them).
OBSERVED: dict[str, dict[str, Any]] = {}


@pytest.mark.parametrize("kind", ["unnamed", "named", "bare"])
@pytest.mark.parametrize("local", ["fleet only", "local 10 + fleet 5"])
@pytest.mark.parametrize("client_kind", ["threads", "asyncio"])
def test_a_first_burst_of_spans_holds_a_fleet_scopes_budget(
    redis_server: RedisServer, api: FakeOpenAI, otel: Otel, client_kind: str, local: str, kind: str
) -> None:
    scope = f"{kind}-{client_kind}-{'both' if local != 'fleet only' else 'fleet'}"
    fleet = FleetLimits(redis_server.url, scope=scope, budget_usd=FIVE_CALLS)
    limits: dict[str, Any] = {"fleet": fleet}
    if local != "fleet only":
        limits.update(budget_usd=TEN_CALLS, enforce_budget=True)
    with agent_session("w", **limits, **otel.kwargs()) as session:
        if client_kind == "threads":
            outcomes = _thread_burst(session, otel, api, kind)
        else:
            outcomes = _loop_burst(otel, api, kind)
        reserved_local = session._ledger.reserved_nano
    fleet.flush(5.0)
    usage = fleet.usage()
    sent = len(api.requests)
    booked = session.tracker.total_cost()
    seen = {
        "sent": sent,
        "ran": outcomes.count("ran"),
        "crossed": outcomes.count("crossed"),
        "refused": outcomes.count("refused"),
        "other": [o for o in outcomes if o.startswith("other")],
        "booked_local": round(booked, 6),
        "fleet_spent": round(usage.spent_usd, 6),
        "fleet_budget": FIVE_CALLS,
        "reserved_local_nano": reserved_local,
        "fleet_reserved": usage.reserved_usd,
        "fleet_in_flight": usage.in_flight,
        "fleet_calls": usage.calls,
    }
    OBSERVED[f"{kind}/{client_kind}/{local}"] = seen
    print(f"\n{kind}/{client_kind}/{local}: {seen}")

    assert seen["other"] == []  # every refusal is our BudgetExceededError
    if (kind, client_kind, local) == ("bare", "threads", "fleet only"):
        # Known, and safe: a bare client's first calls on threads each ask the fleet at
        # their request's bound, and with no local budget nothing makes them wait for
        # their model's first call: its bound refuses the rest until it settles.
        assert sent == 1
    else:
        assert sent == 5  # the five the budget holds: neither more, nor fewer
    assert outcomes.count("ran") + outcomes.count("crossed") == sent
    assert outcomes.count("refused") == CALLS - sent  # each refused call was never sent
    assert booked <= FIVE_CALLS + ONE_CALL + 1e-12
    assert booked == pytest.approx(sent * ONE_CALL)
    assert usage.spent_usd <= FIVE_CALLS + ONE_CALL + 1e-12
    assert usage.spent_usd == pytest.approx(sent * ONE_CALL)  # the fleet booked each call
    assert reserved_local == 0
    assert (usage.reserved_usd, usage.in_flight) == (0.0, 0)
    assert membership.WAITING == {}
