"""Generator and async-generator turns: one span per stream, ended exactly once, no leaks.

Every way a stream can stop is covered (exhausted, break, close/aclose, error
inside, thrown in, cancelled, abandoned and garbage-collected) and each time
the turn span ends exactly once, the caller's current span is unchanged, and
the ledger agrees with the span.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from openai.types.chat import ChatCompletionChunk
from opentelemetry import trace
from opentelemetry.trace import Span, StatusCode

from otel_harness import Otel
from techrevati.runtime import (
    BudgetExceededError,
    MaxIterationsExceededError,
    ModelPricing,
    register_pricing,
)
from techrevati.runtime.decorators import agent_session, agent_turn, tool_call

from . import payloads as p


@pytest.fixture(autouse=True)
def provider_prices() -> None:
    register_pricing("gpt-4o-mini", ModelPricing(*p.OPENAI_RATES))
    register_pricing("claude-sonnet-4-5", ModelPricing(*p.ANTHROPIC_RATES))


def _attrs(span: Any) -> dict[str, Any]:
    return dict(span.attributes or {})


# --- realistic payloads, priced exactly -----------------------------------------------


@pytest.mark.parametrize("as_objects", [True, False], ids=["sdk-objects", "dicts"])
def test_openai_stream_with_final_usage_chunk(otel: Otel, as_objects: bool) -> None:
    @agent_turn("gpt-4o-mini", provider="openai")
    def stream(prompt: str) -> Iterator[Any]:
        for chunk in p.fresh(p.OPENAI_STREAM):
            yield ChatCompletionChunk.model_validate(chunk) if as_objects else chunk

    with agent_session("writer", **otel.kwargs()) as session:
        text = "".join(
            c.choices[0].delta.content or ""
            if as_objects
            else c["choices"][0]["delta"].get("content", "")
            for c in stream("what is RAG?")
            if (c.choices if as_objects else c["choices"])
        )
    assert text == "Retrieval-augmented generation."
    span = otel.span("chat gpt-4o-mini")
    a = _attrs(span)
    assert a["gen_ai.usage.input_tokens"] == 2006  # cached included, as OpenAI reports it
    assert a["gen_ai.usage.cache_read.input_tokens"] == 1920
    assert a["gen_ai.usage.output_tokens"] == 300
    assert a["gen_ai.usage.reasoning.output_tokens"] == 64
    assert a["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert a["gen_ai.provider.name"] == "openai"
    # 86 fresh tokens at 0.15, 1920 cached at 0.075 (never at 0.15), 300 out at 0.60
    assert a["techrevati.cost.usd"] == pytest.approx(p.OPENAI_STREAM_COST, rel=1e-12)
    assert a["techrevati.cost.usd"] < (2006 * 0.15 + 300 * 0.60) / 1e6
    assert session.tracker.total_cost() == pytest.approx(p.OPENAI_STREAM_COST, rel=1e-12)
    model, usage = session.tracker.turns[0]
    assert (model, usage.input_tokens, usage.cache_read_tokens) == ("gpt-4o-mini", 86, 1920)
    assert otel.metric_sum("techrevati.cost.usd") == pytest.approx(p.OPENAI_STREAM_COST, rel=1e-12)
    assert otel.metric_sum("gen_ai.client.token.usage", gen_ai__token__type="input") == 2006
    assert otel.ended_once(span)


def test_anthropic_async_stream_with_cache_creation_learns_model(otel: Otel) -> None:
    @agent_turn(provider="anthropic")  # no model: read from message_start
    async def stream(prompt: str) -> AsyncIterator[dict[str, Any]]:
        for event in p.fresh(p.ANTHROPIC_STREAM):
            await asyncio.sleep(0)
            yield event

    async def main() -> Any:
        async with agent_session("writer", **otel.kwargs()) as session:
            events = [e async for e in stream("hello")]
            assert len(events) == len(p.ANTHROPIC_STREAM)
        return session

    session = asyncio.run(main())
    span = otel.span(f"chat {p.ANTHROPIC_MODEL}")
    a = _attrs(span)
    assert a["gen_ai.request.model"] == p.ANTHROPIC_MODEL
    assert a["gen_ai.usage.input_tokens"] == 21 + 2048  # normalised: cache inside input
    assert a["gen_ai.usage.cache_write.input_tokens"] == 2048
    assert "gen_ai.usage.cache_read.input_tokens" not in a
    assert a["gen_ai.usage.output_tokens"] == 15  # the cumulative message_delta count
    # the 2048 written tokens at the cache-write rate 3.75, not the input rate 3.0
    assert a["techrevati.cost.usd"] == pytest.approx(p.ANTHROPIC_STREAM_COST, rel=1e-12)
    assert session.tracker.total_cost() == pytest.approx(p.ANTHROPIC_STREAM_COST, rel=1e-12)
    assert session.tracker.turns[0][0] == p.ANTHROPIC_MODEL
    assert otel.metric_sum(
        "techrevati.cost.usd", gen_ai__request__model=p.ANTHROPIC_MODEL
    ) == pytest.approx(p.ANTHROPIC_STREAM_COST, rel=1e-12)
    assert otel.ended_once(span)


def test_anthropic_cache_read_message_priced_at_cache_read_rate(otel: Otel) -> None:
    @agent_turn()
    def ask() -> dict[str, Any]:
        return p.fresh(p.ANTHROPIC_MESSAGE)

    with agent_session("writer", **otel.kwargs()) as session:
        ask()
    a = _attrs(otel.span(f"chat {p.ANTHROPIC_MODEL}"))
    assert a["gen_ai.usage.input_tokens"] == 100_050
    assert a["gen_ai.usage.cache_read.input_tokens"] == 100_000
    assert a["techrevati.cost.usd"] == pytest.approx(p.ANTHROPIC_MESSAGE_COST, rel=1e-12)
    assert session.tracker.total_cost() == pytest.approx(p.ANTHROPIC_MESSAGE_COST, rel=1e-12)


# --- every way a sync stream stops ------------------------------------------------------


class _Probe:
    """Records what the generator body saw: its current span, cleanup, chunks made."""

    def __init__(self) -> None:
        self.started = False
        self.cleaned = False
        self.inner_spans: list[Span] = []


def _sync_turn(probe: _Probe, *, fail_at: int | None = None) -> Any:
    @agent_turn("model-a")
    def stream(n: int) -> Iterator[dict[str, Any]]:
        probe.started = True
        try:
            for i in range(n):
                probe.inner_spans.append(trace.get_current_span())
                if i == fail_at:
                    raise ValueError("stream broke")
                yield {"choices": [{"delta": {"content": str(i)}}]}
            yield {"choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 10}}
        finally:
            probe.inner_spans.append(trace.get_current_span())
            probe.cleaned = True

    return stream


def _consume_break(gen: Iterator[Any]) -> None:
    for _ in gen:
        break


def _consume_close(gen: Any) -> None:
    next(gen)
    next(gen)
    gen.close()


def _consume_gc(gen: Any) -> None:
    next(gen)
    del gen
    gc.collect()


def _consume_all(gen: Iterator[Any]) -> None:
    assert len(list(gen)) == 4


def _consume_throw(gen: Any) -> None:
    next(gen)
    with pytest.raises(KeyError):
        gen.throw(KeyError("consumer gave up"))


SYNC_ENDINGS = {
    "exhausted": (_consume_all, None, True),
    "break": (_consume_break, None, False),
    "close": (_consume_close, None, False),
    "garbage-collected": (_consume_gc, None, False),
    "thrown-in": (_consume_throw, "KeyError", False),
}


@pytest.mark.parametrize("ending", list(SYNC_ENDINGS))
def test_sync_stream_endings(otel: Otel, ending: str) -> None:
    consume, error_type, has_usage = SYNC_ENDINGS[ending]
    probe = _Probe()
    stream = _sync_turn(probe)
    tracer = otel.tracer_provider.get_tracer("caller")
    with agent_session("w", **otel.kwargs()) as session:
        with tracer.start_as_current_span("caller") as caller:
            consume(stream(3))
            assert trace.get_current_span() is caller  # nothing leaked into the caller
            assert len(otel.spans("chat model-a")) == 1  # ended by then, GC included
        assert session.tracker.turn_count == (0 if error_type else 1)  # failures book nothing
    turn = otel.span("chat model-a")
    assert otel.ended_once(turn)
    assert probe.cleaned
    # the body always ran with the turn span current, cleanup included
    assert {s.get_span_context().span_id for s in probe.inner_spans} == {turn.context.span_id}
    assert turn.parent is not None and turn.parent.span_id == caller.get_span_context().span_id
    a = _attrs(turn)
    assert a.get("error.type") == error_type
    assert (turn.status.status_code == StatusCode.ERROR) == (error_type is not None)
    # No usage chunk read: the tokens are unknown, so left unset (not written as 0).
    assert a.get("gen_ai.usage.input_tokens") == (100 if has_usage else None)


def test_sync_stream_error_inside_ends_once_with_recovery(otel: Otel) -> None:
    probe = _Probe()
    stream = _sync_turn(probe, fail_at=1)
    with agent_session("w", **otel.kwargs()) as session:
        before = trace.get_current_span()
        with pytest.raises(ValueError, match="stream broke"):
            list(stream(3))
        assert trace.get_current_span() is before
    turn = otel.span("chat model-a")
    assert otel.ended_once(turn)
    assert _attrs(turn)["error.type"] == "ValueError"
    assert [e.scenario for e in session.recovery.events][:1] == ["llm_error"]
    assert otel.metric_sum("techrevati.recovery.attempts") == 1


def test_send_and_return_value_pass_through(otel: Otel) -> None:
    @agent_turn("model-b", usage=lambda chunk: None)
    def echo() -> Iterator[int]:
        total = 0
        while total < 10:
            got = yield total
            total += got or 0
        return total

    @agent_turn("model-b")
    def finite() -> Iterator[int]:
        yield 1
        return 42

    def outer() -> Iterator[int]:
        result = yield from finite()
        yield result

    with agent_session("w", **otel.kwargs()):
        gen = echo()
        assert next(gen) == 0
        assert gen.send(5) == 5
        with pytest.raises(StopIteration) as stop:
            gen.send(7)
        assert stop.value.value == 12
        assert list(outer()) == [1, 42]
    assert len(otel.spans("chat model-b")) == 2


# --- every way an async stream stops ----------------------------------------------------


def _async_turn(probe: _Probe, *, fail_at: int | None = None, delay: float = 0) -> Any:
    @agent_turn("model-a")
    async def stream(n: int) -> AsyncIterator[dict[str, Any]]:
        probe.started = True
        try:
            for i in range(n):
                await asyncio.sleep(delay)
                probe.inner_spans.append(trace.get_current_span())
                if i == fail_at:
                    raise ValueError("stream broke")
                yield {"choices": [{"delta": {"content": str(i)}}]}
            yield {"choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 10}}
        finally:
            probe.inner_spans.append(trace.get_current_span())
            probe.cleaned = True

    return stream


async def _a_all(agen: Any) -> None:
    assert len([x async for x in agen]) == 4


async def _a_break_aclose(agen: Any) -> None:
    async for _ in agen:
        break
    await agen.aclose()


async def _a_aclose(agen: Any) -> None:
    await agen.__anext__()
    await agen.aclose()


async def _a_gc(agen: Any) -> None:
    await agen.__anext__()
    del agen
    gc.collect()
    for _ in range(3):  # the loop's asyncgen finalizer schedules aclose() as a task
        await asyncio.sleep(0)


async def _a_athrow(agen: Any) -> None:
    await agen.__anext__()
    with pytest.raises(KeyError):
        await agen.athrow(KeyError("consumer gave up"))


async def _a_error(agen: Any) -> None:
    with pytest.raises(ValueError, match="stream broke"):
        async for _ in agen:
            pass


ASYNC_ENDINGS = {
    "exhausted": (_a_all, None, None),
    "break+aclose": (_a_break_aclose, None, None),
    "aclose": (_a_aclose, None, None),
    "garbage-collected": (_a_gc, None, None),
    "thrown-in": (_a_athrow, "KeyError", None),
    "error-inside": (_a_error, "ValueError", 1),
}


@pytest.mark.parametrize("ending", list(ASYNC_ENDINGS))
def test_async_stream_endings(otel: Otel, ending: str) -> None:
    consume, error_type, fail_at = ASYNC_ENDINGS[ending]
    probe = _Probe()
    stream = _async_turn(probe, fail_at=fail_at)
    tracer = otel.tracer_provider.get_tracer("caller")

    async def main() -> Any:
        async with agent_session("w", **otel.kwargs()) as session:
            with tracer.start_as_current_span("caller") as caller:
                await consume(stream(3))
                assert trace.get_current_span() is caller
                # ended by then, whichever way it stopped (GC included)
                assert len(otel.spans("chat model-a")) == 1
        return session, caller

    session, caller = asyncio.run(main())
    turn = otel.span("chat model-a")
    assert otel.ended_once(turn)
    assert probe.cleaned
    assert {s.get_span_context().span_id for s in probe.inner_spans} == {turn.context.span_id}
    assert turn.parent is not None and turn.parent.span_id == caller.get_span_context().span_id
    assert _attrs(turn).get("error.type") == error_type
    assert session.tracker.turn_count == (0 if error_type else 1)


def test_async_stream_cancelled(otel: Otel) -> None:
    probe = _Probe()
    stream = _async_turn(probe, delay=10)

    async def main() -> Any:
        async with agent_session("w", **otel.kwargs()) as session:

            async def consumer() -> None:
                async for _ in stream(3):
                    pass

            before = trace.get_current_span()
            task = asyncio.create_task(consumer())
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert trace.get_current_span() is before
        return session

    session = asyncio.run(main())
    turn = otel.span("chat model-a")
    assert otel.ended_once(turn)
    assert probe.cleaned
    assert _attrs(turn)["error.type"] == "CancelledError"
    assert session.recovery.events == []  # cancellation is not a model failure


def test_abandoned_async_stream_closed_at_loop_shutdown(otel: Otel) -> None:
    probe = _Probe()
    stream = _async_turn(probe)
    keep: list[Any] = []

    async def main() -> None:
        agen = stream(3)
        keep.append(agen)  # still referenced: only shutdown_asyncgens can close it
        await agen.__anext__()

    with agent_session("w", **otel.kwargs()):
        asyncio.run(main())
    turn = otel.span("chat model-a")
    assert otel.ended_once(turn)
    assert probe.cleaned


def test_coroutine_turn_cancelled_ends_once(otel: Otel) -> None:
    @agent_turn("model-a")
    async def slow() -> None:
        await asyncio.sleep(10)

    async def main() -> None:
        async with agent_session("w", **otel.kwargs()):
            task = asyncio.create_task(slow())
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    turn = otel.span("chat model-a")
    assert otel.ended_once(turn)
    assert _attrs(turn)["error.type"] == "CancelledError"


# --- refusal before the generator starts -----------------------------------------------


def test_refused_stream_never_starts_the_generator(otel: Otel) -> None:
    probe = _Probe()
    stream = _sync_turn(probe)
    aprobe = _Probe()
    astream = _async_turn(aprobe)
    with agent_session("w", max_iterations=0, **otel.kwargs()):
        gen = stream(3)
        with pytest.raises(MaxIterationsExceededError):
            next(gen)
        with pytest.raises(StopIteration):  # finished, not half-open
            next(gen)

    async def main() -> None:
        async with agent_session("w", budget_usd=0.0, enforce_budget=True, **otel.kwargs()):

            @agent_turn("model-b")
            def spend() -> dict[str, Any]:
                return {"usage": {"prompt_tokens": 10, "completion_tokens": 0}}

            with pytest.raises(BudgetExceededError):
                spend()  # crosses the 0 budget, completes, then raises
            with pytest.raises(BudgetExceededError):
                await astream(3).__anext__()

    asyncio.run(main())
    assert not probe.started and not aprobe.started
    assert otel.spans("chat model-a") == []


def test_stream_that_crosses_the_budget_raises_after_the_last_chunk(otel: Otel) -> None:
    probe = _Probe()
    stream = _sync_turn(probe)
    got: list[Any] = []
    budget = agent_session("w", budget_usd=0.0001, enforce_budget=True, **otel.kwargs())
    with budget as session, pytest.raises(BudgetExceededError) as crossed:
        for chunk in stream(2):
            got.append(chunk)
    assert len(got) == 3  # every chunk was delivered, then the error
    # So the error says the caller has them, not that the result is discarded.
    assert crossed.value.site is not None and crossed.value.site.streamed
    assert "its chunks reached the caller before this error" in str(crossed.value)
    assert "discarded" not in str(crossed.value)
    assert session.tracker.total_cost() == pytest.approx((100 * 3.0 + 10 * 15.0) / 1e6)
    assert otel.ended_once(otel.span("chat model-a"))


def test_tool_called_inside_a_stream_is_its_child_and_in_the_session(otel: Otel) -> None:
    @tool_call()
    def search(q: str) -> str:
        return q.upper()

    @agent_turn("model-a")
    def stream() -> Iterator[str]:
        yield search("a")
        yield search("b")

    with agent_session("w", **otel.kwargs()):
        assert list(stream()) == ["A", "B"]
    turn = otel.span("chat model-a")
    tools = otel.spans("execute_tool search")
    assert len(tools) == 2
    for t in tools:
        assert t.parent is not None and t.parent.span_id == turn.context.span_id
        assert _attrs(t)["gen_ai.agent.name"] == "w"
