"""The guard books a raw streamed response when its caller reads it (issue 21).

The OpenAI Agents SDK streams the Responses API through
``responses.with_streaming_response.create(...)``: the client hands back a raw
response whose body is not read yet, and the event stream exists only once
the caller ``parse()``s it. Any ``with_streaming_response`` call is such a
response, streamed or not, read in any way the SDK offers (``parse()``,
``read()``, ``text()``, ``json()``, ``iter_bytes/iter_text/iter_lines``).
Real ``openai`` and ``anthropic`` clients, real guard, the local stand-in
server; no instrumentation (but the Anthropic SDK's own spans, where said), so
the guard is the only door.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider

sys.path.insert(0, str(Path(__file__).resolve().parent))

import standin

from techrevati.runtime import (
    BudgetExceededError,
    ModelPricing,
    agent_session,
    configure,
    register_pricing,
)
from techrevati.runtime.telemetry.limits import guard
from techrevati.runtime.telemetry.limits.estimate import request_estimate_usd

MODEL = "gpt-raw-stream"
CLAUDE = "claude-raw-stream"
ONE_CALL = 0.009  # 20 input at $100/M, 100 cache reads at $10/M, 30 output at $200/M


@pytest.fixture
def api() -> Iterator[standin.StandIn]:
    for model in (MODEL, CLAUDE):
        register_pricing(model, ModelPricing(100.0, 200.0, cache_read_per_million=10.0))
    with standin.serve() as server:
        yield server


def test_sync_streaming_raw_response_is_booked_from_its_events(api: standin.StandIn) -> None:
    client = openai.OpenAI(base_url=api.url + "/v1", api_key="k", max_retries=0)
    raw_stream = client.responses.with_streaming_response.create(
        model=MODEL, input="hi", stream=True
    )
    with agent_session("raw", max_iterations=3) as session, raw_stream as raw:
        events = [event.type for event in raw.parse()]
    assert events[-1] == "response.completed"
    assert session.tracker.turn_count == 1
    assert session.tracker.total_cost() == pytest.approx(ONE_CALL, rel=1e-12)


def test_async_streaming_raw_response_is_booked_from_its_events(api: standin.StandIn) -> None:
    async def run() -> float:
        client = openai.AsyncOpenAI(base_url=api.url + "/v1", api_key="k", max_retries=0)
        raw_stream = client.responses.with_streaming_response.create(
            model=MODEL, input="hi", stream=True
        )
        async with agent_session("raw", max_iterations=3) as session, raw_stream as raw:
            stream = await raw.parse()
            assert await raw.parse() is stream  # parsed once, wrapped once
            async for _ in stream:
                pass
        assert session.tracker.turn_count == 1
        return session.tracker.total_cost()

    assert asyncio.run(run()) == pytest.approx(ONE_CALL, rel=1e-12)


ASK = [{"role": "user", "content": "hi"}]
#: Each kind of request: its provider, its endpoint and its arguments. An output cap
#: keeps its upper bound (what an unread body is booked at) below the budgets here.
REQUESTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "chat": ("openai", "chat", {"model": MODEL, "messages": ASK, "max_tokens": 100}),
    "chat stream": (
        "openai",
        "chat",
        {
            "model": MODEL,
            "messages": ASK,
            "max_tokens": 100,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ),
    "responses": ("openai", "responses", {"model": MODEL, "input": "hi", "max_output_tokens": 100}),
    "messages": ("anthropic", "messages", {"model": CLAUDE, "messages": ASK, "max_tokens": 100}),
    "messages stream": (
        "anthropic",
        "messages",
        {"model": CLAUDE, "messages": ASK, "max_tokens": 100, "stream": True},
    ),
}
#: Every way the SDKs offer to read a raw response's body (json(): a JSON body's).
READS = ("parse", "read", "text", "json", "iter_bytes", "iter_text", "iter_lines")
READINGS = [
    (request, how)
    for request in REQUESTS
    for how in READS
    if not (how == "json" and REQUESTS[request][2].get("stream"))
]


def _endpoint(api: standin.StandIn, request: str, sync: bool = True, **client: Any) -> Any:
    provider, endpoint, _ = REQUESTS[request]
    if provider == "anthropic":
        kind: Any = anthropic.Anthropic if sync else anthropic.AsyncAnthropic
        return kind(base_url=api.url, api_key="k", max_retries=0, **client).messages
    kind = openai.OpenAI if sync else openai.AsyncOpenAI
    made = kind(base_url=api.url + "/v1", api_key="k", max_retries=0, **client)
    return made.chat.completions if endpoint == "chat" else made.responses


def _read(raw: Any, how: str) -> None:
    if how == "parse":
        parsed = raw.parse()
        if isinstance(parsed, openai.Stream | anthropic.Stream):
            for _ in parsed:
                pass
    elif how in ("read", "text", "json"):
        getattr(raw, how)()
    else:
        for _ in getattr(raw, how)():
            pass


async def _aread(raw: Any, how: str) -> None:
    if how == "parse":
        parsed = await raw.parse()
        if isinstance(parsed, openai.AsyncStream | anthropic.AsyncStream):
            async for _ in parsed:
                pass
    elif how in ("read", "text", "json"):
        await getattr(raw, how)()
    else:
        async for _ in getattr(raw, how)():
            pass


def _upper_bound(request: str) -> float:
    provider, _, body = REQUESTS[request]
    bound = request_estimate_usd(body["model"], body, provider)
    assert bound is not None and bound > ONE_CALL
    return bound


@pytest.mark.parametrize(("request_kind", "how"), READINGS)
def test_a_streaming_response_is_booked_at_the_usage_its_body_carries(
    api: standin.StandIn, request_kind: str, how: str
) -> None:
    # Before: booked at its prompt alone when not parsed as a stream ($0.00004 here),
    # or only when collected (read as bytes).
    gc.disable()  # booked when read, not when the garbage collector comes by
    try:
        create = _endpoint(api, request_kind).with_streaming_response.create
        with agent_session("raw", budget_usd=1.0, enforce_budget=True) as session:
            with create(**REQUESTS[request_kind][2]) as raw:
                _read(raw, how)
                assert session.tracker.turn_count == 1
            assert session._ledger.reserved_nano == 0
    finally:
        gc.enable()
    assert session.tracker.total_cost() == pytest.approx(ONE_CALL, rel=1e-12)
    assert session._ledger.calls_estimated == 0


#: (request, read) for the async test: a stream's body is not JSON, so not read by json().
ASYNC_READINGS = [
    (kind, how)
    for kind in REQUESTS
    for how in ("parse", "read", "json", "iter_lines")
    if not (how == "json" and REQUESTS[kind][2].get("stream"))
]


@pytest.mark.parametrize(("request_kind", "how"), ASYNC_READINGS)
def test_an_async_streaming_response_is_booked_at_the_usage_its_body_carries(
    api: standin.StandIn, request_kind: str, how: str
) -> None:
    async def run() -> tuple[float, int]:
        create = _endpoint(api, request_kind, sync=False).with_streaming_response.create
        async with agent_session("raw", budget_usd=1.0, enforce_budget=True) as session:
            async with create(**REQUESTS[request_kind][2]) as raw:
                await _aread(raw, how)
                assert session.tracker.turn_count == 1
            assert session._ledger.reserved_nano == 0
        return session.tracker.total_cost(), session._ledger.calls_estimated

    gc.disable()
    try:
        assert asyncio.run(run()) == (pytest.approx(ONE_CALL, rel=1e-12), 0)
    finally:
        gc.enable()


@pytest.mark.parametrize("partly", [False, True], ids=["unread", "read partly"])
@pytest.mark.parametrize("request_kind", ["chat", "chat stream", "messages", "messages stream"])
def test_a_streaming_response_closed_before_its_end_is_booked_at_its_upper_bound(
    api: standin.StandIn, request_kind: str, partly: bool
) -> None:
    # Before: booked at its prompt alone (or, streamed, $0 until collected, its
    # reservation held meanwhile), warned about as "returned no token usage".
    said = "after only part of it was read" if partly else "before any of it was read"
    create = _endpoint(api, request_kind).with_streaming_response.create
    gc.disable()
    try:
        with (
            pytest.warns(RuntimeWarning, match=said) as warned,
            agent_session("raw", budget_usd=1.0, enforce_budget=True) as session,
        ):
            with create(**REQUESTS[request_kind][2]) as raw:
                chunks = raw.iter_bytes(8)
                if partly:
                    next(chunks)
            assert session.tracker.turn_count == 1  # at the context manager's exit
            assert session._ledger.reserved_nano == 0
    finally:
        gc.enable()
    assert session.tracker.total_cost() == pytest.approx(_upper_bound(request_kind), rel=1e-12)
    assert session._ledger.calls_estimated == 1
    assert "returned no token usage" not in str(warned[0].message)


@pytest.mark.parametrize("partly", [False, True], ids=["unread", "read partly"])
@pytest.mark.parametrize("request_kind", ["chat", "messages stream"])
def test_an_async_streaming_response_closed_before_its_end_is_booked_at_its_upper_bound(
    api: standin.StandIn, request_kind: str, partly: bool
) -> None:
    async def run() -> tuple[float, int]:
        create = _endpoint(api, request_kind, sync=False).with_streaming_response.create
        async with agent_session("raw", budget_usd=1.0, enforce_budget=True) as session:
            async with create(**REQUESTS[request_kind][2]) as raw:
                chunks = raw.iter_bytes(8)
                if partly:
                    await chunks.__anext__()
            assert session._ledger.reserved_nano == 0
            return session.tracker.total_cost(), session.tracker.turn_count

    said = "after only part of it was read" if partly else "before any of it was read"
    gc.disable()
    try:
        with pytest.warns(RuntimeWarning, match=said):
            cost, turns = asyncio.run(run())
    finally:
        gc.enable()
    assert (cost, turns) == (pytest.approx(_upper_bound(request_kind), rel=1e-12), 1)


BUDGET = 0.05  # five and a half calls at ONE_CALL


def _capped_loop(endpoint: Any, request_kind: str, how: str) -> tuple[float, str]:
    with agent_session("raw", budget_usd=BUDGET, enforce_budget=True) as session:
        try:
            for _ in range(20):
                with endpoint.with_streaming_response.create(**REQUESTS[request_kind][2]) as raw:
                    _read(raw, how)
        except BudgetExceededError as stop:
            return session.tracker.total_cost(), type(stop).__name__
    return session.tracker.total_cost(), ""


@pytest.mark.parametrize("how", ["parse", "iter_lines"])
@pytest.mark.parametrize("request_kind", ["chat", "chat stream", "messages", "messages stream"])
def test_an_enforced_budget_holds_for_streaming_responses(
    api: standin.StandIn, request_kind: str, how: str
) -> None:
    # Before: all 20 were sent (3.6x the budget), booked at their prompts alone.
    booked, stopped = _capped_loop(_endpoint(api, request_kind), request_kind, how)
    sent = len(api.hits)
    assert stopped == "BudgetExceededError"
    assert sent <= int(BUDGET / ONE_CALL) + 1  # the budget, and at most one call more
    assert booked == pytest.approx(sent * ONE_CALL, rel=1e-12)


@pytest.mark.parametrize("how", ["parse", "iter_lines"])
@pytest.mark.parametrize("request_kind", ["messages", "messages stream"])
def test_a_streaming_response_the_anthropic_sdks_span_describes_is_booked_by_the_guard(
    api: standin.StandIn, request_kind: str, how: str
) -> None:
    # configure() makes the SDK trace its calls; its span of a raw response ends with no
    # usage (the body is read after the client returned). Before: booked at $0, then
    # every call of its model refused ("nothing could estimate its cost"): 1 sent; or,
    # streamed, 20 sent at their prompts alone.
    provider = TracerProvider()
    handle = configure(tracer_provider=provider, set_global=False, spans_file=False)
    try:
        traced = {"open_telemetry": {"tracer_provider": provider}}
        endpoint = _endpoint(api, request_kind, **traced)
        booked, stopped = _capped_loop(endpoint, request_kind, how)
    finally:
        handle.shutdown()
        guard.uninstall_guard()
    sent = len(api.hits)
    assert stopped == "BudgetExceededError"
    assert int(BUDGET / ONE_CALL) <= sent <= int(BUDGET / ONE_CALL) + 1
    assert booked == pytest.approx(sent * ONE_CALL, rel=1e-12)
