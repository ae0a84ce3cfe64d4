"""A failed call frees its fleet reservation at once, even while its exception is kept.

Real redis-server, the real ``openai`` clients (sync and async) behind the
client guard, and a local server that answers every request with HTTP 500.
The reservation used to be freed only when the SDK's request object was
garbage-collected; an exception the application keeps (a retry loop's
``last_error``, a log record) holds that object, so the fleet budget stayed
reserved for calls that cost nothing, refused the next good call, and was
booked as spend when the process exited.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import pytest

from techrevati.runtime import FleetLimits, ModelPricing, agent_session, register_pricing

from .redis_server import RedisServer

MODEL = "gpt-failing"


@pytest.fixture
def failing() -> Iterator[str]:
    register_pricing(MODEL, ModelPricing(3.0, 15.0))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            data = json.dumps({"error": {"message": "boom"}}).encode()
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_failed_calls_fleet_hold_is_freed_while_its_exception_is_kept(
    redis_server: RedisServer, failing: str, kind: str
) -> None:
    fleet = FleetLimits(redis_server.url, scope=f"failing-{kind}", budget_usd=1.0)
    kept: list[BaseException] = []
    ask: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 1000,
    }

    async def run_async() -> None:
        client = openai.AsyncOpenAI(base_url=failing, api_key="k", max_retries=0)
        for _ in range(2):
            try:
                await client.chat.completions.create(**ask)
            except openai.InternalServerError as error:
                kept.append(error)

    with agent_session("w", fleet=fleet):
        if kind == "async":
            asyncio.run(run_async())
        else:
            client = openai.OpenAI(base_url=failing, api_key="k", max_retries=0)
            for _ in range(2):
                try:
                    client.chat.completions.create(**ask)
                except openai.InternalServerError as error:
                    kept.append(error)
        assert fleet.flush(5.0)
        usage = fleet.usage()
    assert len(kept) == 2
    assert (usage.calls, usage.in_flight, usage.reserved_usd, usage.spent_usd) == (2, 0, 0.0, 0.0)
