"""A local stand-in for Anthropic's Messages API, for tests that drive the real client.

``POST /v1/messages`` answers with ``api.message`` (its ``model`` set to the
model the request named), or, when the request asks for ``stream``, with
``api.stream`` as server-sent events (``event: <type>`` + ``data: <json>``),
the framing the ``anthropic`` client parses. Every request body is kept, so a
test can also check that a refused call never reached the API.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def message(
    text: str,
    *,
    input_tokens: int,
    output_tokens: int,
    cache_creation_input_tokens: int = 0,
    cache_read_input_tokens: int = 0,
    model: str = "",
) -> dict[str, Any]:
    """A Messages API response body with the usage block the API reports."""
    return {
        "id": "msg_01StandIn0000000000000000",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": cache_creation_input_tokens,
            "cache_read_input_tokens": cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": cache_creation_input_tokens,
                "ephemeral_1h_input_tokens": 0,
            },
            "output_tokens": output_tokens,
            "service_tier": "standard",
        },
    }


@dataclass
class FakeAnthropic:
    """What the server answers, and what it was asked."""

    message: dict[str, Any]
    stream: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    #: Seconds the server takes to answer (a model generating), after reading the request.
    delay: float = 0.0
    #: Per request, in order, before ``delay`` applies (a slow first attempt, say).
    delays: list[float] = field(default_factory=list)


def _handler(api: FakeAnthropic) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/v1/messages":
                self.send_error(404, f"no route {self.path}")
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            api.requests.append(body)
            delay = api.delays.pop(0) if api.delays else api.delay
            if delay:
                time.sleep(delay)
            if body.get("stream"):
                self._send_stream()
                return
            answer = copy.deepcopy(api.message)
            answer["model"] = body.get("model", answer.get("model", ""))
            data = json.dumps(answer).encode()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client hung up (a test cancelled its call)

        def _send_stream(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            try:
                for event in api.stream:
                    frame = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
                    self.wfile.write(frame.encode())
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading early

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler


@contextmanager
def serve(api: FakeAnthropic) -> Iterator[FakeAnthropic]:
    """Run ``api`` on 127.0.0.1 (a free port); ``api.url`` is the client's ``base_url``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
