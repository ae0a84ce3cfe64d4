"""recognise: which spans are model calls, and what they used, across vocabularies.

The attribute sets are the ones the real producers emitted in the interop
scenarios (see test_support_table.py, which drives the producers themselves).
"""

from __future__ import annotations

import logging

import pytest

from techrevati.runtime import UsageSnapshot
from techrevati.runtime.telemetry.readings import recognise
from techrevati.runtime.telemetry.readings.recognise import CallReading, classify_start, read_call

OPENINFERENCE_CHAT = {
    "openinference.span.kind": "LLM",
    "llm.request.model_name": "claude-x",
    "llm.model_name": "claude-x-2026",
    "llm.provider": "anthropic",
    "llm.system": "anthropic",
    "llm.token_count.prompt": 120,
    "llm.token_count.completion": 30,
    "llm.token_count.prompt_details.cache_read": 100,
    "llm.token_count.completion_details.reasoning": 10,
}


def test_openinference_llm_span_is_a_model_call_at_start_and_reads_exactly() -> None:
    assert classify_start("messages.create", {"openinference.span.kind": "LLM"}, None)
    assert classify_start("embed", {"openinference.span.kind": "EMBEDDING"}, None)
    assert not classify_start("Agent workflow", {"openinference.span.kind": "CHAIN"}, None)
    assert not classify_start("helper", {"openinference.span.kind": "AGENT"}, None)
    reading = read_call("messages.create", OPENINFERENCE_CHAT, "openinference.x")
    assert reading == CallReading(
        model="claude-x",
        provider="anthropic",
        usage=UsageSnapshot(input_tokens=20, output_tokens=30, cache_read_tokens=100),
        reasoning_tokens=10,
        cache_reported=True,
    )


def test_openinference_cache_write_and_model_fallbacks() -> None:
    attrs = {
        "openinference.span.kind": "LLM",
        "llm.model_name": "m",
        "llm.system": "openai",
        "llm.token_count.prompt": 50,
        "llm.token_count.completion": 5,
        "llm.token_count.prompt_details.cache_write": 40,
    }
    reading = read_call("ChatCompletion", attrs)
    assert reading is not None
    assert (reading.model, reading.provider) == ("m", "openai")
    assert reading.usage == UsageSnapshot(input_tokens=10, output_tokens=5, cache_write_tokens=40)


def test_genai_reasoning_and_older_cache_creation_spelling() -> None:
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-x",
        "gen_ai.system": "openai",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 200,
        "gen_ai.usage.cache_read.input_tokens": 300,
        "gen_ai.usage.cache_creation.input_tokens": 100,
        "gen_ai.usage.reasoning.output_tokens": 150,
    }
    reading = read_call("chat gpt-x", attrs, "opentelemetry.instrumentation.genai.openai")
    assert reading is not None
    assert reading.usage == UsageSnapshot(
        input_tokens=600, output_tokens=200, cache_write_tokens=100, cache_read_tokens=300
    )
    assert (reading.provider, reading.reasoning_tokens) == ("openai", 150)


def test_openllmetry_spellings_and_late_response_span() -> None:
    attrs = {
        "llm.request.type": "chat",
        "gen_ai.request.model": "gpt-x",
        "gen_ai.usage.prompt_tokens": 120,
        "gen_ai.usage.completion_tokens": 30,
        "gen_ai.usage.cache_read_input_tokens": 100,
        "gen_ai.usage.reasoning_tokens": 10,
    }
    assert classify_start("openai.chat", {"llm.request.type": "chat"}, None)
    assert not classify_start("openai.rerank", {"llm.request.type": "rerank"}, None)
    reading = read_call("openai.chat", attrs)
    assert reading is not None and reading.usage == UsageSnapshot(20, 30, 0, 100)
    assert reading.reasoning_tokens == 10
    # OpenLLMetry's Responses span starts after the request returned and names its
    # operation at the end: not admissible at start, but booked from its end.
    scope = "opentelemetry.instrumentation.openai.v1"
    assert not classify_start("openai.response", {}, scope)
    ended = {"gen_ai.operation.name": "chat", **attrs}
    assert read_call("openai.response", ended, scope) is not None
    assert read_call("openai.response", {"gen_ai.usage.input_tokens": 5}, scope) is not None


