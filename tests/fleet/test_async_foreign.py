"""Another instrumentation's model calls in async code: fleet limits never block the loop.

Real parts throughout: a real redis-server frozen with SIGSTOP, the official
OpenTelemetry instrumentation (``opentelemetry-instrumentation-genai-openai``)
around the real ``AsyncOpenAI`` client, the real OTel SDK, and the local
stand-in HTTP server the interop tests use. The instrumentation's span starts
on the event loop; our processor must admit it without a Redis round trip
there, and the guard awaits the fleet reservation off the loop before the
request is sent.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor
from opentelemetry.sdk.trace import TracerProvider

from techrevati.runtime import (
    FleetLimits,
    FleetUnavailableError,
    MaxIterationsExceededError,
    ModelPricing,
    agent_session,
    configure,
    register_pricing,
)
from techrevati.runtime.telemetry.limits import guard

from .heartbeat import heartbeat
from .redis_server import RedisServer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "interop"))

import standin

MODEL = "gpt-async-foreign"
# 20 uncached input at $100/M, 100 cache reads at $10/M, 30 output at $200/M (the stand-in's usage).
ONE_CALL = 0.009
CONCURRENT = 12
# Large enough that the CPU work of 12 calls resuming in one loop iteration on a
# loaded machine (tens to hundreds of ms) is far below it, while one blocking round
# trip per call on the loop (what this guards against) stalls it 12 x TIMEOUT_S.
TIMEOUT_S = 1.0


@pytest.fixture
def api() -> Iterator[standin.StandIn]:
    register_pricing(MODEL, ModelPricing(100.0, 200.0, cache_read_per_million=10.0))
    with standin.serve() as server:
        yield server


@pytest.fixture
def instrumented() -> Iterator[TracerProvider]:
    """Our limits on an SDK provider, and the official openai instrumentation on it."""
    provider = TracerProvider()
    handle = configure(tracer_provider=provider, set_global=False, spans_file=False)
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield provider
    finally:
        instrumentor.uninstrument()
        handle.shutdown()
        guard.uninstall_guard()


def _client(api: standin.StandIn) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=api.url + "/v1", api_key="k", max_retries=0)


Client = openai.AsyncOpenAI | anthropic.AsyncAnthropic


async def _one(client: Client) -> str:
    try:
        if isinstance(client, anthropic.AsyncAnthropic):
            await client.messages.create(
                model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            )
        else:
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}]
            )
    except (FleetUnavailableError, MaxIterationsExceededError) as refused:
        return type(refused).__name__
    return "ok"


async def _with_heartbeat(
    redis_server: RedisServer, fleet: FleetLimits, client: Client
) -> tuple[float, list[str]]:
    """Run the concurrent calls with Redis frozen; return the worst heartbeat gap.

    The client is closed on its own loop: one dropped unclosed is closed by the
    next test's loop, which logs an error with a traceback (~0.5 s under load).
    """
    async with client:
        return await _frozen_calls(redis_server, fleet, client)


async def _frozen_calls(
    redis_server: RedisServer, fleet: FleetLimits, client: Client
) -> tuple[float, list[str]]:
    async with agent_session("warm", fleet=fleet):
        # Warm: the client's first call imports and builds its models (~0.1-0.2 s
        # on a busy machine); the gaps below are about Redis, not imports.
        assert await _one(client) == "ok"
    async with heartbeat(0.01) as gaps:
        await asyncio.sleep(0.05)
        redis_server.pause()
        try:
            async with agent_session("w", fleet=fleet):
                results = await asyncio.gather(*(_one(client) for _ in range(CONCURRENT)))
        finally:
            redis_server.resume()
    return max(gaps), list(results)


@pytest.mark.parametrize(
    ("policy", "outcome", "sent"),
    [("refuse", "FleetUnavailableError", 0), ("allow", "ok", CONCURRENT)],
)
def test_frozen_redis_never_stalls_the_loop_for_instrumented_async_calls(
    redis_server: RedisServer,
    api: standin.StandIn,
    instrumented: TracerProvider,
    policy: str,
    outcome: str,
    sent: int,
) -> None:
    # Once each instrumented call's fleet admission was a blocking round trip on
    # the loop: 12 calls stalled it 12 x timeout_s (12 s here).
    timeout_s = TIMEOUT_S
    fleet = FleetLimits(
        redis_server.url,
        scope=f"foreign-{policy}",
        budget_usd=1_000.0,
        max_calls=1_000,
        on_store_error=policy,  # type: ignore[arg-type]
        timeout_s=timeout_s,
    )
    worst, results = asyncio.run(_with_heartbeat(redis_server, fleet, _client(api)))
    print(f"{policy}: worst heartbeat gap {worst * 1000:.0f} ms, {CONCURRENT} calls, Redis frozen")
    assert worst < timeout_s, f"the loop stalled {worst:.3f} s with Redis frozen"
    # refuse: each call refused before anything was sent; allow: each ran on local limits.
    assert results == [outcome] * CONCURRENT
    assert api.count("/chat/completions") == 1 + sent  # the warm-up call, then these
    assert fleet.flush(5.0)
    usage = fleet.usage()
    # Only the warm-up call reached the fleet; none of the frozen-time ones is left reserved.
    assert (usage.calls, usage.in_flight) == (1, 0)
    assert usage.spent_usd == pytest.approx(ONE_CALL, rel=1e-9)


def test_the_fleet_cap_holds_exactly_for_concurrent_instrumented_async_calls(
    redis_server: RedisServer, api: standin.StandIn, instrumented: TracerProvider
) -> None:
    fleet = FleetLimits(redis_server.url, scope="foreign-cap", max_calls=5, budget_usd=1_000.0)

    async def main() -> list[str]:
        async with _client(api) as client, agent_session("w", fleet=fleet) as session:
            results = await asyncio.gather(*(_one(client) for _ in range(CONCURRENT)))
        assert session.tracker.turn_count == 5
        return list(results)

    results = asyncio.run(main())
    assert sorted(results) == ["MaxIterationsExceededError"] * 7 + ["ok"] * 5
    assert api.count("/chat/completions") == 5  # a refused call sent nothing
    assert fleet.flush(5.0)
    usage = fleet.usage()
    assert (usage.calls, usage.in_flight) == (5, 0)
    assert usage.spent_usd == pytest.approx(5 * ONE_CALL, rel=1e-9)


def test_the_anthropic_sdks_own_spans_never_stall_the_loop_and_keep_the_cap(
    redis_server: RedisServer, api: standin.StandIn
) -> None:
    # The SDK starts its span inside the client's request method: the guard
    # awaits the fleet in the per-attempt ``_attempt_request``, after that span.
    provider = TracerProvider()
    handle = configure(tracer_provider=provider, set_global=False, spans_file=False)

    def client() -> anthropic.AsyncAnthropic:  # one per event loop: its pool is bound to it
        return anthropic.AsyncAnthropic(
            base_url=api.url,
            api_key="k",
            max_retries=0,
            open_telemetry={"tracer_provider": provider},
        )

    try:
        timeout_s = TIMEOUT_S
        frozen = FleetLimits(redis_server.url, scope="anthropic-frozen", timeout_s=timeout_s)
        worst, results = asyncio.run(_with_heartbeat(redis_server, frozen, client()))
        print(f"anthropic: worst heartbeat gap {worst * 1000:.0f} ms, Redis frozen")
        assert worst < timeout_s, f"the loop stalled {worst:.3f} s with Redis frozen"
        assert results == ["FleetUnavailableError"] * CONCURRENT
        assert api.count("/messages") == 1  # the warm-up call only

        capped = FleetLimits(redis_server.url, scope="anthropic-cap", max_calls=5)

        async def main() -> list[str]:
            async with client() as fresh, agent_session("w", fleet=capped):
                return list(await asyncio.gather(*(_one(fresh) for _ in range(CONCURRENT))))

        assert sorted(asyncio.run(main())) == ["MaxIterationsExceededError"] * 7 + ["ok"] * 5
        assert api.count("/messages") == 1 + 5
        assert capped.flush(5.0)
        assert capped.usage().calls == 5
    finally:
        handle.shutdown()
        guard.uninstall_guard()


def test_a_sync_client_called_in_a_coroutine_is_still_refused_before_sending(
    redis_server: RedisServer, api: standin.StandIn, instrumented: TracerProvider
) -> None:
    # The instrumentation's span starts on the loop (its fleet reservation is
    # deferred), but a sync client never reaches an awaiting door: the guard asks
    # the fleet at the request's build, still before anything is sent.
    fleet = FleetLimits(redis_server.url, scope="foreign-sync", max_calls=1)
    client = openai.OpenAI(base_url=api.url + "/v1", api_key="k", max_retries=0)

    def one() -> str:
        try:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
        except MaxIterationsExceededError as refused:
            assert refused.scope == "foreign-sync"
            return "refused"
        return "ok"

    async def main() -> list[str]:
        async with agent_session("w", fleet=fleet):
            return [one(), one()]

    assert asyncio.run(main()) == ["ok", "refused"]
    assert api.count("/chat/completions") == 1
    assert fleet.flush(5.0)
    assert fleet.usage().calls == 1


def test_a_span_no_guarded_request_follows_is_counted_by_the_fleet_after_it_ends(
    redis_server: RedisServer, instrumented: TracerProvider
) -> None:
    # A model span that names openai but whose request goes through no guarded
    # client (an HTTP call of its own): nothing awaited its fleet reservation, so
    # the fleet counts it when it ends (too late to refuse, never on the loop).
    fleet = FleetLimits(redis_server.url, scope="foreign-unasked", max_calls=10)
    tracer = instrumented.get_tracer("some.other.instrumentation")
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": MODEL,
    }

    async def main() -> None:
        async with agent_session("w", fleet=fleet) as session:
            with tracer.start_as_current_span(f"chat {MODEL}", attributes=attributes) as span:
                await asyncio.sleep(0)
                span.set_attribute("gen_ai.usage.input_tokens", 1000)
                span.set_attribute("gen_ai.usage.output_tokens", 0)
            assert session.tracker.turn_count == 1

    register_pricing(MODEL, ModelPricing(100.0, 200.0))
    asyncio.run(main())
    assert fleet.flush(5.0)  # waits for the late booking too, as exit and SIGTERM do
    usage = fleet.usage()
    assert (usage.calls, usage.in_flight) == (1, 0)
    assert usage.spent_usd == pytest.approx(0.1, rel=1e-9)  # 1000 input at $100/M


def test_a_bare_async_client_blocks_the_loop_at_most_once_per_interval(
    redis_server: RedisServer, api: standin.StandIn
) -> None:
    # No instrumentation: the guard itself is the door, and admits at the
    # request's build (sync). With Redis frozen one call per interval finds out,
    # the others fail fast under the policy: the loop waits one timeout_s, not 12.
    timeout_s = TIMEOUT_S
    fleet = FleetLimits(redis_server.url, scope="bare", max_calls=1_000, timeout_s=timeout_s)
    worst, results = asyncio.run(_with_heartbeat(redis_server, fleet, _client(api)))
    print(f"bare client: worst heartbeat gap {worst * 1000:.0f} ms, Redis frozen")
    assert results == ["FleetUnavailableError"] * CONCURRENT
    assert api.count("/chat/completions") == 1
    assert worst < timeout_s, f"the loop stalled {worst:.3f} s with Redis frozen"
    guard.uninstall_guard()


def test_the_fleet_cap_holds_exactly_for_a_bare_async_client(
    redis_server: RedisServer, api: standin.StandIn
) -> None:
    # The guard admits each request when it is built and awaits the fleet in the
    # client's _prepare_request: exact under concurrency, nothing sent when refused.
    fleet = FleetLimits(redis_server.url, scope="bare-cap", max_calls=5)

    async def main() -> list[str]:
        async with _client(api) as client, agent_session("w", fleet=fleet):
            return list(await asyncio.gather(*(_one(client) for _ in range(CONCURRENT))))

    try:
        assert sorted(asyncio.run(main())) == ["MaxIterationsExceededError"] * 7 + ["ok"] * 5
        # The _prepare_request the client class runs was wrapped at its first request...
        assert hasattr(openai.AsyncOpenAI._prepare_request, "__techrevati_guard__")
    finally:
        guard.uninstall_guard()
    # ...and uninstalling the guard restores it.
    assert not hasattr(openai.AsyncOpenAI._prepare_request, "__techrevati_guard__")
    assert api.count("/chat/completions") == 5
    assert fleet.flush(5.0)
    usage = fleet.usage()
    assert (usage.calls, usage.in_flight) == (5, 0)
    assert usage.spent_usd == pytest.approx(5 * ONE_CALL, rel=1e-9)
