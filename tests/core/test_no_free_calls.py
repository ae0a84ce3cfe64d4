"""No call is free under an enforced budget: a call whose usage never arrives.

A stream without ``include_usage`` (what many clients send to proxies and
self-hosted servers) reports no tokens. Under a budget it is booked at an
estimate, marked ``techrevati.cost.source = "estimated"``: from the request and
the streamed text the client guard saw, else the model's learned cost, else the
session's ``call_estimate_usd``.
"""

from __future__ import annotations

import asyncio
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

pytestmark = pytest.mark.usefixtures("priced", "fresh_guard")


@pytest.fixture
def fresh_guard() -> Iterator[None]:
    """Each test's clients meet a guard installed by its own session, and leave none."""
    guard.uninstall_guard()
    yield
    guard.uninstall_guard()


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
    with serve(FakeOpenAI({}, stream=_chat_chunks(deltas))) as api:
        client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
        one = _one_call(body, "openai", None, chars)
        booked = _under_budget(
            one, otel, lambda: list(client.chat.completions.create(**body, stream=True))
        )
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
    with serve(FakeOpenAI({}, stream=events)) as api:
        client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
        one = _one_call(body, "openai", None, 8 * 500)
        booked = _under_budget(
            one, otel, lambda: list(client.responses.create(**body, stream=True))
        )
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
    with serve_anthropic(FakeAnthropic(start, stream=events)) as api:
        client = anthropic.Anthropic(base_url=api.url, api_key="k", max_retries=0)
        body = {"model": "model-a", "max_tokens": 1000, "messages": ASK}
        one = _one_call(body, "anthropic", 1000, 8 * 500)
        booked = _under_budget(one, otel, lambda: list(client.messages.create(**body, stream=True)))
    assert len(api.requests) == 3
    assert booked == pytest.approx(3 * one)


# -- Everything a response without usage outputs is counted ----------------------------
#
# A proxy that drops the usage block of a whole response: it was booked at its request
# and its first choice's message content only, so a tool-calling agent under a 3-call
# budget ran all its calls. The same rules as a stream's (``extract_output``).

LONG = TEXT * 8  # 4000 characters: 1000 tokens by the estimate's rule
COMPLETION: dict[str, Any] = {"id": "c", "object": "chat.completion", "created": 1}
MESSAGE: dict[str, Any] = {"role": "assistant", "content": None}
# Per kind: the choices' messages, and the characters they carry.
ANSWERED: dict[str, tuple[list[dict[str, Any]], int]] = {
    "tool call arguments": (
        [
            {
                **MESSAGE,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "write", "arguments": LONG},
                    }
                ],
            }
        ],
        len("write") + 4000,
    ),
    "legacy function_call": (
        [{**MESSAGE, "function_call": {"name": "write", "arguments": LONG}}],
        len("write") + 4000,
    ),
    "three choices": ([{**MESSAGE, "content": LONG}] * 3, 3 * 4000),
    "reasoning_content": ([{**MESSAGE, "reasoning_content": LONG, "content": "done"}], 4004),
    "reasoning": ([{**MESSAGE, "reasoning": LONG}], 4000),
    "refusal": ([{**MESSAGE, "refusal": LONG}], 4000),
}


def _completion(messages: list[dict[str, Any]]) -> dict[str, Any]:
    choices = [{"index": i, "message": m, "finish_reason": "stop"} for i, m in enumerate(messages)]
    return {**COMPLETION, "model": "model-a", "choices": choices}  # no usage block


@pytest.mark.parametrize("raw", [False, True], ids=["parsed", "with_raw_response"])
@pytest.mark.parametrize("kind", list(ANSWERED))
def test_all_a_chat_response_outputs_is_booked_without_usage(
    kind: str, raw: bool, otel: Otel
) -> None:
    messages, chars = ANSWERED[kind]
    body: dict[str, Any] = {"model": "model-a", "messages": ASK, "max_tokens": 1000}
    if kind == "three choices":
        body["n"] = 3
    with serve(FakeOpenAI(_completion(messages))) as api:
        client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
        chat = client.chat.completions.with_raw_response if raw else client.chat.completions
        one = _one_call(body, "openai", None, chars)
        booked = _under_budget(one, otel, lambda: chat.create(**body))
    # Before: booked at its request (n=3: and its first choice), all 10 were sent.
    assert len(api.requests) == 3
    assert booked == pytest.approx(3 * one)


def test_an_async_chat_response_without_usage_is_booked_at_its_tool_calls(otel: Otel) -> None:
    messages, chars = ANSWERED["tool call arguments"]
    body: dict[str, Any] = {"model": "model-a", "messages": ASK, "max_tokens": 1000}
    with serve(FakeOpenAI(_completion(messages))) as api:
        client = openai.AsyncOpenAI(base_url=api.url, api_key="k", max_retries=0)
        loop = asyncio.new_event_loop()
        try:
            one = _one_call(body, "openai", None, chars)
            booked = _under_budget(
                one, otel, lambda: loop.run_until_complete(client.chat.completions.create(**body))
            )
        finally:
            loop.run_until_complete(client.close())
            loop.close()
    assert len(api.requests) == 3
    assert booked == pytest.approx(3 * one)


