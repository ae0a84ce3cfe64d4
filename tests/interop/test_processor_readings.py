"""What the limits processor must do with the spans recognise reads (issue 12, points 2 and 4).

Real OpenTelemetry SDK and our processor; the "instrumentations" are spans
started with the scope names and attributes the real producers use (the
producers themselves run in test_support_table.py).

Every case here runs through the processor as it is; none waits on anything.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from otel_harness import Otel, make_otel
from techrevati.runtime import (
    MaxIterationsExceededError,
    ModelPricing,
    Orchestrator,
    agent_session,
    agent_turn,
    register_pricing,
)

PRICES = ModelPricing(100.0, 200.0, cache_read_per_million=10.0)
ONE_CALL = 0.009
USAGE = {
    "gen_ai.usage.input_tokens": 120,
    "gen_ai.usage.output_tokens": 30,
    "gen_ai.usage.cache_read.input_tokens": 100,
}
OPENLLMETRY_OPENAI = "opentelemetry.instrumentation.openai.v1"
OPENLLMETRY_ANTHROPIC = "opentelemetry.instrumentation.anthropic"
ANTHROPIC_SDK = "com.anthropic.sdk.python"
OPENINFERENCE_ANTHROPIC = "openinference.instrumentation.anthropic"


@pytest.fixture
def otel() -> Iterator[Otel]:
    register_pricing("m", PRICES)
    o = make_otel()
    yield o
    o.shutdown()


def _late_response_span(otel: Otel) -> None:
    """OpenLLMetry's Responses span: starts bare after the request, learns everything at end."""
    tracer = otel.tracer_provider.get_tracer(OPENLLMETRY_OPENAI)
    span = tracer.start_span("openai.response")
    span.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": "m", **USAGE})
    span.end()


def test_span_known_as_model_call_only_at_end_is_booked_at_end(otel: Otel) -> None:
    orch = Orchestrator(role="r", phase="p", **otel.kwargs())
    with orch.session() as session:
        _late_response_span(otel)
    assert session.tracker.turn_count == 1
    assert session.tracker.total_cost() == pytest.approx(ONE_CALL, rel=1e-12)


def test_late_known_span_is_booked_even_when_the_cap_is_reached(otel: Otel) -> None:
    orch = Orchestrator(role="r", phase="p", max_iterations=1, **otel.kwargs())
    with orch.session() as session:
        _late_response_span(otel)
        _late_response_span(otel)  # must not raise: it started before anyone knew
    assert session.tracker.turn_count == 2


def _sibling_pair(otel: Otel, outer_scope: str, inner_scope: str) -> None:
    """OpenLLMetry's Anthropic span is not made current, so the SDK's span is its sibling."""
    outer = otel.tracer_provider.get_tracer(outer_scope).start_span(
        "anthropic.chat", attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}
    )
    inner = otel.tracer_provider.get_tracer(inner_scope).start_span(
        "anthropic.messages.create",
        attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"},
    )
    inner.set_attributes(USAGE)
    inner.end()
    outer.set_attributes(USAGE)
    outer.end()


def test_overlapping_sibling_model_spans_count_once(otel: Otel) -> None:
    orch = Orchestrator(role="r", phase="p", **otel.kwargs())
    with orch.session() as session:
        _sibling_pair(otel, OPENLLMETRY_ANTHROPIC, ANTHROPIC_SDK)
    assert session.tracker.turn_count == 1
    assert session._iteration_count == 1
    assert session.tracker.total_cost() == pytest.approx(ONE_CALL, rel=1e-12)


def test_sibling_span_of_an_admitted_call_is_not_refused(otel: Otel) -> None:
    orch = Orchestrator(role="r", phase="p", max_iterations=1, **otel.kwargs())
    refused: Exception | None = None
    with orch.session() as session:
        try:
            _sibling_pair(otel, OPENLLMETRY_ANTHROPIC, ANTHROPIC_SDK)
        except Exception as exc:
            refused = exc
    assert refused is None
    assert session.tracker.turn_count == 1