def test_roll_ups_and_tools_are_never_model_calls() -> None:
    usage = {"gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 1}
    assert (
        read_call("invoke_agent writer", {"gen_ai.operation.name": "invoke_agent", **usage}) is None
    )
    assert read_call("execute_tool x", {"gen_ai.operation.name": "execute_tool"}) is None
    assert read_call("anthropic.messages.count_tokens", {"gen_ai.request.model": "c"}) is None
    assert read_call("turn", {"openinference.span.kind": "CHAIN", **usage}) is None
    # The operation attribute wins over a name that looks like a model call.
    assert not classify_start("chat x", {"gen_ai.operation.name": "invoke_agent"}, None)
    assert classify_start("chat x", {}, None)


def test_start_reading_has_model_but_no_usage() -> None:
    reading = read_call("chat m", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"})
    assert reading == CallReading(model="m", provider="", usage=None)


def test_non_numeric_token_values_are_ignored() -> None:
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.usage.input_tokens": "120",
        "gen_ai.usage.output_tokens": True,
        "gen_ai.usage.cache_read.input_tokens": -5,
    }
    reading = read_call("chat", attrs)
    assert reading is not None and reading.usage is None
    attrs["gen_ai.usage.input_tokens"] = 120
    reading = read_call("chat", attrs)
    assert reading is not None and reading.usage == UsageSnapshot(120, 0, 0, 0)


def test_openlit_anthropic_adds_cache_back_by_scope() -> None:
    # OpenLIT copies Anthropic's input_tokens, which leaves cache reads out. With more
    # plain input than cache, only the scope tells: 500 plain + 100 read, not 400 + 100.
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-x",
        "gen_ai.usage.input_tokens": 500,
        "gen_ai.usage.output_tokens": 30,
        "gen_ai.usage.cache_read.input_tokens": 100,
        "gen_ai.usage.cache_creation.input_tokens": 0,
    }
    by_scope = read_call("chat claude-x", attrs, "openlit.instrumentation.anthropic")
    assert by_scope is not None and by_scope.usage == UsageSnapshot(500, 30, 0, 100)
    other = read_call("chat claude-x", attrs, "some.other.scope")
    assert other is not None and other.usage == UsageSnapshot(400, 30, 0, 100)
    # OpenLIT with OpenAI follows the convention: nothing is added.
    openai_attrs = {**attrs, "gen_ai.provider.name": "openai"}
    as_openai = read_call("chat x", openai_attrs, "openlit.instrumentation.openai")
    assert as_openai is not None and as_openai.usage == UsageSnapshot(400, 30, 0, 100)


def test_cache_counts_above_input_mean_input_left_them_out() -> None:
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.usage.input_tokens": 20,
        "gen_ai.usage.output_tokens": 30,
        "gen_ai.usage.cache_read.input_tokens": 100,
    }
    reading = read_call("chat", attrs, "anything")
    assert reading is not None and reading.usage == UsageSnapshot(20, 30, 0, 100)


def test_no_cache_producers_are_priced_as_reported_and_warned_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recognise, "_warned_scopes", set())
    scope = "opentelemetry.instrumentation.openai_v2"
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.usage.input_tokens": 120,
        "gen_ai.usage.output_tokens": 30,
    }
    with caplog.at_level(logging.WARNING, logger="techrevati.runtime.telemetry"):
        first = read_call("chat", attrs, scope)
        second = read_call("chat", attrs, scope)
    assert first is not None and second is not None
    assert first.usage == UsageSnapshot(120, 30, 0, 0)
    assert first.cache_reported is False
    # Reading says nothing: whether this coarse reading is the only one of its call
    # is known where it is booked, which calls warn_no_cache once per scope.
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="techrevati.runtime.telemetry"):
        recognise.warn_no_cache(scope)
        recognise.warn_no_cache(scope)
        recognise.warn_no_cache("openinference.instrumentation.openai_agents")
    warnings = [r.getMessage() for r in caplog.records if "cache-token count" in r.getMessage()]
    assert len(warnings) == 2
    assert scope in warnings[0] and "openai_agents" in warnings[1]
    # The same scope reporting a cache count reports it.
    cached = read_call("chat", {**attrs, "gen_ai.usage.cache_read.input_tokens": 100}, scope)
    assert cached is not None and cached.cache_reported


def test_the_reading_with_cache_detail_is_the_exact_one() -> None:
    exact = UsageSnapshot(input_tokens=20, output_tokens=30, cache_read_tokens=100)
    coarse = UsageSnapshot(input_tokens=120, output_tokens=30)
    assert recognise.more_exact(exact, coarse) is True
    assert recognise.more_exact(coarse, exact) is False
    assert recognise.more_exact(coarse, None) is True  # a reading beats none
    assert recognise.more_exact(None, coarse) is False
    # Equal detail: the reading already chosen stays.
    assert recognise.more_exact(coarse, coarse) is False
    assert recognise.more_exact(exact, exact) is False


def test_openllmetry_langchain_model_spans_are_known_at_start() -> None:
    scope = "opentelemetry.instrumentation.langchain"
    # It starts them with no attributes; name suffix and scope say what they are.
    assert recognise.classify_start("ChatOpenAI.chat", {}, scope) is True
    assert recognise.classify_start("OpenAI.completion", {}, scope) is True
    assert recognise.classify_start("RunnableSequence.task", {}, scope) is False
    assert recognise.classify_start("LangGraph.workflow", {}, scope) is False
    # The same name from another producer is not enough.
    assert recognise.classify_start("ChatOpenAI.chat", {}, "some.other.scope") is False


def test_scope_less_helpers_the_processor_calls_read_openinference() -> None:
    assert recognise.classify_start("messages.create", OPENINFERENCE_CHAT, None)
    assert recognise.model_from_attributes(OPENINFERENCE_CHAT) == "claude-x"
    assert recognise.usage_from_attributes(OPENINFERENCE_CHAT) == UsageSnapshot(20, 30, 0, 100)
    assert recognise.usage_from_attributes({"llm.model_name": "m"}) is None


def test_read_span_takes_name_attributes_and_scope_from_an_sdk_span() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("openlit.instrumentation.anthropic")
    span = tracer.start_span(
        "chat claude-x",
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-x",
            "gen_ai.usage.input_tokens": 500,
            "gen_ai.usage.output_tokens": 30,
            "gen_ai.usage.cache_read.input_tokens": 100,
        },
    )
    span.end()
    reading = recognise.read_span(span)
    assert reading is not None
    assert reading.usage == UsageSnapshot(500, 30, 0, 100)  # the scope's quirk applied
