"""A local stand-in for Anthropic's Messages API, for tests that drive the real client.

``POST /v1/messages`` answers with ``api.message`` (its ``model`` set to the
model the request named), or, when the request asks for ``stream``, with
``api.stream`` as server-sent events (``event: <type>`` + ``data: <json>``),
the framing the ``anthropic`` client parses. Every request body is kept, so a
test can also check that a refused call never reached the API.

It answers the same calls at the endpoints of the ``anthropic`` package's
Bedrock and Vertex clients too, the model named in the URL: Bedrock's
``/model/{id}/invoke`` and ``/model/{id}/invoke-with-response-stream`` (its
stream framed as AWS event-stream messages, each event base64 in a ``chunk``),
and Vertex's ``.../models/{model}:rawPredict`` and ``:streamRawPredict``
(server-sent events, as Anthropic's API), and Vertex's token counting
(``.../models/count-tokens:rawPredict``, answered with ``count_tokens``).
"""

from __future__ import annotations

import base64
import copy
import json
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote


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
    #: Every request's path, in order (token counting too).
    paths: list[str] = field(default_factory=list)
    #: Vertex's token counting's answer.
    count_tokens: int = 1234
    #: The model a response names; empty: the one asked for. (Bedrock and Vertex answer
    #: with the Anthropic id, ``claude-haiku-4-5-20251001``, of the model their URL names.)
    answer_model: str = ""


def _route(path: str) -> tuple[str, str | None, bool] | None:
    """(kind, the model the URL names or None, stream) of a path the stand-in answers.

    kind is ``anthropic``, ``bedrock``, ``vertex`` or ``count_tokens``.
    """
    path = path.split("?", 1)[0].rstrip("/")
    if path == "/v1/messages":
        return "anthropic", None, False
    if path.startswith("/model/"):
        for end, stream in (("/invoke", False), ("/invoke-with-response-stream", True)):
            if path.endswith(end):
                return "bedrock", unquote(path[len("/model/") : -len(end)]), stream
    for end, stream in ((":rawPredict", False), (":streamRawPredict", True)):
        if "/publishers/anthropic/models/" in path and path.endswith(end):
            model = unquote(path.rsplit("/", 1)[1][: -len(end)])
            return ("count_tokens" if model == "count-tokens" else "vertex"), model, stream
    return None


def _aws_header(name: str, value: str) -> bytes:
    # A string header (type 7): name length, name, type, value length, value.
    raw_name, raw_value = name.encode(), value.encode()
    return (
        struct.pack(">B", len(raw_name))
        + raw_name
        + struct.pack(">BH", 7, len(raw_value))
        + raw_value
    )


def aws_event_message(event: dict[str, Any]) -> bytes:
    """One Bedrock stream event as an AWS event-stream message (what botocore decodes)."""
    payload = json.dumps({"bytes": base64.b64encode(json.dumps(event).encode()).decode()}).encode()
    headers = (
        _aws_header(":event-type", "chunk")
        + _aws_header(":content-type", "application/json")
        + _aws_header(":message-type", "event")
    )
    prelude = struct.pack(">II", 12 + len(headers) + len(payload) + 4, len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    framed = prelude + headers + payload
    return framed + struct.pack(">I", zlib.crc32(framed))


def _handler(api: FakeAnthropic) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            route = _route(self.path)
            if route is None:
                self.send_error(404, f"no route {self.path}")
                return
            kind, model, stream = route
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            api.paths.append(self.path)
            if kind == "count_tokens":
                self._send_json({"input_tokens": api.count_tokens})
                return
            if model is not None:
                body["model"] = model  # the platforms' clients name it in the URL
            api.requests.append(body)
            delay = api.delays.pop(0) if api.delays else api.delay
            if delay:
                time.sleep(delay)
            if kind == "bedrock" and stream:
                self._send_aws_stream()
                return
            if body.get("stream"):
                self._send_stream()
                return
            answer = copy.deepcopy(api.message)
            answer["model"] = api.answer_model or body.get("model", answer.get("model", ""))
            self._send_json(answer)

        def _send_json(self, answer: dict[str, Any]) -> None:
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

        def _send_aws_stream(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.amazon.eventstream")
            self.end_headers()
            try:
                for event in api.stream:
                    self.wfile.write(aws_event_message(event))
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
