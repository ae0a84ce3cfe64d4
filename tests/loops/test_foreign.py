"""Other instrumentations' tool spans count for loop detection.

The "other instrumentation" here is a tracer of its own scope on the same real
SDK provider, writing the spans the GenAI conventions (``execute_tool``) and
OpenInference (``TOOL``) describe, with content captured. The limits processor
sees them like any library's spans. A real framework's spans are exercised in
tests/interop (the frameworks venv).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.trace import Status, StatusCode, Tracer

from otel_harness import Otel, loop_detections, make_otel
from techrevati.runtime import LoopDetectedError, LoopGuard, agent_session, tool_call
from techrevati.runtime.telemetry import semconv as sc
from techrevati.runtime.telemetry.limits.processor import ensure_limits_processor


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = make_otel()
    ensure_limits_processor(o.tracer_provider)
    yield o
    o.shutdown()


def library(otel: Otel) -> Tracer:
    return otel.tracer_provider.get_tracer("some.framework.instrumentation")


def semconv_tool(
    tracer: Tracer,
    name: str,
    arguments: dict[str, Any] | None,
    result: object,
    *,
    args_at_start: bool = False,
    fail: bool = False,
) -> None:
    attrs: dict[str, Any] = {sc.GEN_AI_OPERATION_NAME: "execute_tool", sc.GEN_AI_TOOL_NAME: name}
    text = json.dumps(arguments) if arguments is not None else None
    if args_at_start and text is not None:
        attrs[sc.GEN_AI_TOOL_CALL_ARGUMENTS] = text
    with tracer.start_as_current_span(f"execute_tool {name}", attributes=attrs) as span:
        if text is not None and not args_at_start:
            span.set_attribute(sc.GEN_AI_TOOL_CALL_ARGUMENTS, text)
        if fail:
            span.set_status(Status(StatusCode.ERROR))
        elif result is not None:
            span.set_attribute(sc.GEN_AI_TOOL_CALL_RESULT, json.dumps(result))


def assert_model_refusal(error: LoopDetectedError, why: str) -> None:
    """A model call's refusal says so, why, and what lifts it; never a tool call's advice.

    A probe: model call 4 failed with "tool 'lookup' is looping ... so this call was
    refused before it ran; use the result, change the arguments, or finish with an
    answer", advice a model call that never ran cannot follow.
    """
    text = str(error)
    assert text.startswith("model call refused, before it ran: tool 'lookup' is looping (repeat)")
    assert why in text
    assert "until a tool call that breaks the loop" in text
    assert "use the result" not in text and "this call was refused" not in text
    assert (error.refused, error.pattern, error.tool, error.repeats) == (
        "model",
        "repeat",
        "lookup",
        3,
    )
    again = pickle.loads(pickle.dumps(error))
    assert (str(again), again.refused, again.asked_again) == (text, "model", error.asked_again)


detections = loop_detections


def test_foreign_tool_spans_are_detected(otel: Otel) -> None:
    tracer = library(otel)
    with agent_session("agent", **otel.kwargs()):
        for _ in range(4):
            # Key order differs from our canonical form: still one fingerprint.
            semconv_tool(tracer, "lookup", {"b": 2, "a": 1}, {"answer": 42})
    assert [(d[sc.LOOP_PATTERN], d[sc.GEN_AI_TOOL_NAME]) for d in detections(otel)] == [
        ("repeat", "lookup")
    ]


def test_openinference_tool_spans_are_detected(otel: Otel) -> None:
    tracer = library(otel)
    with agent_session("agent", **otel.kwargs()):
        for _ in range(3):
            with tracer.start_as_current_span(
                "lookup",
                attributes={
                    "openinference.span.kind": "TOOL",
                    "tool.name": "lookup",
                    "input.value": '{"q": "x"}',
                    "output.value": "same",
                },
            ):
                pass
    assert len(detections(otel)) == 1


def test_a_foreign_loop_is_refused_at_the_next_start_that_carries_arguments(otel: Otel) -> None:
    tracer = library(otel)
    with agent_session("agent", loop_guard=LoopGuard(on_loop="raise"), **otel.kwargs()):
        for _ in range(3):
            semconv_tool(tracer, "lookup", {"q": "x"}, "same")
        # Arguments only at the end: the start cannot be refused, the call runs.
        semconv_tool(tracer, "lookup", {"q": "x"}, "same")
        with pytest.raises(LoopDetectedError) as caught:
            semconv_tool(tracer, "lookup", {"q": "x"}, "same", args_at_start=True)
        assert caught.value.tool == "lookup"
        started = [s.name for s in otel.spans("execute_tool")]
        assert len(started) == 4  # the refused span never started

        # Our own door refuses the same loop: same name, same arguments.
        ran = []

        @tool_call("lookup")
        def lookup(q: str) -> str:
            ran.append(q)
            return "same"

        with pytest.raises(LoopDetectedError):
            lookup(q="x")
        assert ran == []


def test_a_foreign_loop_refuses_the_sessions_next_model_call(otel: Otel) -> None:
    """Most producers record a tool's arguments at its end: the next model call is the door."""
    tracer = library(otel)
    ran: list[str] = []

    def model() -> str:
        ran.append("model")
        return "call lookup again"

    with agent_session("agent", loop_guard=LoopGuard(on_loop="raise"), **otel.kwargs()) as session:
        for _ in range(3):
            session.run_turn(model, model="m")
            semconv_tool(tracer, "lookup", {"q": "x"}, "same")
        for _ in range(2):  # every further call, like a cap (frameworks retry)
            with pytest.raises(LoopDetectedError) as caught:
                session.run_turn(model, model="m")
        assert ran == ["model"] * 3  # refused before the model was called
        assert (caught.value.pattern, caught.value.tool) == ("repeat", "lookup")
        assert_model_refusal(caught.value, "another instrumentation's tool spans")
        # A tool call that does not extend the loop lifts the refusal.
        semconv_tool(tracer, "lookup", {"q": "y"}, "other")
        session.run_turn(model, model="m")
        assert session._iteration_count == 4
    hits = [
        dict(e.attributes or {})
        for s in otel.spans("invoke_agent")
        for e in s.events
        if e.name == sc.EVENT_LIMIT_HIT
    ]
    assert [h[sc.LIMIT_KIND] for h in hits] == ["loop"]  # one limit hit per session