def test_sequential_model_spans_are_separate_calls(otel: Otel) -> None:
    # Not overlapping: two calls, whatever the core does about siblings.
    orch = Orchestrator(role="r", phase="p", **otel.kwargs())
    tracer = otel.tracer_provider.get_tracer(ANTHROPIC_SDK)
    with orch.session() as session:
        for _ in range(2):
            span = tracer.start_span(
                "anthropic.messages.create",
                attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"},
            )
            span.set_attributes(USAGE)
            span.end()
    assert session.tracker.turn_count == 2
    assert session.tracker.total_cost() == pytest.approx(2 * ONE_CALL, rel=1e-12)


def test_openinference_span_is_admitted_and_priced(otel: Otel) -> None:
    orch = Orchestrator(role="r", phase="p", max_iterations=1, **otel.kwargs())
    tracer = otel.tracer_provider.get_tracer(OPENINFERENCE_ANTHROPIC)
    attrs = {"openinference.span.kind": "LLM", "llm.request.model_name": "m"}
    refused = None
    with orch.session() as session:
        for _ in range(2):
            try:
                span = tracer.start_span("messages.create", attributes=attrs)
            except Exception as exc:  # the cap refuses the second call at its start
                refused = exc
                break
            span.set_attributes(
                {
                    "llm.token_count.prompt": 120,
                    "llm.token_count.completion": 30,
                    "llm.token_count.prompt_details.cache_read": 100,
                }
            )
            span.end()
    assert type(refused).__name__ == "MaxIterationsExceededError"
    assert session.tracker.turn_count == 1
    assert session.tracker.total_cost() == pytest.approx(ONE_CALL, rel=1e-12)


def test_nested_library_spans_inside_our_turn_count_once(otel: Otel) -> None:
    outer_tracer = otel.tracer_provider.get_tracer(OPENINFERENCE_ANTHROPIC)
    inner_tracer = otel.tracer_provider.get_tracer(ANTHROPIC_SDK)

    @agent_turn("m")
    def turn() -> None:
        with outer_tracer.start_as_current_span(
            "messages.create", attributes={"openinference.span.kind": "LLM"}
        ) as outer:
            with inner_tracer.start_as_current_span(
                "anthropic.messages.create",
                attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"},
            ) as inner:
                inner.set_attributes(USAGE)
            outer.set_attributes({"llm.token_count.prompt": 120, "llm.token_count.completion": 30})

    with agent_session("s", tracer_provider=otel.tracer_provider) as session:
        turn()
    assert session._iteration_count == 1
    assert session.tracker.turn_count == 1


def test_overlapping_library_siblings_inside_our_turn_count_once(otel: Otel) -> None:
    @agent_turn("m")
    def turn() -> None:
        _sibling_pair(otel, OPENLLMETRY_ANTHROPIC, ANTHROPIC_SDK)

    with agent_session("s", tracer_provider=otel.tracer_provider) as session:
        turn()
    assert session._iteration_count == 1
    assert session.tracker.turn_count == 1


def test_openlit_anthropic_input_is_priced_with_its_cache_added_back(otel: Otel) -> None:
    # 500 plain input tokens, 100 cache reads: OpenLIT reports input_tokens=500, which
    # only its scope reveals as leaving the cache out (500 > 100, no heuristic can tell).
    tracer = otel.tracer_provider.get_tracer("openlit.instrumentation.anthropic")
    orch = Orchestrator(role="r", phase="p", **otel.kwargs())
    with orch.session() as session:
        span = tracer.start_span(
            "chat m",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "anthropic",
                "gen_ai.request.model": "m",
            },
        )
        span.set_attributes(
            {
                "gen_ai.usage.input_tokens": 500,
                "gen_ai.usage.output_tokens": 30,
                "gen_ai.usage.cache_read.input_tokens": 100,
            }
        )
        span.end()
    _, usage = session.tracker.turns[0]
    assert (usage.input_tokens, usage.cache_read_tokens) == (500, 100)


