"""Names we create are bounded where they are made; our warnings name the user's line.

Real SDK pipelines in memory, the real openai client against a local stand-in of
its API (the only stand-in), real threads.
"""

from __future__ import annotations

import ast
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import openai
import pytest

from fake_openai import FakeOpenAI, instrumented_openai, serve
from otel_harness import Otel
from techrevati.runtime import Orchestrator
from techrevati.runtime.decorators import agent_session, agent_turn, tool_call
from techrevati.runtime.telemetry.calls.labels import NAME_LIMIT, bounded_name
from techrevati.runtime.usage_tracking import UsageSnapshot

HUGE = "r" * 10_000_000  # 10 MB
SRC = Path(__file__).resolve().parents[2] / "src" / "techrevati" / "runtime"


def _label_values(otel: Otel) -> list[str]:
    data = otel.reader.get_metrics_data()
    assert data is not None
    return [
        value
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        for point in metric.data.data_points
        for value in (point.attributes or {}).values()
        if isinstance(value, str)
    ]


def test_the_bound() -> None:
    assert NAME_LIMIT == 256
    assert bounded_name("writer") == "writer"
    assert bounded_name("x" * 256) == "x" * 256
    cut = bounded_name(HUGE)
    assert len(cut) == 256 and cut.endswith("…") and cut.startswith("r" * 255)


def test_a_10_mb_role_model_and_tool_make_bounded_names(otel: Otel) -> None:
    @tool_call(HUGE + "-tool")
    def lookup() -> str:
        return "found"

    @agent_turn(HUGE + "-model", provider=HUGE + "-provider", usage=UsageSnapshot(10, 5))
    def ask() -> str:
        return "answer"

    with agent_session(HUGE, **otel.kwargs()):
        ask()
        lookup()
    names = {span.name.split(" ", 1)[0]: span.name for span in otel.spans()}
    assert set(names) == {"invoke_agent", "chat", "execute_tool"}
    for operation, name in names.items():
        assert len(name) == len(operation) + 1 + NAME_LIMIT, operation
        assert name.endswith("…")
    for span in otel.spans():
        for key in (
            "gen_ai.agent.name",
            "gen_ai.agent.id",
            "gen_ai.request.model",
            "gen_ai.tool.name",
        ):
            value = dict(span.attributes or {}).get(key)
            assert value is None or len(str(value)) <= NAME_LIMIT, (span.name, key)
    values = _label_values(otel)
    assert values and max(len(v) for v in values) <= NAME_LIMIT
    assert bounded_name(HUGE) in values  # the role, bounded, still labels the series


def test_run_turn_and_run_tool_bound_names_too(otel: Otel) -> None:
    orch = Orchestrator(role=HUGE, phase="p", **otel.kwargs())
    with orch.session() as session:
        session.run_turn(lambda: "ok", model=HUGE, usage=UsageSnapshot(10, 5))
        session.run_tool(HUGE, lambda: "ok")
    assert max(len(span.name) for span in otel.spans()) == len("execute_tool ") + NAME_LIMIT
    assert max(len(v) for v in _label_values(otel)) <= NAME_LIMIT


# --- warnings point at the user's line ----------------------------------------------


def _ours(caught: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    return [w for w in caught if issubclass(w.category, RuntimeWarning | UserWarning)]


def test_the_unpriced_warning_of_a_turn_names_this_line(otel: Otel) -> None:
    orch = Orchestrator(role="writer", phase="p", budget_usd=1.0, **otel.kwargs())
    with warnings.catch_warnings(record=True) as caught, orch.session() as session:
        warnings.simplefilter("always")
        line = sys._getframe().f_lineno + 1
        session.run_turn(lambda: "ok", model="never-priced-model", usage=UsageSnapshot(10, 5))
    [warning] = [w for w in _ours(caught) if "never-priced-model" in str(w.message)]
    assert (warning.filename, warning.lineno) == (__file__, line)


def test_the_unpriced_warning_of_a_decorated_turn_names_this_line(otel: Otel) -> None:
    @agent_turn("never-priced-model-b", usage=UsageSnapshot(10, 5))
    def ask() -> str:
        return "ok"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with agent_session("writer", budget_usd=1.0, **otel.kwargs()):
            line = sys._getframe().f_lineno + 1
            ask()
    [warning] = [w for w in _ours(caught) if "never-priced-model-b" in str(w.message)]
    assert (warning.filename, warning.lineno) == (__file__, line)


COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "never-priced-model-c",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
}


