"""A heartbeat on the running event loop: how long the loop went without running it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator


@contextlib.asynccontextmanager
async def heartbeat(period: float) -> AsyncIterator[list[float]]:
    """Tick every ``period`` s while the block runs; yields the gaps between ticks (s).

    A gap much longer than ``period`` is time the loop was blocked by someone.
    The list is filled while the block runs and complete when it exits.
    """
    gaps: list[float] = []
    stop = asyncio.Event()

    async def beat() -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(period)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(beat())
    try:
        yield gaps
    finally:
        stop.set()
        await task