# --- issue 21: LangChain's late-known spans, and two readings of one call -------------

OPENINFERENCE_LANGCHAIN = "openinference.instrumentation.langchain"
OPENINFERENCE_SMOLAGENTS = "openinference.instrumentation.smolagents"
GENAI_OPENAI = "opentelemetry.instrumentation.genai.openai"
LATE_LLM = {
    "openinference.span.kind": "LLM",
    "llm.model_name": "m",
    "llm.token_count.prompt": 120,
    "llm.token_count.completion": 30,
    "llm.token_count.prompt_details.cache_read": 100,
}


def _client_span(otel: Otel, usage: dict[str, int] | None = None) -> None:
    span = otel.tracer_provider.get_tracer(GENAI_OPENAI).start_span(
        "chat m", attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}
    )
    span.set_attributes(usage if usage is not None else USAGE)
    span.end()


def test_late_langchain_span_is_the_call_its_client_span_admitted(otel: Otel) -> None:
    # OpenInference's LangChain span starts bare, is not made current (so the client
    # span is no child of it) and learns it is an LLM span at its end.
    orch = Orchestrator(role="r", phase="p", max_iterations=2, **otel.kwargs())
    with orch.session() as session:
        for _ in range(2):
            late = otel.tracer_provider.get_tracer(OPENINFERENCE_LANGCHAIN).start_span("ChatOpenAI")
            _client_span(otel)
            late.set_attributes(LATE_LLM)
            late.end()
    # Two requests, two calls (not four), each priced once.
    assert session.tracker.turn_count == 2
    assert session._iteration_count == 2
    assert session.tracker.total_cost() == pytest.approx(2 * ONE_CALL, rel=1e-12)


def test_late_span_of_a_refused_request_is_no_call(otel: Otel) -> None:
    from opentelemetry.trace import Status, StatusCode

    orch = Orchestrator(role="r", phase="p", max_iterations=1, **otel.kwargs())
    with orch.session() as session:
        _client_span(otel)
        late = otel.tracer_provider.get_tracer(OPENINFERENCE_LANGCHAIN).start_span("ChatOpenAI")
        with pytest.raises(MaxIterationsExceededError):
            _client_span(otel)  # the client span refuses the request at its start
        late.set_attributes({"openinference.span.kind": "LLM", "llm.model_name": "m"})
        late.set_status(Status(StatusCode.ERROR, "refused"))
        late.end()
    assert session._iteration_count == 1
    assert session.tracker.turn_count == 1


def test_a_refused_runs_late_span_leaves_a_sibling_runs_call_to_its_own_span(
    otel: Otel,
) -> None:
    # LangGraph abatch under OpenInference's LangChain instrumentation: two runs' late
    # spans overlap; run B's request ran and was booked while run A's was refused. A's
    # failed span took B's call, so B's own span found none and counted it again (a
    # probe: 5 calls booked for 4 requests in 2 of 8 runs).
    from opentelemetry.trace import Status, StatusCode

    tracer = otel.tracer_provider.get_tracer(OPENINFERENCE_LANGCHAIN)
    with agent_session("r", budget_usd=10 * ONE_CALL, enforce_budget=True, **otel.kwargs()) as s:
        late_a = tracer.start_span("ChatOpenAI")
        late_b = tracer.start_span("ChatOpenAI")
        late_c = tracer.start_span("ChatOpenAI")
        _client_span(otel)  # run B's request: admitted and booked
        # Run C's request, admitted and still in flight when run A's span fails.
        in_flight = otel.tracer_provider.get_tracer(GENAI_OPENAI).start_span(
            "chat m", attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}
        )
        for late in (late_a,):  # run A's refused request: no call
            late.set_attributes({"openinference.span.kind": "LLM", "llm.model_name": "m"})
            late.set_status(Status(StatusCode.ERROR, "refused"))
            late.end()
        in_flight.set_attributes(USAGE)
        in_flight.end()
        for late in (late_b, late_c):
            late.set_attributes(LATE_LLM)
            late.end()
    assert (s._iteration_count, s.tracker.turn_count) == (2, 2)
    assert s.tracker.total_cost() == pytest.approx(2 * ONE_CALL, rel=1e-12)


