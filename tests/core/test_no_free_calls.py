"""No call is free under an enforced budget: a call whose usage never arrives.

A stream without ``include_usage`` (what many clients send to proxies and
self-hosted servers) reports no tokens. Under a budget it is booked at an
estimate, marked ``techrevati.cost.source = "estimated"``: from the request and
the streamed text the client guard saw, else the model's learned cost, else the
session's ``call_estimate_usd``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import openai
import pytest

from fake_anthropic import FakeAnthropic, message
from fake_anthropic import serve as serve_anthropic
from fake_openai import FakeOpenAI, instrumented_openai, serve
from otel_harness import Otel
from techrevati.runtime import BudgetExceededError, UsageSnapshot, agent_session, agent_turn
from techrevati.runtime.pricing import price_call
from techrevati.runtime.telemetry.limits import guard
from techrevati.runtime.telemetry.limits.estimate import request_tokens
from techrevati.runtime.telemetry.report.model import build_report
from techrevati.runtime.telemetry.report.read import record_from_span
from techrevati.runtime.telemetry.report.text import render_report

pytestmark = pytest.mark.usefixtures("priced")

CHUNK: dict[str, Any] = {"id": "c", "object": "chat.completion.chunk", "created": 1}
STREAM = [
    {**CHUNK, "model": "model-a", "choices": [{"index": 0, "delta": {"content": "x" * 400}}]},
    {**CHUNK, "model": "model-a", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
]
MESSAGES = [{"role": "user", "content": "y" * 4000}]


def _estimate() -> float:
    # The rule of limits/estimate.py: request input characters / 4, streamed text / 4.
    chars = len(json.dumps(MESSAGES, ensure_ascii=False))
    return price_call("model-a", UsageSnapshot(-(-chars // 4), 100)).cost


@pytest.fixture
def api() -> Iterator[FakeOpenAI]:
    guard.uninstall_guard()
    with serve(FakeOpenAI({}, stream=STREAM)) as fake:
        yield fake
    guard.uninstall_guard()


def _stream(client: openai.OpenAI) -> str:
    chunks = client.chat.completions.create(model="model-a", messages=MESSAGES, stream=True)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_stream_without_usage_is_booked_at_an_estimate(api: FakeOpenAI, otel: Otel) -> None:
    client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
    budget = 2.5 * _estimate()
    sent = 0
    with (
        pytest.warns(RuntimeWarning, match="booked at an estimate"),
        pytest.raises(BudgetExceededError),
        agent_session("w", budget_usd=budget, enforce_budget=True, **otel.kwargs()) as session,
    ):
        for _ in range(21):
            assert _stream(client) == "x" * 400
            sent += 1
    # Booked at $0 before: all 21 ran. Now the budget holds: 3 ran (the third crossed).
    assert len(api.requests) == 3
    assert session.tracker.total_cost() == pytest.approx(3 * _estimate())


def test_library_span_without_usage_is_booked_at_the_guards_estimate(api: FakeOpenAI) -> None:
    with instrumented_openai() as (provider, exporter):
        client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
        with (
            agent_session("w", budget_usd=1.0, enforce_budget=True, tracer_provider=provider) as s,
            pytest.warns(RuntimeWarning, match="no token usage"),
        ):
            _stream(client)
    assert s._iteration_count == 1
    assert s.tracker.total_cost() == pytest.approx(_estimate())
    chats = [x for x in exporter.get_finished_spans() if x.name.startswith("chat")]
    assert len(chats) == 1


def test_turn_without_usage_is_booked_at_the_learned_cost(otel: Otel) -> None:
    @agent_turn("model-a")
    def ask(usage: bool) -> Any:
        return {"usage": {"prompt_tokens": 1000, "completion_tokens": 100}} if usage else "text"

    with (
        pytest.warns(RuntimeWarning, match="booked at an estimate"),
        agent_session("w", budget_usd=1.0, enforce_budget=True, **otel.kwargs()) as session,
    ):
        ask(True)
        ask(False)
    assert session.tracker.total_cost() == pytest.approx(2 * 0.0045)
    spans = otel.spans("chat model-a")
    sources = sorted(str((s.attributes or {}).get("techrevati.cost.source")) for s in spans)
    assert sources == ["estimated", "registered"]
    estimated = next(
        s for s in spans if (s.attributes or {}).get("techrevati.cost.source") == "estimated"
    )
    assert estimated.attributes is not None
    assert estimated.attributes["techrevati.cost.usd"] == pytest.approx(0.0045)
    assert estimated.attributes["techrevati.usage.missing"] is True
    # The report says how many calls were booked at an estimate, and for how much.
    report = build_report(r for r in map(record_from_span, otel.spans()) if r is not None)
    assert (report.calls_estimated, report.estimated_cost_usd) == (1, pytest.approx(0.0045))
    assert report.total_cost_usd == pytest.approx(0.009)
    assert "Booked at an estimate: 1 call, $0.004500" in render_report(report)


def test_turn_without_usage_falls_back_to_call_estimate_usd(otel: Otel) -> None:
    @agent_turn("model-a")
    def ask() -> str:
        return "text"

    with (
        pytest.warns(RuntimeWarning, match="booked at an estimate"),
        pytest.raises(BudgetExceededError),
        agent_session(
            "w", budget_usd=0.025, enforce_budget=True, call_estimate_usd=0.01, **otel.kwargs()
        ) as session,
    ):
        for _ in range(5):
            ask()
    assert session._iteration_count == 3  # $0.01 each: the third crosses $0.025
    assert session.tracker.total_cost() == pytest.approx(0.03)


def test_without_a_budget_nothing_is_invented(otel: Otel) -> None:
    @agent_turn("model-a")
    def ask() -> str:
        return "text"

    with agent_session("w", **otel.kwargs()) as session:
        ask()
    assert session.tracker.total_cost() == 0.0
    span = otel.span("chat model-a")
    assert span.attributes is not None
    # $0 because no usage was read, not because a price said so.
    assert span.attributes["techrevati.cost.source"] == "no_usage"


# -- Everything a stream without usage outputs is counted ------------------------------
#
# Tool calls, reasoning, refusals and every choice are billed as output like text: a
# stream that carried only those was booked at its request, 3% of what it cost, and a
# tool-calling agent under a 3-call budget sent 120 calls.

TEXT = "word " * 100  # 500 characters: 125 tokens by the estimate's rule
CALL = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "write"}}
ARGUMENTS = {"index": 0, "function": {"arguments": TEXT}}
# Per kind: each chunk's deltas (one per choice), and the characters they stream.
STREAMED: dict[str, tuple[list[list[dict[str, Any]]], int]] = {
    "content": ([[{"role": "assistant", "content": TEXT}]] * 8, 8 * 500),
    "tool call arguments": (
        [[{"role": "assistant", "tool_calls": [CALL]}]] + [[{"tool_calls": [ARGUMENTS]}]] * 8,
        len("write") + 8 * 500,
    ),
    "legacy function_call": (
        [[{"function_call": {"name": "write", "arguments": ""}}]]
        + [[{"function_call": {"arguments": TEXT}}]] * 8,
        len("write") + 8 * 500,
    ),
    "three choices": ([[{"content": TEXT}] * 3] * 8, 3 * 8 * 500),
    "reasoning_content": (
        [[{"reasoning_content": TEXT}]] * 8 + [[{"content": "done"}]],
        8 * 500 + 4,
    ),
    "reasoning": ([[{"reasoning": TEXT, "content": None}]] * 8, 8 * 500),
    "refusal": ([[{"refusal": TEXT}]] * 8, 8 * 500),
}
ASK = [{"role": "user", "content": "write"}]


def _chat_chunks(deltas: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    chunks = [
        {
            **CHUNK,
            "model": "model-a",
            "choices": [{"index": i, "delta": d} for i, d in enumerate(c)],
        }
        for c in deltas
    ]
    return [*chunks, STREAM[-1]]


def _one_call(body: dict[str, Any], provider: str, input_tokens: int | None, chars: int) -> float:
    if input_tokens is None:
        input_tokens = request_tokens(body, provider)[0]
    return price_call("model-a", UsageSnapshot(input_tokens, -(-chars // 4))).cost


def _under_budget(one: float, otel: Otel, call: Callable[[], object]) -> float:
    """Calls until the budget of 2.5 calls stops them; what was booked."""
    with (
        pytest.warns(RuntimeWarning, match="booked at an estimate|ended before its usage"),
        pytest.raises(BudgetExceededError),
        agent_session("w", budget_usd=2.5 * one, enforce_budget=True, **otel.kwargs()) as session,
    ):
        for _ in range(10):
            call()
    return session.tracker.total_cost()


@pytest.mark.parametrize("kind", list(STREAMED))
def test_all_a_chat_stream_outputs_is_booked_without_usage(kind: str, otel: Otel) -> None:
    deltas, chars = STREAMED[kind]
    body: dict[str, Any] = {"model": "model-a", "messages": ASK, "max_tokens": 1000}
    if kind == "three choices":
        body["n"] = 3
    guard.uninstall_guard()
    with serve(FakeOpenAI({}, stream=_chat_chunks(deltas))) as api:
        client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
        one = _one_call(body, "openai", None, chars)
        booked = _under_budget(
            one, otel, lambda: list(client.chat.completions.create(**body, stream=True))
        )
    guard.uninstall_guard()
    # Before: booked at its request alone, all 10 were sent (3 with plain content).
    assert len(api.requests) == 3
    assert booked == pytest.approx(3 * one)


# Responses: every ``response.*.delta`` string is output; a stream that ends before
# ``response.completed`` brings no usage.
RESPONSE_DELTAS = {
    "function call arguments": "response.function_call_arguments.delta",
    "reasoning summary": "response.reasoning_summary_text.delta",
    "reasoning text": "response.reasoning_text.delta",
}


@pytest.mark.parametrize("kind", list(RESPONSE_DELTAS))
def test_all_a_responses_stream_outputs_is_booked_without_usage(kind: str, otel: Otel) -> None:
    event = {"type": RESPONSE_DELTAS[kind], "item_id": "i", "output_index": 0, "delta": TEXT}
    events = [
        {**event, "sequence_number": n, "summary_index": 0, "content_index": 0} for n in range(8)
    ]
    body: dict[str, Any] = {"model": "model-a", "input": "write", "max_output_tokens": 1000}
    guard.uninstall_guard()
    with serve(FakeOpenAI({}, stream=events)) as api:
        client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
        one = _one_call(body, "openai", None, 8 * 500)
        booked = _under_budget(
            one, otel, lambda: list(client.responses.create(**body, stream=True))
        )
    guard.uninstall_guard()
    assert len(api.requests) == 3
    assert booked == pytest.approx(3 * one)


# Anthropic: a stream cut before its message_delta has only the start's placeholder
# output count (1); the tool input and the thinking it streamed are its output.
BLOCKS = {
    "tool input": (
        {"type": "tool_use", "id": "toolu_1", "name": "write", "input": {}},
        {"type": "input_json_delta", "partial_json": TEXT},
    ),
    "thinking": (
        {"type": "thinking", "thinking": "", "signature": ""},
        {"type": "thinking_delta", "thinking": TEXT},
    ),
}


@pytest.mark.parametrize("kind", list(BLOCKS))
def test_all_an_anthropic_stream_cut_short_outputs_is_booked(kind: str, otel: Otel) -> None:
    block, delta = BLOCKS[kind]
    start = message("", input_tokens=1000, output_tokens=1, model="model-a")
    events = [
        {"type": "message_start", "message": {**start, "content": [], "stop_reason": None}},
        {"type": "content_block_start", "index": 0, "content_block": block},
        *[{"type": "content_block_delta", "index": 0, "delta": delta}] * 8,
        {"type": "content_block_stop", "index": 0},
    ]
    guard.uninstall_guard()
    with serve_anthropic(FakeAnthropic(start, stream=events)) as api:
        client = anthropic.Anthropic(base_url=api.url, api_key="k", max_retries=0)
        body = {"model": "model-a", "max_tokens": 1000, "messages": ASK}
        one = _one_call(body, "anthropic", 1000, 8 * 500)
        booked = _under_budget(one, otel, lambda: list(client.messages.create(**body, stream=True)))
    guard.uninstall_guard()
    assert len(api.requests) == 3
    assert booked == pytest.approx(3 * one)
