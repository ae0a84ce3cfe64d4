"""A local stand-in for the OpenAI and Anthropic HTTP APIs (standard library only).

The interop scenarios drive the real ``openai`` and ``anthropic`` clients
against it, in whatever virtual environment the instrumentation under test
needs, so it imports nothing outside the standard library. It answers

* ``POST .../chat/completions`` (JSON, or server-sent events when ``stream``),
* ``POST .../responses`` (JSON, or the Responses event stream),
* ``POST .../messages`` (the Anthropic Messages API, JSON or event stream),

always with the same usage: 120 input tokens of which 100 are cache reads, and
30 output tokens. Every request it receives is counted by path, so a test can
prove a refused call never left the client.

``serve(runaway=True)`` makes it the runaway loop the framework matrix needs:
every OpenAI answer (Chat Completions or Responses, plain or streamed) asks
for a call of the first tool the request offers (other than a framework's own
``final_answer``), and a request that offers no tools gets a code step that
never finishes (smolagents' CodeAgent). An agent framework then loops until
something stops it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

INPUT_TOKENS = 120  # everything sent, cache reads included (OpenAI's counting)
CACHE_READ_TOKENS = 100
OUTPUT_TOKENS = 30
REASONING_TOKENS = 10  # a share of OUTPUT_TOKENS (OpenAI's counting)
CREATED = 1_700_000_000


@dataclass
class StandIn:
    """What the stand-in was asked: one entry per request, in order."""

    url: str = ""
    runaway: bool = False
    hits: list[str] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)

    def count(self, suffix: str) -> int:
        """Requests whose path ends with ``suffix`` (e.g. ``"/messages"``)."""
        return sum(1 for path in self.hits if path.endswith(suffix))


def chat_completion(model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hello"},
                "finish_reason": "stop",
            }
        ],
        "usage": _openai_chat_usage(),
    }


def _openai_chat_usage() -> dict[str, Any]:
    return {
        "prompt_tokens": INPUT_TOKENS,
        "completion_tokens": OUTPUT_TOKENS,
        "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS,
        "prompt_tokens_details": {"cached_tokens": CACHE_READ_TOKENS},
        "completion_tokens_details": {"reasoning_tokens": REASONING_TOKENS},
    }


def chat_chunks(model: str) -> list[dict[str, Any]]:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": CREATED}
    return [
        {
            **base,
            "model": model,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hel"}}],
        },
        {**base, "model": model, "choices": [{"index": 0, "delta": {"content": "lo"}}]},
        {
            **base,
            "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        },
        # The usage chunk that ``stream_options={"include_usage": True}`` asks for.
        {**base, "model": model, "choices": [], "usage": _openai_chat_usage()},
    ]


def response(model: str) -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": CREATED,
        "status": "completed",
        "model": model,
        "output": [
            {
                "type": "message",
                "id": "msg_1",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "hello", "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": INPUT_TOKENS,
            "input_tokens_details": {"cached_tokens": CACHE_READ_TOKENS},
            "output_tokens": OUTPUT_TOKENS,
            "output_tokens_details": {"reasoning_tokens": REASONING_TOKENS},
            "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS,
        },
    }


def response_events(model: str) -> list[tuple[str, dict[str, Any]]]:
    done = response(model)
    started = {**done, "status": "in_progress", "output": [], "usage": None}
    item = done["output"][0]
    return [
        (
            "response.created",
            {"type": "response.created", "sequence_number": 0, "response": started},
        ),
        (
            "response.output_text.delta",
            {
                "type": "response.output_text.delta",
                "sequence_number": 1,
                "item_id": item["id"],
                "output_index": 0,
                "content_index": 0,
                "delta": "hello",
                "logprobs": [],
            },
        ),
        (
            "response.completed",
            {"type": "response.completed", "sequence_number": 2, "response": done},
        ),
    ]


def message(model: str) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": _anthropic_usage(OUTPUT_TOKENS),
    }


def _anthropic_usage(output_tokens: int) -> dict[str, Any]:
    # Anthropic's counting: input_tokens leaves both cache counts out.
    return {
        "input_tokens": INPUT_TOKENS - CACHE_READ_TOKENS,
        "cache_read_input_tokens": CACHE_READ_TOKENS,
        "cache_creation_input_tokens": 0,
        "output_tokens": output_tokens,
    }


def message_events(model: str) -> list[tuple[str, dict[str, Any]]]:
    started = {**message(model), "content": [], "stop_reason": None, "usage": _anthropic_usage(1)}
    return [
        ("message_start", {"type": "message_start", "message": started}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "hello"},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": _anthropic_usage(OUTPUT_TOKENS),
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


#: The code step a CodeAgent is sent when no tools are offered: it never calls final_answer.
RUNAWAY_CODE = "Thought: not done yet.\n<code>\nprint('again')\n</code>"


def _tool_name(body: dict[str, Any]) -> str | None:
    """The tool a runaway answer calls: the first one offered that does not end the run."""
    names = []
    for tool in body.get("tools") or []:
        if not isinstance(tool, dict):
            continue
        function = tool.get("function")
        name = function.get("name") if isinstance(function, dict) else tool.get("name")
        if isinstance(name, str):
            names.append(name)
    for name in names:
        if name != "final_answer":
            return name
    return names[0] if names else None


def runaway_completion(model: str, body: dict[str, Any], number: int) -> dict[str, Any]:
    done = chat_completion(model)
    tool = _tool_name(body)
    if tool is None:
        done["choices"][0]["message"] = {"role": "assistant", "content": RUNAWAY_CODE}
        return done
    done["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": f"call_{number}",
                "type": "function",
                "function": {"name": tool, "arguments": _arguments(tool, number)},
            }
        ],
    }
    done["choices"][0]["finish_reason"] = "tool_calls"
    return done


def _arguments(tool: str, number: int) -> str:
    # The matrix's tools take one string ``query``. It differs per request: a loop
    # of identical calls is a different limit (loop detection), not the one tested.
    if tool == "final_answer":
        return json.dumps({"answer": "done"})
    return json.dumps({"query": f"step {number}"})


def runaway_chunks(model: str, body: dict[str, Any], number: int) -> list[dict[str, Any]]:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": CREATED}
    tool = _tool_name(body)
    if tool is None:
        first = {"role": "assistant", "content": RUNAWAY_CODE}
        finish = "stop"
    else:
        first = {
            "role": "assistant",
            "tool_calls": [
                {
                    "index": 0,
                    "id": f"call_{number}",
                    "type": "function",
                    "function": {"name": tool, "arguments": _arguments(tool, number)},
                }
            ],
        }
        finish = "tool_calls"
    chunks = [
        {**base, "model": model, "choices": [{"index": 0, "delta": first}]},
        {
            **base,
            "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
        },
    ]
    if (body.get("stream_options") or {}).get("include_usage"):
        chunks.append({**base, "model": model, "choices": [], "usage": _openai_chat_usage()})
    return chunks


def _runaway_item(body: dict[str, Any], number: int) -> dict[str, Any]:
    tool = _tool_name(body)
    if tool is None:
        return {
            "type": "message",
            "id": f"msg_{number}",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": RUNAWAY_CODE, "annotations": []}],
        }
    return {
        "type": "function_call",
        "id": f"fc_{number}",
        "call_id": f"call_{number}",
        "name": tool,
        "arguments": _arguments(tool, number),
        "status": "completed",
    }


def runaway_response(model: str, body: dict[str, Any], number: int) -> dict[str, Any]:
    done = response(model)
    done["id"] = f"resp_{number}"
    done["output"] = [_runaway_item(body, number)]
    return done


def runaway_response_events(
    model: str, body: dict[str, Any], number: int
) -> list[tuple[str, dict[str, Any]]]:
    done = runaway_response(model, body, number)
    started = {**done, "status": "in_progress", "output": [], "usage": None}
    item = done["output"][0]
    return [
        (
            "response.created",
            {"type": "response.created", "sequence_number": 0, "response": started},
        ),
        (
            "response.output_item.added",
            {
                "type": "response.output_item.added",
                "sequence_number": 1,
                "output_index": 0,
                "item": {**item, "status": "in_progress"},
            },
        ),
        (
            "response.output_item.done",
            {
                "type": "response.output_item.done",
                "sequence_number": 2,
                "output_index": 0,
                "item": item,
            },
        ),
        (
            "response.completed",
            {"type": "response.completed", "sequence_number": 3, "response": done},
        ),
    ]


def _handler(api: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out as separate writes: without TCP_NODELAY, Nagle's
        # algorithm and the client's delayed ACK add ~40 ms to every answer.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            path = self.path.split("?", 1)[0]
            api.hits.append(path)
            api.bodies.append(body)
            model = str(body.get("model", ""))
            stream = bool(body.get("stream"))
            number = len(api.hits)
            if api.runaway and path.endswith("/chat/completions"):
                if stream:
                    chunks = runaway_chunks(model, body, number)
                    self._events([(None, chunk) for chunk in chunks], done=True)
                else:
                    self._json(runaway_completion(model, body, number))
            elif api.runaway and path.endswith("/responses"):
                if stream:
                    self._events(runaway_response_events(model, body, number), done=False)
                else:
                    self._json(runaway_response(model, body, number))
            elif path.endswith("/chat/completions"):
                if stream:
                    self._events([(None, chunk) for chunk in chat_chunks(model)], done=True)
                else:
                    self._json(chat_completion(model))
            elif path.endswith("/responses"):
                if stream:
                    self._events(list(response_events(model)), done=False)
                else:
                    self._json(response(model))
            elif path.endswith("/messages"):
                if stream:
                    self._events(list(message_events(model)), done=False)
                else:
                    self._json(message(model))
            else:
                self._json({"error": {"message": f"no route {path}"}}, status=404)

        def _json(self, payload: dict[str, Any], status: int = 200) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _events(self, events: list[tuple[str | None, dict[str, Any]]], done: bool) -> None:
            parts = []
            for name, payload in events:
                head = f"event: {name}\n" if name else ""
                parts.append(f"{head}data: {json.dumps(payload)}\n\n")
            if done:
                parts.append("data: [DONE]\n\n")
            data = "".join(parts).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler


@contextmanager
def serve(runaway: bool = False) -> Iterator[StandIn]:
    """Run the stand-in on 127.0.0.1 (a free port); ``url`` is the base URL without ``/v1``.

    ``runaway=True``: every answer asks for another tool call (see the module docstring).
    """
    api = StandIn(runaway=runaway)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
