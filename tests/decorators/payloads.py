"""Provider payloads as the APIs send them (JSON), for the extraction and streaming tests."""

from __future__ import annotations

import copy
from typing import Any

# --- OpenAI chat completions, streamed with stream_options={"include_usage": True} ---
_OPENAI_BASE = {
    "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
    "object": "chat.completion.chunk",
    "created": 1741569952,
    "model": "gpt-4o-mini-2024-07-18",
    "service_tier": "default",
    "system_fingerprint": "fp_06737a9306",
}


def _openai_chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        **_OPENAI_BASE,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": None,
    }


OPENAI_STREAM: list[dict[str, Any]] = [
    _openai_chunk({"role": "assistant", "content": "", "refusal": None}),
    _openai_chunk({"content": "Retrieval"}),
    _openai_chunk({"content": "-augmented"}),
    _openai_chunk({"content": " generation."}),
    _openai_chunk({}, finish="stop"),
    {
        **_OPENAI_BASE,
        "choices": [],
        "usage": {
            "prompt_tokens": 2006,
            "completion_tokens": 300,
            "total_tokens": 2306,
            "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 64,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
    },
]
#: gpt-4o-mini prices used by the tests (per million tokens).
OPENAI_RATES = (0.15, 0.60, 0.0, 0.075)  # input, output, cache write, cache read
OPENAI_STREAM_COST = (86 * 0.15 + 1920 * 0.075 + 300 * 0.60) / 1e6

# --- OpenAI chat completion (not streamed) --------------------------------------------
OPENAI_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-abc123",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "RAG is retrieval first.", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 5000,
        "completion_tokens": 100,
        "total_tokens": 5100,
        "prompt_tokens_details": {"cached_tokens": 4000, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 40, "audio_tokens": 0},
    },
}

# --- Anthropic messages, streamed (server-sent events, data payloads) ------------------
ANTHROPIC_MODEL = "claude-sonnet-4-5-20250929"
ANTHROPIC_STREAM: list[dict[str, Any]] = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": ANTHROPIC_MODEL,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": 21,
                "cache_creation_input_tokens": 2048,
                "cache_read_input_tokens": 0,
                "output_tokens": 1,
            },
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 15},
    },
    {"type": "message_stop"},
]
#: claude sonnet prices used by the tests (per million tokens).
ANTHROPIC_RATES = (3.0, 15.0, 3.75, 0.30)
ANTHROPIC_STREAM_COST = (21 * 3.0 + 2048 * 3.75 + 15 * 15.0) / 1e6

# --- Anthropic message (not streamed), a cache hit -------------------------------------
ANTHROPIC_MESSAGE: dict[str, Any] = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "type": "message",
    "role": "assistant",
    "model": ANTHROPIC_MODEL,
    "content": [{"type": "text", "text": "Hi! "}, {"type": "text", "text": "Cached."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 50,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 100_000,
        "output_tokens": 200,
    },
}
ANTHROPIC_MESSAGE_COST = (50 * 3.0 + 100_000 * 0.30 + 200 * 15.0) / 1e6


def fresh(payload: Any) -> Any:
    return copy.deepcopy(payload)