def test_a_foreign_loop_under_warn_refuses_nothing(otel: Otel) -> None:
    tracer = library(otel)
    with agent_session("agent", **otel.kwargs()) as session:
        for _ in range(5):
            session.run_turn(lambda: "again", model="m")
            semconv_tool(tracer, "lookup", {"q": "x"}, "same", args_at_start=True)
        assert session._iteration_count == 5
    assert len(detections(otel)) == 1


def test_foreign_spans_without_content_or_that_failed_never_count(otel: Otel) -> None:
    tracer = library(otel)
    with agent_session("agent", loop_guard=LoopGuard(on_loop="raise"), **otel.kwargs()):
        for _ in range(6):
            semconv_tool(tracer, "lookup", None, None)  # content capture off: unknown
        for _ in range(6):
            semconv_tool(tracer, "fetch", {"u": 1}, None, fail=True)  # retries after errors
        for _ in range(6):
            semconv_tool(tracer, "search", {"q": "x"}, None)  # no result recorded
    assert detections(otel) == []


def test_a_foreign_span_inside_our_tool_is_the_same_call(otel: Otel) -> None:
    tracer = library(otel)

    @tool_call("lookup")
    def lookup(q: str) -> str:
        # A framework's own span of this very call, with the same fingerprint.
        semconv_tool(tracer, "lookup", {"q": q}, "same")
        return "same"

    with agent_session("agent", loop_guard=LoopGuard(on_loop="raise"), **otel.kwargs()):
        lookup("x")
        lookup("x")  # two calls, not four: no loop yet
        lookup("x")
        with pytest.raises(LoopDetectedError):
            lookup("x")