def test_a_model_span_that_names_no_model_at_its_start_reserves_what_calls_cost(
    otel: Otel,
) -> None:
    # OpenLLMetry's LangChain spans name their model only later: concurrent runs'
    # calls were admitted reserving nothing and all passed a nearly spent budget
    # (LangGraph abatch: 6 requests under a budget of 3.5 calls). Once the session
    # knows what a call costs, an unnamed call reserves the costliest it has seen.
    with agent_session("r", budget_usd=10 * ONE_CALL, enforce_budget=True, **otel.kwargs()) as s:
        _client_span(otel)  # learns: a call of m costs ONE_CALL
        unnamed = otel.tracer_provider.get_tracer(OPENLLMETRY_OPENAI).start_span(
            "chat", attributes={"gen_ai.operation.name": "chat"}
        )
        assert s._ledger.reserved_nano == round(ONE_CALL * 1e9)
        unnamed.set_attributes({"gen_ai.request.model": "m", **USAGE})
        unnamed.end()
        assert s._ledger.reserved_nano == 0
    assert s.tracker.total_cost() == pytest.approx(2 * ONE_CALL, rel=1e-12)


def _framework_call(otel: Otel, inner: bool) -> None:
    """smolagents + OpenInference: a model span without cache counts, the client's inside."""
    tracer = otel.tracer_provider.get_tracer(OPENINFERENCE_SMOLAGENTS)
    with tracer.start_as_current_span(
        "OpenAIModel.generate", attributes={"openinference.span.kind": "LLM"}
    ) as outer:
        if inner:
            _client_span(otel)
        outer.set_attributes(
            {
                "llm.model_name": "m",
                "llm.token_count.prompt": 120,
                "llm.token_count.completion": 30,
            }
        )


def test_the_exact_reading_wins_over_its_framework_span(
    otel: Otel, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from techrevati.runtime.telemetry.readings import recognise

    monkeypatch.setattr(recognise, "_warned_scopes", set())
    orch = Orchestrator(role="r", phase="p", **otel.kwargs())
    log = caplog.at_level(logging.WARNING, logger="techrevati.runtime.telemetry")
    with log, orch.session() as session:
        _framework_call(otel, inner=True)
        _framework_call(otel, inner=True)
    # Priced with the cache reads the client span reported, not at the full input rate.
    assert session.tracker.turn_count == 2
    assert session.tracker.total_cost() == pytest.approx(2 * ONE_CALL, rel=1e-12)
    assert not [r for r in caplog.records if "cache-token count" in r.getMessage()]


def test_a_coarse_only_reading_is_booked_and_warned_about_once(
    otel: Otel, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from techrevati.runtime.telemetry.readings import recognise

    monkeypatch.setattr(recognise, "_warned_scopes", set())
    orch = Orchestrator(role="r", phase="p", **otel.kwargs())
    log = caplog.at_level(logging.WARNING, logger="techrevati.runtime.telemetry")
    with log, orch.session() as session:
        _framework_call(otel, inner=False)
        _framework_call(otel, inner=False)
    # 120 input tokens at the full rate: $0.012 + $0.006 a call.
    assert session.tracker.total_cost() == pytest.approx(2 * 0.018, rel=1e-12)
    warned = [r.getMessage() for r in caplog.records if "cache-token count" in r.getMessage()]
    assert len(warned) == 1 and OPENINFERENCE_SMOLAGENTS in warned[0]
