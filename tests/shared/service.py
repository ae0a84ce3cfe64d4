"""A research service: a real ASGI app behind OpenTelemetry's server instrumentation.

Started by the tests under uvicorn on 127.0.0.1. Each POST /research opens a
session of its own (or makes bare calls) under whatever context the request's
``traceparent`` and ``baggage`` headers carried, and answers what ran.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

from . import children

children.set_up(os.environ["TECHREVATI_TEST_REDIS_URL"])


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    query = dict(
        part.split("=", 1) for part in scope.get("query_string", b"").decode().split("&") if part
    )
    attempts = int(query.get("attempts", "1"))
    own_session = query.get("session", "1") == "1"
    # The model calls are synchronous here; a thread keeps the loop free and
    # carries the request's context (to_thread copies it).
    outcome = await asyncio.to_thread(children.calls, attempts, own_session=own_session)
    body = json.dumps(outcome).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


app = OpenTelemetryMiddleware(_app)
