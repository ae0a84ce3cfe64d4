"""Duck-typed usage extraction: SDK objects and dicts, priced so each token counts once."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from anthropic.types import Message
from hypothesis import given
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response
from openai.types.responses.response_usage import (
    InputTokensDetails,
    OutputTokensDetails,
    ResponseUsage,
)

from techrevati.runtime import ModelPricing, UsageSnapshot
from techrevati.runtime.telemetry.readings.tokens import usage_from_attributes, usage_to_attributes
from techrevati.runtime.telemetry.readings.usage_extract import (
    StreamReader,
    extract,
    extract_model,
    extract_output,
    extract_text,
    extract_usage,
    usage_of,
)
from techrevati.runtime.usage_tracking import _cost

from . import payloads as p


def _ns(value: Any) -> Any:
    """The dict payload as attribute-access objects (the shape of SDK models)."""
    if isinstance(value, dict):
        return SimpleNamespace(**{k: _ns(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_ns(v) for v in value]
    return value


def test_openai_chat_completion_object_and_dict_agree() -> None:
    sdk = ChatCompletion.model_validate(p.fresh(p.OPENAI_COMPLETION))
    for obj in (sdk, p.fresh(p.OPENAI_COMPLETION), _ns(p.OPENAI_COMPLETION)):
        found = extract(obj)
        assert found.usage == UsageSnapshot(
            input_tokens=1000, output_tokens=100, cache_read_tokens=4000
        )
        assert found.model == "gpt-4o-mini-2024-07-18"
        assert found.reasoning_tokens == 40
        assert extract_text(obj) == "RAG is retrieval first."


def test_openai_stream_final_usage_chunk() -> None:
    for chunks in (
        [ChatCompletionChunk.model_validate(c) for c in p.fresh(p.OPENAI_STREAM)],
        p.fresh(p.OPENAI_STREAM),
    ):
        reader = StreamReader(collect_text=True)
        for chunk in chunks:
            reader.add(chunk)
        assert reader.usage == UsageSnapshot(
            input_tokens=86, output_tokens=300, cache_read_tokens=1920
        )
        assert reader.model == "gpt-4o-mini-2024-07-18"
        assert reader.reasoning_tokens == 64
        assert reader.text == "Retrieval-augmented generation."


def test_openai_cache_write_tokens_when_reported() -> None:
    usage = {
        "prompt_tokens": 10_000,
        "completion_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 6000, "cache_write_tokens": 3000},
    }
    assert usage_of(usage) == UsageSnapshot(
        1000, 10, cache_write_tokens=3000, cache_read_tokens=6000
    )


def test_openai_responses_usage() -> None:
    usage = ResponseUsage(
        input_tokens=3000,
        input_tokens_details=InputTokensDetails(cached_tokens=2048, cache_write_tokens=0),
        output_tokens=500,
        output_tokens_details=OutputTokensDetails(reasoning_tokens=320),
        total_tokens=3500,
    )
    response = SimpleNamespace(model="o4-mini-2025-04-16", usage=usage, output_text="done")
    found = extract(response)
    assert found.usage == UsageSnapshot(952, 500, cache_read_tokens=2048)
    assert (found.model, found.reasoning_tokens) == ("o4-mini-2025-04-16", 320)
    assert extract_text(response) == "done"
    # the streamed form: the response.completed event carries the response
    reader = StreamReader()
    reader.add({"type": "response.output_text.delta", "delta": "do"})
    reader.add({"type": "response.completed", "response": response})
    assert reader.usage == found.usage and reader.model == found.model


def test_anthropic_message_object_and_dict() -> None:
    for obj in (p.fresh(p.ANTHROPIC_MESSAGE), _ns(p.ANTHROPIC_MESSAGE)):
        found = extract(obj)
        assert found.usage == UsageSnapshot(
            50, 200, cache_write_tokens=0, cache_read_tokens=100_000
        )
        assert found.model == p.ANTHROPIC_MODEL
        assert extract_text(obj) == "Hi! Cached."


def test_anthropic_stream_start_plus_cumulative_delta() -> None:
    for events in (p.fresh(p.ANTHROPIC_STREAM), [_ns(e) for e in p.ANTHROPIC_STREAM]):
        reader = StreamReader(collect_text=True)
        for event in events:
            reader.add(event)
        assert reader.usage == UsageSnapshot(21, 15, cache_write_tokens=2048, cache_read_tokens=0)
        assert reader.model == p.ANTHROPIC_MODEL
        assert reader.text == "Hello!"


def test_anthropic_delta_with_null_fields_keeps_start_counts() -> None:
    reader = StreamReader()
    reader.add(p.ANTHROPIC_STREAM[0])
    # newer APIs repeat every count in message_delta, some as null
    reader.add(
        {
            "type": "message_delta",
            "usage": {
                "input_tokens": None,
                "cache_creation_input_tokens": None,
                "cache_read_input_tokens": 7,
                "output_tokens": 40,
            },
        }
    )
    assert reader.usage == UsageSnapshot(21, 40, cache_write_tokens=2048, cache_read_tokens=7)


def test_snapshot_and_garbage() -> None:
    snap = UsageSnapshot(1, 2, 3, 4)
    assert extract_usage(snap) is snap
    assert extract_usage(SimpleNamespace(usage=snap)) is snap
    for junk in (
        None,
        "text",
        3,
        b"x",
        [],
        {},
        {"usage": "nope"},
        {"usage": {"input_tokens": "x"}},
    ):
        assert extract_usage(junk) is None

    class Exploding:
        @property
        def usage(self) -> Any:
            raise RuntimeError("lazy property failed")

    assert extract(Exploding()).usage is None
    reader = StreamReader()
    reader.add(Exploding())
    assert reader.usage is None
    assert extract_model({"model": ""}) is None


@given(
    plain=st.integers(0, 10**7),
    cached=st.integers(0, 10**7),
    out=st.integers(0, 10**6),
    reasoning=st.integers(0, 10**6),
)
def test_openai_numbers_round_trip_and_price_once(
    plain: int, cached: int, out: int, reasoning: int
) -> None:
    usage = {
        "prompt_tokens": plain + cached,
        "completion_tokens": out + reasoning,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }
    snap = usage_of(usage)
    assert snap == UsageSnapshot(plain, out + reasoning, cache_read_tokens=cached)
    attrs = usage_to_attributes(snap)
    # semconv: input includes the cached tokens, exactly as OpenAI reports them
    assert attrs["gen_ai.usage.input_tokens"] == plain + cached
    assert usage_from_attributes(attrs) == snap
    price = ModelPricing(2.0, 8.0, cache_read_per_million=0.5)
    expected = plain * 2.0 / 1e6 + (out + reasoning) * 8.0 / 1e6 + cached * 0.5 / 1e6
    assert _cost(price, snap.input_tokens, snap.output_tokens, 0, snap.cache_read_tokens) == (
        pytest.approx(expected, rel=1e-12, abs=1e-15)
    )


@given(
    inp=st.integers(0, 10**7),
    write=st.integers(0, 10**7),
    read=st.integers(0, 10**7),
    out=st.integers(0, 10**6),
)
def test_anthropic_numbers_round_trip(inp: int, write: int, read: int, out: int) -> None:
    snap = usage_of(
        {
            "input_tokens": inp,
            "cache_creation_input_tokens": write,
            "cache_read_input_tokens": read,
            "output_tokens": out,
        }
    )
    assert snap == UsageSnapshot(inp, out, cache_write_tokens=write, cache_read_tokens=read)
    attrs = usage_to_attributes(snap)
    assert attrs["gen_ai.usage.input_tokens"] == inp + write + read
    assert usage_from_attributes(attrs) == snap


def test_stream_output_is_all_that_was_streamed_and_text_only_the_answer() -> None:
    # ``output`` estimates a stream without usage (tool calls, every choice, reasoning);
    # ``text`` stays the first choice's answer, what content capture records.
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f"}}
    deltas = [
        [{"reasoning_content": "think "}, {"content": "other "}],
        [{"content": "answer", "tool_calls": [call]}],
        [{"tool_calls": [{"index": 0, "function": {"arguments": '{"a": 1}'}}]}],
        [{"refusal": "no"}],
    ]
    raw = [{**base, "choices": [{"index": i, "delta": d} for i, d in enumerate(c)]} for c in deltas]
    raw.append({**base, "choices": []})  # the usage chunk's shape, without usage
    for chunks in (raw, [ChatCompletionChunk.model_validate(c) for c in raw], _ns(raw)):
        reader = StreamReader(collect_text=True, collect_output=True)
        for chunk in chunks:
            reader.add(chunk)
        assert reader.output == 'think other answerf{"a": 1}no'
        assert reader.text == "answer"
    # Junk where text is expected reads as no text, and never hides the usage.
    reader = StreamReader(collect_output=True)
    reader.add({"choices": [{"delta": {"tool_calls": 3, "content": 5}}], "usage": {}})
    reader.add({"delta": {"type": ["x"]}})
    reader.add({"choices": [5], "usage": {"prompt_tokens": 2, "completion_tokens": 1}})
    assert reader.output is None
    assert reader.usage == UsageSnapshot(2, 1)


def test_response_output_is_all_a_whole_response_carries() -> None:
    # ``extract_output`` estimates a response without usage, by the stream's rules.
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    chat = {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": "answer",
                    "tool_calls": [call],
                    "refusal": "no",
                    "reasoning_content": "think ",
                },
            },
            {"index": 1, "finish_reason": "stop", "message": {"role": "assistant", "content": "b"}},
        ],
    }
    responses = {
        "id": "r",
        "object": "response",
        "created_at": 1,
        "model": "m",
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "output": [
            {"type": "reasoning", "id": "rs", "summary": [{"type": "summary_text", "text": "s"}]},
            {
                "type": "message",
                "id": "m",
                "role": "assistant",
                "status": "completed",
                "content": [
                    {"type": "output_text", "text": "t", "annotations": []},
                    {"type": "refusal", "refusal": "r"},
                ],
            },
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        ],
    }
    message = {
        "id": "msg",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 1, "output_tokens": 1},
        "content": [
            {"type": "thinking", "thinking": "hm ", "signature": "sig"},
            {"type": "redacted_thinking", "data": "ciphertext"},
            {"type": "text", "text": "ok ", "citations": None},
            {"type": "tool_use", "id": "t", "name": "f", "input": {"a": "é"}},
        ],
    }
    completion = {"choices": [{"text": "one "}, {"text": "two"}]}
    for raw, model, expected in (
        (chat, ChatCompletion, 'answerf{"a": 1}nothink b'),
        (responses, Response, "str{}"),
        (message, Message, 'hm ok {"a": "é"}'),
    ):
        shapes = [raw, model.model_validate(raw)]
        if raw is not message:  # (a tool's input is a dict in every shape, never an object)
            shapes.append(_ns(raw))
        for shape in shapes:
            assert extract_output(shape) == expected
    assert extract_output(completion) == extract_output(_ns(completion)) == "one two"
    # Nothing, or junk where output is expected: no output, never an error; what was
    # read before the junk still counts.
    for junk in (None, 3, {}, {"choices": 5}, {"output": [5]}, {"content": "x"}):
        assert extract_output(junk) is None
    assert extract_output({"choices": [{"message": {"content": "a"}}, 5]}) == "a"


def test_a_streams_closing_whole_message_is_not_counted_again() -> None:
    # A review: some OpenAI-compatible servers end a stream with a chunk carrying the
    # whole message; its text, already streamed as deltas, was counted twice (800 of 400).
    reader = StreamReader(collect_output=True)
    reader.add({"choices": [{"index": 0, "delta": {"content": "x" * 400}}]})
    reader.add({"choices": [{"index": 0, "message": {"content": "x" * 400}}]})
    assert len(reader.output or "") == 400
