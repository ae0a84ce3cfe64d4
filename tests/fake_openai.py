"""A local stand-in for the OpenAI HTTP API, for tests that drive the real client.

It answers ``POST .../chat/completions`` with a fixed completion, or with a
server-sent-event stream when the request asks for ``stream``, and keeps every
request body it received (a refused call must never reach it).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class FakeOpenAI:
    """What the server answers, and what it was asked."""

    completion: dict[str, Any]
    stream: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    #: Seconds the server takes to answer (a model generating), after reading the request.
    delay: float = 0.0
    #: Per request, in order, before ``delay`` applies (a slow first attempt, say).
    delays: list[float] = field(default_factory=list)
    #: Per request, in order: an error status to answer instead of the completion.
    statuses: list[int] = field(default_factory=list)
    #: Answer as many output tokens as the request's ``max_tokens`` (when it has one):
    #: a call costs what its request allows.
    output_is_max_tokens: bool = False


def chat_completion(
    model: str = "gpt-4o-mini", prompt_tokens: int = 120, completion_tokens: int = 30
) -> dict[str, Any]:
    """A plain chat completion answering "ok", with its usage (``FakeOpenAI.completion``)."""
    return {
        "id": "c1",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _handler(api: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            api.requests.append(body)
            # Both taken per request in arrival order (a stalled request's status is
            # not taken by the retry that overtakes it).
            delay = api.delays.pop(0) if api.delays else api.delay
            status = api.statuses.pop(0) if api.statuses else 200
            if delay:
                time.sleep(delay)
            if status != 200:
                # (The client may have timed out and hung up.)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_error(status)
                return
            if body.get("stream"):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                try:
                    for chunk in api.stream:
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                        self.wfile.flush()
                    self.wfile.write(b"data: [DONE]\n\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client closed the stream early, as some tests do
                return
            completion = api.completion
            if api.output_is_max_tokens and isinstance(body.get("max_tokens"), int):
                usage = {**completion["usage"], "completion_tokens": body["max_tokens"]}
                completion = {**completion, "usage": usage}
            data = json.dumps(completion).encode()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client hung up (a test cancelled its call)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler


@contextmanager
def serve(api: FakeOpenAI) -> Iterator[FakeOpenAI]:
    """Run ``api`` on 127.0.0.1 (a free port); ``api.url`` is the client's base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    api.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def instrumented_openai() -> Iterator[tuple[Any, Any]]:
    """The real OpenAI instrumentation on a fresh SDK provider; its spans kept in memory.

    Yields ``(provider, exporter)``; the instrumentation is removed afterwards.
    """
    from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield provider, exporter
    finally:
        instrumentor.uninstrument()
