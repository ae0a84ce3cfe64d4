"""A web service streaming an agent's answer: Starlette's StreamingResponse under uvicorn.

Starlette iterates a sync generator with ``iterate_in_threadpool``: each
``next()`` runs on a worker thread in a fresh copy of the request's context.
A ``with agent_session(...)`` block inside the generator is current only in
the copy its first ``next()`` ran in; after the first ``yield`` its calls
found no session and escaped its limits, silently (a cap of 3: 6 requests at
the model server; 50 concurrent requests: 300 against 150). The generator's
frame, on the worker's stack, still says which session it is in.

Real parts: uvicorn on 127.0.0.1, Starlette, the ``openai`` client, the
stand-in model server (``fake_openai``).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import httpx
import openai
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from fake_openai import FakeOpenAI, chat_completion, serve
from otel_harness import Otel
from techrevati.runtime import BudgetExceededError, MaxIterationsExceededError
from techrevati.runtime.decorators import agent_session

CALLS = 6
CAP = 3
RESPONSE = chat_completion()


def _app(api: FakeOpenAI, otel: Otel, ran: dict[str, list[int]]) -> Starlette:
    client = openai.OpenAI(base_url=f"{api.url}/v1", api_key="k", max_retries=0)

    def answer(request: Request) -> StreamingResponse:
        name = request.query_params["name"]
        ran[name] = []

        def lines() -> Iterator[str]:
            try:
                with agent_session(name, max_iterations=CAP, **otel.kwargs()):
                    for step in range(CALLS):
                        client.chat.completions.create(
                            model="gpt-4o-mini", messages=[{"role": "user", "content": "go"}]
                        )
                        ran[name].append(step)
                        yield f"step {step}\n"
            except (MaxIterationsExceededError, BudgetExceededError) as stop:
                yield f"refused: {type(stop).__name__}\n"

        return StreamingResponse(lines(), media_type="text/plain")

    return Starlette(routes=[Route("/answer", answer)])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def service(
    otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, FakeOpenAI, dict[str, list[int]]]]:
    ran: dict[str, list[int]] = {}
    # 50 requests connect to the model server at once: more than its default backlog of 5.
    monkeypatch.setattr(ThreadingHTTPServer, "request_queue_size", 128)
    with serve(FakeOpenAI(RESPONSE)) as api:
        port = _free_port()
        server = uvicorn.Server(
            uvicorn.Config(_app(api, otel, ran), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                pytest.fail("uvicorn did not start")
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}", api, ran
        finally:
            server.should_exit = True
            thread.join(timeout=30)


def test_a_streamed_answers_session_holds_past_its_first_yield(
    service: tuple[str, FakeOpenAI, dict[str, list[int]]],
) -> None:
    base, api, ran = service
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reply = httpx.get(f"{base}/answer", params={"name": "one"}, timeout=30)
    assert reply.text.splitlines() == [
        "step 0",
        "step 1",
        "step 2",
        "refused: MaxIterationsExceededError",
    ]
    assert len(api.requests) == CAP  # the 4th request never left the client
    assert ran["one"] == [0, 1, 2]
    assert [str(w.message) for w in caught if "outside any session" in str(w.message)] == []


def test_fifty_concurrent_streamed_answers_each_hold_their_own_cap(
    service: tuple[str, FakeOpenAI, dict[str, list[int]]],
) -> None:
    base, api, ran = service

    async def fetch_all() -> list[str]:
        async with httpx.AsyncClient(timeout=60) as client:

            async def one(serial: int) -> str:
                reply = await client.get(f"{base}/answer", params={"name": f"r{serial}"})
                return reply.text

            return await asyncio.gather(*(one(serial) for serial in range(50)))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        texts = asyncio.run(fetch_all())
    assert len(api.requests) == 50 * CAP  # 300 before: every call after a yield escaped
    assert all(text.endswith("refused: MaxIterationsExceededError\n") for text in texts)
    assert all(steps == [0, 1, 2] for steps in ran.values())