def test_a_warning_from_an_instrumented_client_call_names_this_line() -> None:
    """Through the OpenAI SDK, its instrumentation, the OTel SDK and our processor."""
    with serve(FakeOpenAI(COMPLETION)) as api, instrumented_openai() as (provider, _exporter):
        client = openai.OpenAI(base_url=api.url, api_key="test", max_retries=0)
        orch = Orchestrator(role="writer", phase="p", budget_usd=1.0, tracer_provider=provider)
        with warnings.catch_warnings(record=True) as caught, orch.session():
            warnings.simplefilter("always")
            line = sys._getframe().f_lineno + 1
            client.chat.completions.create(model="never-priced-model-c", messages=[])
    [warning] = [w for w in _ours(caught) if "never-priced-model-c" in str(w.message)]
    assert (warning.filename, warning.lineno) == (__file__, line)


def test_with_no_budget_an_unpriced_turn_warns_once_at_this_line(otel: Otel) -> None:
    """Before: only a log line, which shows only where logging is configured."""
    orch = Orchestrator(role="writer", phase="p", **otel.kwargs())
    with warnings.catch_warnings(record=True) as caught, orch.session() as session:
        warnings.simplefilter("always")
        line = sys._getframe().f_lineno + 1
        session.run_turn(lambda: "ok", model="never-priced-model-d", usage=UsageSnapshot(10, 5))
        session.run_turn(lambda: "ok", model="never-priced-model-d", usage=UsageSnapshot(10, 5))
    [warning] = [w for w in _ours(caught) if "never-priced-model-d" in str(w.message)]
    assert (warning.filename, warning.lineno) == (__file__, line)
    assert "booked at $0" in str(warning.message)


def test_with_no_budget_an_instrumented_unpriced_call_warns_at_this_line() -> None:
    completion = {**COMPLETION, "model": "never-priced-model-e"}
    with serve(FakeOpenAI(completion)) as api, instrumented_openai() as (provider, _exporter):
        client = openai.OpenAI(base_url=api.url, api_key="test", max_retries=0)
        orch = Orchestrator(role="writer", phase="p", tracer_provider=provider)
        with warnings.catch_warnings(record=True) as caught, orch.session():
            warnings.simplefilter("always")
            line = sys._getframe().f_lineno + 1
            client.chat.completions.create(model="never-priced-model-e", messages=[])
    [warning] = [w for w in _ours(caught) if "never-priced-model-e" in str(w.message)]
    assert (warning.filename, warning.lineno) == (__file__, line)


def test_the_unpriced_warning_of_a_10_mb_model_name_is_bounded(otel: Otel) -> None:
    orch = Orchestrator(role="writer", phase="p", **otel.kwargs())
    with warnings.catch_warnings(record=True) as caught, orch.session() as session:
        warnings.simplefilter("always")
        session.run_turn(lambda: "ok", model=HUGE, usage=UsageSnapshot(10, 5))
    [warning] = [w for w in _ours(caught) if "has no known price" in str(w.message)]
    assert len(str(warning.message)) < NAME_LIMIT + 200


def test_the_escaped_thread_warning_names_the_threads_line(otel: Otel) -> None:
    @agent_turn("model-a", usage=UsageSnapshot(10, 5))
    def ask() -> str:
        return "ok"

    lines: list[int] = []

    def worker() -> None:
        lines.append(sys._getframe().f_lineno + 1)
        ask()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with agent_session("writer", max_iterations=5, **otel.kwargs()):
            thread = threading.Thread(target=worker)
            thread.start()
            thread.join()
    [warning] = [w for w in _ours(caught) if "outside any session" in str(w.message)]
    assert (warning.filename, warning.lineno) == (__file__, lines[0])


def test_every_warning_in_src_is_attributed_to_the_user() -> None:
    """A fixed ``stacklevel`` breaks with the next door, and ``warnings.warn`` keeps each
    text in the user module's registry for good: every warning goes through caller/
    (``warn_user``, ``warn_at``), or names a registry of its own.
    """
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.parent.name == "caller":
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if not (isinstance(node.func.value, ast.Name) and node.func.value.id == "warnings"):
                continue
            if node.func.attr == "warn" or (
                node.func.attr == "warn_explicit"
                and not any(k.arg == "registry" for k in node.keywords)
            ):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert offenders == [], "use caller.warn_user or caller.warn_at"


@pytest.mark.parametrize("role", ["", "writer"])
def test_short_names_are_untouched(otel: Otel, role: str) -> None:
    with agent_session(role or "w", **otel.kwargs()):
        pass
    assert otel.spans()[0].name == f"invoke_agent {role or 'w'}"