def test_our_tool_calls_refusal_refuses_the_model_calls_a_framework_would_make_next(
    otel: Otel,
) -> None:
    # The Anthropic SDK's tool runner around a @tool_call: it hands each refusal back
    # to the model as the tool's result, and the model asks again. A probe: 3 tool
    # bodies, then 27 refused tool calls and 30 model calls, stopped only by the cap.
    ran: list[str] = []

    @tool_call()
    def lookup(q: str) -> str:
        ran.append("tool")
        return "same"

    def model() -> str:
        ran.append("model")
        return "call lookup again"

    with agent_session("agent", loop_guard=LoopGuard(on_loop="raise"), **otel.kwargs()) as session:
        with pytest.raises(LoopDetectedError) as caught:
            for _ in range(10):
                session.run_turn(model, model="m")
                try:
                    lookup(q="same")
                except LoopDetectedError as refused:
                    error = refused  # the runner: "Error: ..." as the tool's result
        assert (error.tool, error.refused) == ("lookup", "tool")
        assert_model_refusal(caught.value, "asked for again after that call was refused")
        # The first refusal leaves the model free to change course; asked again, the
        # next model call is refused.
        assert ran == ["model", "tool"] * 3 + ["model", "model"]
        # A tool call that does not extend the loop lifts the refusal.
        lookup(q="other")
        session.run_turn(model, model="m")
        assert session._iteration_count == 6


def test_the_anthropic_sdks_tool_spans_are_compared(otel: Otel) -> None:
    # Its tool runner's spans record the result as anthropic.tool_result.content, not
    # gen_ai.tool.call.result: they were never compared (a probe: 30 identical tool
    # calls and 30 model calls, nothing detected).
    tracer = otel.tracer_provider.get_tracer("com.anthropic.sdk.python")

    def sdk_tool() -> None:
        attributes = {
            sc.GEN_AI_OPERATION_NAME: "execute_tool",
            sc.GEN_AI_TOOL_NAME: "lookup",
            sc.GEN_AI_TOOL_CALL_ARGUMENTS: '{"q": "same"}',
        }
        with tracer.start_as_current_span("execute_tool lookup", attributes=attributes) as span:
            span.set_attribute("anthropic.tool_result.content", "the same answer")

    with agent_session("agent", loop_guard=LoopGuard(on_loop="raise"), **otel.kwargs()) as session:
        for _ in range(3):
            session.run_turn(lambda: "call lookup", model="m")
            sdk_tool()
        with pytest.raises(LoopDetectedError):
            session.run_turn(lambda: "call lookup", model="m")
    assert len(detections(otel)) == 1


def openinference_tool(tracer: Tracer, fn: Any, name: str, *, between: bool = False) -> Any:
    """What an instrumented framework does around a tool it runs (``between``: with a
    span of its own between its tool span and the function)."""

    def run(**kwargs: Any) -> Any:
        attrs = {"openinference.span.kind": "TOOL", "tool.name": name}
        with tracer.start_as_current_span(name, attributes=attrs) as span:
            span.set_attribute("input.value", json.dumps(kwargs))
            if between:
                with tracer.start_as_current_span("retry wrapper"):
                    out = fn(**kwargs)
            else:
                out = fn(**kwargs)
            span.set_attribute("output.value", out)
            return out

    return run


@pytest.mark.parametrize("between", [False, True])
def test_our_tool_inside_a_framework_tool_span_is_one_call(otel: Otel, between: bool) -> None:
    # A probe: plan(); fetch(page=p) for pages 1..5, the framework's TOOL span around
    # @tool_call functions, was refused after pages [1, 2]: each call counted twice, so
    # every page's result looked seen already and the plan's three re-reads a loop.
    tracer = library(otel)

    @tool_call()
    def read_plan() -> str:
        return "1. list pages 2. summarise"

    @tool_call()
    def fetch(page: int) -> str:
        return f"content of page {page}"

    plan = openinference_tool(tracer, read_plan, "read_plan", between=between)
    page = openinference_tool(tracer, fetch, "fetch", between=between)
    done = []
    with agent_session("reader", loop_guard=LoopGuard(on_loop="raise"), **otel.kwargs()):
        for p in range(1, 6):
            plan()
            page(page=p)
            done.append(p)
    assert done == [1, 2, 3, 4, 5]
    with agent_session("reader", **otel.kwargs()):  # warn: no false report either
        for p in range(1, 6):
            plan()
            page(page=p)
    assert detections(otel) == []
    # Still one call each: the same call repeated is a loop at the same count as ours alone.
    with agent_session("reader", loop_guard=LoopGuard(on_loop="raise"), **otel.kwargs()):
        for _ in range(3):
            page(page=1)
        with pytest.raises(LoopDetectedError):
            page(page=1)
