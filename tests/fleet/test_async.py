"""Fleet limits in async code: no Redis round trip or probe wait ever blocks the event loop."""

from __future__ import annotations

import asyncio
import time

from techrevati.runtime import (
    FleetLimits,
    ModelPricing,
    UsageSnapshot,
    agent_session,
    agent_turn,
    register_pricing,
)

from .heartbeat import heartbeat
from .redis_server import RedisServer


def test_an_async_probe_wait_ends_when_the_probe_settles(redis_server: RedisServer) -> None:
    # Once: the waiter slept on the loop thread, the probe (a task on that loop)
    # could not finish, and the waiter was freed only by the lease (60 s here).
    register_pricing("async-new", ModelPricing(1_000_000.0, 0.0))
    fleet = FleetLimits(redis_server.url, scope="aprobe", budget_usd=100.0, lease_s=60)
    order: list[str] = []

    @agent_turn(model="async-new")
    async def call(name: str, seconds: float) -> dict[str, object]:
        order.append(f"start {name}")
        await asyncio.sleep(seconds)
        order.append(f"end {name}")
        return {"model": "async-new", "usage": {"prompt_tokens": 2, "completion_tokens": 0}}

    async def main() -> float:
        async with agent_session("w", fleet=fleet):
            started = time.monotonic()
            probe = asyncio.create_task(call("probe", 0.3))
            await asyncio.sleep(0.05)  # the probe is admitted first
            await asyncio.gather(call("second", 0.0), probe)
            return time.monotonic() - started

    elapsed = asyncio.run(main())
    # The second call waited for the probe, then ran: it did not run beside it.
    assert order == ["start probe", "end probe", "start second", "end second"]
    assert elapsed < 30, elapsed  # far below the 60 s lease that once freed it
    assert fleet.learned_cost("async-new") == 2.0
    usage = fleet.usage()
    assert (usage.calls, usage.spent_usd, usage.in_flight) == (2, 4.0, 0)


def test_a_frozen_redis_never_stalls_a_heartbeat_beyond_one_timeout(
    redis_server: RedisServer,
) -> None:
    register_pricing("beat", ModelPricing(1_000_000.0, 0.0))
    timeout_s = 0.6
    fleet = FleetLimits(
        redis_server.url,
        scope="beat",
        budget_usd=1_000.0,
        on_store_error="allow",
        timeout_s=timeout_s,
    )
    fleet.settle(fleet.reserve("beat", 1.0), 1.0)  # learned: no probe waits below
    turns = 24  # run one after another on the loop, these would stall it 24 x timeout_s

    @agent_turn(model="beat", usage=UsageSnapshot(1, 0))
    async def call() -> str:
        await asyncio.sleep(0)
        return "ok"

    async def main() -> tuple[float, int]:
        async with heartbeat(0.02) as gaps:
            await asyncio.sleep(0.1)
            redis_server.pause()
            try:
                async with agent_session("w", fleet=fleet):
                    results = await asyncio.gather(*(call() for _ in range(turns)))
            finally:
                redis_server.resume()
        return max(gaps), len(results)

    worst, ran = asyncio.run(main())
    assert ran == turns  # on_store_error="allow": they ran on local limits
    assert worst < timeout_s, f"the loop stalled {worst:.3f} s with Redis frozen"
    print(f"heartbeat: worst gap {worst * 1000:.0f} ms with Redis frozen, {turns} turns")


def test_async_settlements_reach_redis_from_the_background(redis_server: RedisServer) -> None:
    register_pricing("bg", ModelPricing(1_000_000.0, 0.0))
    fleet = FleetLimits(redis_server.url, scope="bg", budget_usd=1_000.0)
    fleet.settle(fleet.reserve("bg", 1.0), 1.0)

    @agent_turn(model="bg", usage=UsageSnapshot(1, 0))
    async def call() -> str:
        return "ok"

    async def main() -> None:
        async with agent_session("w", fleet=fleet):
            await asyncio.gather(*(call() for _ in range(10)))

    asyncio.run(main())
    assert fleet.flush(5.0)
    usage = fleet.usage()
    assert (usage.calls, usage.spent_usd, usage.in_flight) == (11, 11.0, 0)


def test_async_generator_turns_wait_for_the_probe_without_blocking_the_loop(
    redis_server: RedisServer,
) -> None:
    register_pricing("agen-new", ModelPricing(1_000_000.0, 0.0))
    fleet = FleetLimits(redis_server.url, scope="agen", budget_usd=100.0, lease_s=60)
    order: list[str] = []

    @agent_turn(model="agen-new", usage=None)
    async def stream(name: str, seconds: float):  # type: ignore[no-untyped-def]
        order.append(f"start {name}")
        await asyncio.sleep(seconds)
        yield {"model": "agen-new", "usage": {"prompt_tokens": 3, "completion_tokens": 0}}
        order.append(f"end {name}")

    async def drain(name: str, seconds: float) -> None:
        async for _ in stream(name, seconds):
            pass

    async def main() -> None:
        async with agent_session("w", fleet=fleet):
            probe = asyncio.create_task(drain("probe", 0.3))
            await asyncio.sleep(0.05)
            await asyncio.gather(drain("second", 0.0), probe)

    asyncio.run(main())
    assert order == ["start probe", "end probe", "start second", "end second"]
    assert fleet.flush(5.0)
    usage = fleet.usage()
    assert (usage.calls, usage.spent_usd, usage.in_flight) == (2, 6.0, 0)