@pytest.mark.parametrize("raw", [False, True], ids=["parsed", "with_raw_response"])
@pytest.mark.parametrize("n", [1, 3])
def test_all_a_completions_response_outputs_is_booked_without_usage(
    n: int, raw: bool, otel: Otel
) -> None:
    choices = [{"index": i, "text": LONG, "finish_reason": "stop"} for i in range(n)]
    answer = {"id": "c", "object": "text_completion", "created": 1, "model": "model-a"}
    body: dict[str, Any] = {"model": "model-a", "prompt": "write", "max_tokens": 1000, "n": n}
    with serve(FakeOpenAI({**answer, "choices": choices})) as api:
        client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
        completions = client.completions.with_raw_response if raw else client.completions
        one = _one_call(body, "openai", None, n * 4000)
        booked = _under_budget(one, otel, lambda: completions.create(**body))
    # Before: a completion's text was not read at all (1 choice too), all 10 were sent.
    assert len(api.requests) == 3
    assert booked == pytest.approx(3 * one)


# Responses: per kind, the output items and the characters they carry (a function
# call's arguments, as its stream's deltas: its name comes in no delta).
RESPONSE_ITEMS: dict[str, tuple[list[dict[str, Any]], int]] = {
    "message": (
        [
            {
                "type": "message",
                "id": "m",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": LONG, "annotations": []}],
            }
        ],
        4000,
    ),
    "function call": (
        [
            {
                "type": "function_call",
                "id": "fc",
                "call_id": "c",
                "name": "write",
                "arguments": LONG,
                "status": "completed",
            }
        ],
        4000,
    ),
    "reasoning summary and refusal": (
        [
            {
                "type": "reasoning",
                "id": "r",
                "summary": [{"type": "summary_text", "text": LONG}],
            },
            {
                "type": "message",
                "id": "m",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "refusal", "refusal": "no"}],
            },
        ],
        4002,
    ),
}


@pytest.mark.parametrize("raw", [False, True], ids=["parsed", "with_raw_response"])
@pytest.mark.parametrize("kind", list(RESPONSE_ITEMS))
def test_all_a_responses_response_outputs_is_booked_without_usage(
    kind: str, raw: bool, otel: Otel
) -> None:
    items, chars = RESPONSE_ITEMS[kind]
    answer = {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "status": "completed",
        "model": "model-a",
        "output": items,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }
    body: dict[str, Any] = {"model": "model-a", "input": "write", "max_output_tokens": 1000}
    with serve(FakeOpenAI(answer)) as api:
        client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
        responses = client.responses.with_raw_response if raw else client.responses
        one = _one_call(body, "openai", None, chars)
        booked = _under_budget(one, otel, lambda: responses.create(**body))
    # Before: only the parsed message's output_text was read; all 10 were sent otherwise.
    assert len(api.requests) == 3
    assert booked == pytest.approx(3 * one)


# Anthropic: per kind, the content blocks and the characters they carry (a tool's
# input as the JSON it was written in, as its stream's input_json_delta).
TOOL_INPUT = {"text": LONG}
CONTENT_BLOCKS: dict[str, tuple[list[dict[str, Any]], int]] = {
    "tool input": (
        [{"type": "tool_use", "id": "toolu_1", "name": "write", "input": TOOL_INPUT}],
        len(json.dumps(TOOL_INPUT)),
    ),
    "thinking": (
        [
            {"type": "thinking", "thinking": LONG, "signature": "s"},
            {"type": "text", "text": "done"},
        ],
        4004,
    ),
}


@pytest.mark.parametrize("raw", [False, True], ids=["parsed", "with_raw_response"])
@pytest.mark.parametrize("kind", list(CONTENT_BLOCKS))
def test_all_an_anthropic_response_outputs_is_booked_without_usage(
    kind: str, raw: bool, otel: Otel
) -> None:
    blocks, chars = CONTENT_BLOCKS[kind]
    answer = message("", input_tokens=0, output_tokens=0, model="model-a")
    del answer["usage"]
    answer["content"] = blocks
    body: dict[str, Any] = {"model": "model-a", "max_tokens": 1000, "messages": ASK}
    with serve_anthropic(FakeAnthropic(answer)) as api:
        client = anthropic.Anthropic(base_url=api.url, api_key="k", max_retries=0)
        messages = client.messages.with_raw_response if raw else client.messages
        one = _one_call(body, "anthropic", None, chars)
        booked = _under_budget(one, otel, lambda: messages.create(**body))
    # Before: booked at its request and its text blocks alone, all 10 were sent.
    assert len(api.requests) == 3
    assert booked == pytest.approx(3 * one)
