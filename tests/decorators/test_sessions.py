"""agent_session as with, async with and decorator; turns and tools under it belong to it."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.trace import StatusCode

from otel_harness import Otel
from techrevati.runtime import (
    AsyncCircuitBreaker,
    AsyncOrchestrationSession,
    BudgetExceededError,
    CircuitBreaker,
    CircuitOpenError,
    GuardrailOutcome,
    GuardrailViolatedError,
    MaxIterationsExceededError,
    OrchestrationSession,
    Orchestrator,
    PermissionDeniedError,
    PermissionEnforcer,
    PermissionMode,
    PermissionPolicy,
    RolePermissionConfig,
    UsageSnapshot,
    caller,
)
from techrevati.runtime.decorators import (
    agent_session,
    agent_turn,
    current_agent_session,
    tool_call,
)

USAGE = UsageSnapshot(input_tokens=1000, output_tokens=100)
COST = (1000 * 3.0 + 100 * 15.0) / 1e6  # on model-a


@agent_turn("model-a", usage=USAGE)
def turn(tag: str = "") -> str:
    return tag


@agent_turn("model-a", usage=USAGE)
async def aturn(tag: str = "") -> str:
    await asyncio.sleep(0)
    return tag


def _perms() -> PermissionEnforcer:
    return PermissionEnforcer(
        PermissionPolicy(
            role_configs={"writer": RolePermissionConfig("writer", PermissionMode.READ_ONLY)},
            tool_requirements={"write_db": PermissionMode.FULL_ACCESS},
        )
    )


def test_with_opens_a_session_like_the_orchestrator(otel: Otel) -> None:
    scope = agent_session("writer", project_id=3, budget_usd=1.0, **otel.kwargs())
    with scope as session:
        assert isinstance(session, OrchestrationSession)
        assert current_agent_session() is session
        assert turn("x") == "x"
    assert current_agent_session() is None
    assert session.phase == "default"
    assert scope.orchestrator.tracker is session.tracker
    assert session.worker.status.value == "completed"
    root = otel.span("invoke_agent writer")
    r = dict(root.attributes or {})
    assert r["techrevati.phase"] == "default"
    assert r["techrevati.project.id"] == 3
    assert r["techrevati.budget.limit_usd"] == 1.0
    assert r["techrevati.cost.usd"] == pytest.approx(COST, rel=1e-12)
    chat = otel.span("chat model-a")
    assert chat.parent is not None and chat.parent.span_id == root.context.span_id
    with agent_session("editor", phase="review", **otel.kwargs()) as other:
        assert other.phase == "review"


def test_bad_options_fail_at_construction() -> None:
    with pytest.raises(TypeError):
        agent_session("w", max_iterations="3")
    with pytest.raises(TypeError):
        agent_session("w", no_such_option=1)
    with pytest.raises(ValueError, match="-1"):
        agent_session("w", budget_usd=-1)


def test_bad_decorator_arguments_name_the_value() -> None:
    from techrevati.runtime.decorators import agent_turn, tool_call

    with pytest.raises(TypeError, match="123"):
        agent_turn(123)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="int: 5"):
        agent_turn("m", usage=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="provider"):
        agent_turn("m", provider=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="7"):
        tool_call(7)  # type: ignore[call-overload]


def test_async_with_yields_the_async_session(otel: Otel) -> None:
    async def main() -> AsyncOrchestrationSession:
        async with agent_session("writer", **otel.kwargs()) as session:
            assert isinstance(session, AsyncOrchestrationSession)
            assert await aturn("a") == "a"
            assert turn("b") == "b"  # a sync turn inside an async session belongs too
        return session

    session = asyncio.run(main())
    assert session.tracker.turn_count == 2
    assert session.tracker.total_cost() == pytest.approx(2 * COST, rel=1e-12)


def test_as_decorator_each_call_is_a_new_session(otel: Otel) -> None:
    seen: list[Any] = []

    @agent_session("writer", **otel.kwargs())
    def run(n: int) -> int:
        session = current_agent_session()
        seen.append(session)
        for _ in range(n):
            turn()
        return n

    @agent_session("writer", **otel.kwargs())
    async def arun(n: int) -> int:
        seen.append(current_agent_session())
        await asyncio.gather(*(aturn() for _ in range(n)))
        return n

    @agent_session("streamer", **otel.kwargs())
    def gen(n: int) -> Iterator[str]:
        seen.append(current_agent_session())
        for i in range(n):
            yield turn(str(i))

    assert run(2) == 2
    assert run(1) == 1
    assert asyncio.run(arun(3)) == 3
    assert list(gen(2)) == ["0", "1"]
    assert [s.tracker.turn_count for s in seen] == [2, 1, 3, 2]
    assert len({id(s) for s in seen}) == 4
    assert isinstance(seen[2], AsyncOrchestrationSession)
    assert len(otel.spans("invoke_agent writer")) == 3
    assert current_agent_session() is None


def test_decorated_session_records_failure(otel: Otel) -> None:
    @agent_session("writer", **otel.kwargs())
    def run() -> None:
        raise RuntimeError("broken tool chain")

    with pytest.raises(RuntimeError):
        run()
    root = otel.span("invoke_agent writer")
    assert root.status.status_code == StatusCode.ERROR
    assert dict(root.attributes or {})["techrevati.session.outcome"] == "failed"


def test_threads_with_copied_context_share_the_ledger(otel: Otel) -> None:
    with agent_session("writer", max_iterations=1000, **otel.kwargs()) as session:

        def work() -> None:
            for _ in range(25):
                turn()

        threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(work,)) for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        async def via_to_thread() -> None:
            await asyncio.gather(*(asyncio.to_thread(turn) for _ in range(4)))

        asyncio.run(via_to_thread())
    assert session.tracker.turn_count == 8 * 25 + 4
    assert session.tracker.total_cost() == pytest.approx(204 * COST, rel=1e-9)
    root = otel.span("invoke_agent writer")
    chats = otel.spans("chat model-a")
    assert len(chats) == 204
    assert all(c.parent is not None and c.parent.span_id == root.context.span_id for c in chats)
    assert dict(root.attributes or {})["techrevati.session.turns"] == 204


def test_gathered_tasks_share_ledger_and_cap(otel: Otel) -> None:
    calls: list[int] = []

    @agent_turn("model-a", usage=USAGE)
    async def counted(i: int) -> int:
        calls.append(i)
        await asyncio.sleep(0)
        return i

    @tool_call()
    async def fetch(i: int) -> int:
        return await counted(i)

    async def main() -> tuple[Any, list[Any]]:
        async with agent_session("writer", max_iterations=5, **otel.kwargs()) as session:
            results = await asyncio.gather(*(fetch(i) for i in range(8)), return_exceptions=True)
        return session, results

    session, results = asyncio.run(main())
    refused = [r for r in results if isinstance(r, MaxIterationsExceededError)]
    assert len(refused) == 3 and len(calls) == 5  # refused turns never called the function
    assert session.tracker.turn_count == 5
    assert session.tracker.total_cost() == pytest.approx(5 * COST, rel=1e-12)
    assert len(otel.spans("execute_tool fetch")) == 8


def test_budget_refusal_never_calls_the_function(otel: Otel) -> None:
    calls: list[str] = []

    @agent_turn("model-a", usage=USAGE)
    def spend(tag: str) -> None:
        calls.append(tag)

    @agent_turn("model-a", usage=USAGE)
    async def aspend(tag: str) -> None:
        calls.append(tag)

    with agent_session("w", budget_usd=COST * 1.5, enforce_budget=True, **otel.kwargs()) as s:
        spend("1")
        with pytest.raises(BudgetExceededError):
            spend("2")  # crosses: ran, booked, then raises
        with pytest.raises(BudgetExceededError):
            spend("3")  # refused before the call
        with pytest.raises(BudgetExceededError):
            asyncio.run(aspend("4"))
    assert calls == ["1", "2"]
    assert s.tracker.turn_count == 2
    assert len(otel.spans("chat model-a")) == 2


def test_open_breaker_refuses_without_calling(otel: Otel) -> None:
    calls: list[str] = []

    @agent_turn("model-a")
    def flaky() -> None:
        calls.append("sync")
        raise ConnectionError("provider down")

    @agent_turn("model-a")
    async def aflaky() -> None:
        calls.append("async")
        raise ConnectionError("provider down")

    breaker = CircuitBreaker("api", failure_threshold=1)
    with agent_session("w", circuit_breaker=breaker, **otel.kwargs()):
        with pytest.raises(ConnectionError):
            flaky()
        with pytest.raises(CircuitOpenError):
            flaky()
    abreaker = AsyncCircuitBreaker("aapi", failure_threshold=1)

    async def main() -> None:
        async with agent_session("w", async_circuit_breaker=abreaker, **otel.kwargs()):
            with pytest.raises(ConnectionError):
                await aflaky()
            with pytest.raises(CircuitOpenError):
                await aflaky()

    asyncio.run(main())
    assert calls == ["sync", "async"]
    assert breaker.is_open()
    assert asyncio.run(abreaker.is_open())
    states = [dict(s.attributes or {}).get("techrevati.breaker.state") for s in otel.spans("chat")]
    assert states == ["open", "open", "open", "open"]


def test_streaming_turn_goes_through_the_breaker(otel: Otel) -> None:
    @agent_turn("model-a")
    def stream(fail: bool) -> Iterator[int]:
        yield 1
        if fail:
            raise ConnectionError("dropped")

    breaker = CircuitBreaker("api", failure_threshold=2)
    with agent_session("w", circuit_breaker=breaker, **otel.kwargs()):
        assert list(stream(False)) == [1]
        for _ in range(2):
            with pytest.raises(ConnectionError):
                list(stream(True))
        gen = stream(False)
        with pytest.raises(CircuitOpenError):
            next(gen)
        breaker.reset()
        for _ in stream(True):
            break  # stopped early: neither success nor failure
        assert breaker.state().value == "closed"


@dataclass
class _Blocker:
    name: str = "blocker"

    def check_pre(self, *, role: str, tool: str) -> GuardrailOutcome:
        return GuardrailOutcome(allowed=tool != "shell", reason="no shell")

    def check_post(self, value: object, *, role: str, tool: str) -> GuardrailOutcome:
        return GuardrailOutcome(allowed="secret" not in str(value), reason="leak")


def test_tools_get_permissions_and_guardrails(otel: Otel) -> None:
    ran: list[str] = []

    @tool_call()
    def write_db(row: str) -> None:
        ran.append("write_db")

    @tool_call()
    def shell(cmd: str) -> None:
        ran.append("shell")

    @tool_call()
    def read(key: str) -> str:
        ran.append("read")
        return f"value of {key}"

    @tool_call()
    def pages() -> Iterator[str]:
        ran.append("pages")
        yield "page 1"
        yield "page 2 with a secret"
        ran.append("never")

    @tool_call()
    async def aread(key: str) -> str:
        return f"value of {key}"

    with agent_session(
        "writer", permissions=_perms(), guardrails=[_Blocker()], **otel.kwargs()
    ) as session:
        with pytest.raises(PermissionDeniedError):
            write_db("x")
        with pytest.raises(GuardrailViolatedError):
            shell("rm -rf /")
        assert read("k") == "value of k"
        with pytest.raises(GuardrailViolatedError):
            read("secret")
        got: list[str] = []
        with pytest.raises(GuardrailViolatedError):
            got.extend(pages())
        assert got == ["page 1"]
        assert asyncio.run(aread("z")) == "value of z"
    assert ran == ["read", "read", "pages"]
    denied = dict(otel.span("execute_tool write_db").attributes or {})
    assert denied["techrevati.permission.decision"] == "deny"
    assert denied["techrevati.permission.required_mode"] == "FULL_ACCESS"
    blocked = dict(otel.span("execute_tool shell").attributes or {})
    assert (blocked["techrevati.guardrail.outcome"], blocked["techrevati.guardrail.stage"]) == (
        "blocked",
        "pre",
    )
    stream_span = otel.span("execute_tool pages")
    assert otel.ended_once(stream_span)
    assert dict(stream_span.attributes or {})["techrevati.guardrail.stage"] == "post"
    assert otel.metric_sum("techrevati.tool.calls", techrevati__permission__decision="deny") == 1
    assert otel.metric_sum("techrevati.guardrail.violations") == 3
    assert session.tracker.turn_count == 0


def test_content_capture_off_by_default_and_on_when_asked(otel: Otel, capture: None) -> None:
    @agent_turn("model-a")
    def ask(prompt: str, temperature: float = 0.0) -> dict[str, Any]:
        return {
            "choices": [{"message": {"content": "an answer"}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2},
        }

    @agent_turn("model-a")
    def stream(prompt: str) -> Iterator[dict[str, Any]]:
        yield {"choices": [{"delta": {"content": "str"}}]}
        yield {"choices": [{"delta": {"content": "eamed"}}]}

    @tool_call()
    def lookup(term: str) -> str:
        return term.upper()

    class Agent:
        @agent_turn("model-a")
        def think(self, question: str) -> str:
            return "thought"

    with agent_session("w", **otel.kwargs()):
        ask("what is RAG?", temperature=0.2)
        list(stream("go"))
        lookup("rag")
        Agent().think("why?")
    chats = otel.spans("chat model-a")
    a = dict(chats[0].attributes or {})
    assert a["gen_ai.input.messages"] == "{'prompt': 'what is RAG?', 'temperature': 0.2}"
    assert a["gen_ai.output.messages"] == "an answer"
    assert dict(chats[1].attributes or {})["gen_ai.output.messages"] == "streamed"
    assert dict(chats[2].attributes or {})["gen_ai.input.messages"] == "{'question': 'why?'}"
    t = dict(otel.span("execute_tool lookup").attributes or {})
    assert t["gen_ai.tool.call.arguments"] == "{'term': 'rag'}"
    assert t["gen_ai.tool.call.result"] == "RAG"


def test_no_content_without_capture(otel: Otel) -> None:
    @agent_turn("model-a")
    def ask(prompt: str) -> str:
        return "an answer"

    @tool_call()
    def lookup(term: str) -> str:
        return term

    with agent_session("w", **otel.kwargs()):
        ask("secret prompt")
        lookup("secret arg")
    for span in otel.spans():
        keys = set((span.attributes or {}).keys())
        assert not keys & {
            "gen_ai.input.messages",
            "gen_ai.output.messages",
            "gen_ai.tool.call.arguments",
            "gen_ai.tool.call.result",
        }


class _Detached:
    """An ORM row detached from its session: its ``repr`` raises."""

    def __repr__(self) -> str:
        raise RuntimeError("DetachedInstanceError: instance is not bound to a Session")


_DETACHED = "RuntimeError: DetachedInstanceError: instance is not bound to a Session"


@pytest.fixture
def repr_warnings(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> Iterator[Callable[[], list[str]]]:
    """The content-capture warnings logged so far in the test (the once-flag reset)."""
    monkeypatch.setattr(caller, "_LOGGED", set())
    with caplog.at_level(logging.WARNING, logger="techrevati.runtime.telemetry"):
        yield lambda: [m for r in caplog.records if "content capture" in (m := r.getMessage())]


_PLACEHOLDER = f"<repr of _Detached failed: {_DETACHED}>"
_ARGUMENTS = f"<repr of dict failed: {_DETACHED}>"  # the decorators' arguments by name


def _decorated_tool(otel: Otel, row: object) -> tuple[object, str]:
    @tool_call()
    def save(record: object) -> object:
        return row

    with agent_session("w", **otel.kwargs()):
        return save(_Detached()), "execute_tool save"


def _decorated_turn(otel: Otel, row: object) -> tuple[object, str]:
    @agent_turn("model-a", usage=USAGE)
    def ask(prompt: object) -> object:
        return row

    with agent_session("w", **otel.kwargs()):
        return ask(_Detached()), "chat model-a"


def _run_tool(otel: Otel, row: object) -> tuple[object, str]:
    with Orchestrator(role="g", phase="p", **otel.kwargs()).session() as session:
        return session.run_tool("store", lambda: row, arguments=_Detached()), "execute_tool store"


def _run_turn(otel: Otel, row: object) -> tuple[object, str]:
    with Orchestrator(role="g", phase="p", **otel.kwargs()).session() as session:
        result, usage = session.run_turn(lambda: row, model="model-a", usage=USAGE)
        assert usage == USAGE
        return result, "chat model-a"


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        (
            _decorated_tool,
            {"gen_ai.tool.call.arguments": _ARGUMENTS, "gen_ai.tool.call.result": _PLACEHOLDER},
        ),
        (
            _decorated_turn,
            {"gen_ai.input.messages": _ARGUMENTS, "gen_ai.output.messages": _PLACEHOLDER},
        ),
        (
            _run_tool,
            {"gen_ai.tool.call.arguments": _PLACEHOLDER, "gen_ai.tool.call.result": _PLACEHOLDER},
        ),
        (_run_turn, {"gen_ai.output.messages": _PLACEHOLDER}),
    ],
    ids=["tool_call", "agent_turn", "run_tool", "run_turn"],
)
def test_content_whose_repr_raises_is_a_placeholder_and_the_call_returns(
    otel: Otel,
    capture: None,
    repr_warnings: Callable[[], list[str]],
    run: Callable[[Otel, object], tuple[object, str]],
    expected: dict[str, str],
) -> None:
    row = _Detached()
    result, name = run(otel, row)
    assert result is row  # the user's result, unchanged
    span = otel.span(name)
    assert span.status.status_code != StatusCode.ERROR
    attributes = dict(span.attributes or {})
    assert {key: attributes.get(key) for key in expected} == expected
    first = next(iter(expected.values()))  # the inputs fail first, when captured
    kind = "dict" if first == _ARGUMENTS else "_Detached"
    warning = (
        f"content capture: repr() of a {kind} raised ({_DETACHED}); its span records "
        f"{first!r} instead and the call goes on. Logged once per process."
    )
    assert repr_warnings() == [warning]
    run(otel, row)  # once per process: a second failing call logs nothing more
    assert repr_warnings() == [warning]


def test_content_nested_past_the_recursion_limit_is_a_placeholder(
    otel: Otel, capture: None, repr_warnings: Callable[[], list[str]]
) -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(100_000):
        node["c"] = node = {}

    @tool_call()
    def parse(doc: str) -> object:
        return deep

    with agent_session("w", **otel.kwargs()):
        assert parse("doc") is deep
    result = str(dict(otel.span("execute_tool parse").attributes or {})["gen_ai.tool.call.result"])
    assert result.startswith("<repr of dict failed: RecursionError: maximum recursion depth")
    assert len(result) < 300
    assert len(repr_warnings()) == 1


def test_an_error_whose_message_raises_reaches_its_caller_with_capture_on(
    otel: Otel, capture: None, repr_warnings: Callable[[], list[str]]
) -> None:
    # A review: the span's status formatted str(error) unguarded, so the caller got a
    # RuntimeError from the telemetry instead of its own exception.
    class Detached(Exception):
        def __str__(self) -> str:
            raise RuntimeError("detached ORM row")

    @tool_call()
    def lookup() -> None:
        raise Detached

    with agent_session("w", **otel.kwargs()), pytest.raises(Detached):
        lookup()
    span = otel.span("execute_tool lookup")
    kind = Detached.__qualname__  # (a class local to this test)
    said = f"{kind}: <str of {kind} failed: RuntimeError: detached ORM row>"
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == said
    (event,) = [e for e in span.events if e.name == "exception"]
    assert (event.attributes or {})["exception.message"] == said
    assert len(repr_warnings()) == 1
    # Out of the session block too: its failure detail and failure class read it.
    with pytest.raises(Detached), agent_session("v", **otel.kwargs()):
        lookup()


def test_content_capture_lets_keyboard_interrupt_through(
    otel: Otel, capture: None, repr_warnings: Callable[[], list[str]]
) -> None:
    class Interrupted:
        def __repr__(self) -> str:
            raise KeyboardInterrupt

    @tool_call()
    def lookup(term: object) -> str:
        return "never"

    with agent_session("w", **otel.kwargs()), pytest.raises(KeyboardInterrupt):
        lookup(Interrupted())
    assert repr_warnings() == []


def test_one_session_object_entered_by_concurrent_tasks(otel: Otel) -> None:
    scope = agent_session("writer", **otel.kwargs())

    async def one(n: int) -> Any:
        async with scope as session:
            for _ in range(n):
                await aturn()
                await asyncio.sleep(0)
            assert current_agent_session() is session
        return session

    async def main() -> list[Any]:
        return list(await asyncio.gather(one(1), one(2), one(3)))

    sessions = asyncio.run(main())
    assert [s.tracker.turn_count for s in sessions] == [1, 2, 3]


def test_async_generator_session_and_nested_sessions(otel: Otel) -> None:
    @agent_session("streamer", **otel.kwargs())
    async def events() -> AsyncIterator[str]:
        yield await aturn("a")
        with agent_session("helper", **otel.kwargs()) as inner:
            turn("inner")
            assert current_agent_session() is inner
        yield await aturn("b")

    async def main() -> list[str]:
        return [e async for e in events()]

    assert asyncio.run(main()) == ["a", "b"]
    outer = otel.span("invoke_agent streamer")
    inner = otel.span("invoke_agent helper")
    assert inner.parent is not None and inner.parent.span_id == outer.context.span_id
    assert dict(outer.attributes or {})["techrevati.session.turns"] == 2
    assert dict(inner.attributes or {})["techrevati.session.turns"] == 1


def test_outside_any_session_spans_are_priced_with_metrics() -> None:
    code = """
        import asyncio, json
        from opentelemetry import trace, metrics
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        exporter = InMemorySpanExporter()
        tp = TracerProvider(); tp.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(tp)
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        from techrevati.runtime import ModelPricing, register_pricing
        from techrevati.runtime.decorators import agent_turn, tool_call
        register_pricing("gpt-4o-mini", ModelPricing(0.15, 0.6, 0.0, 0.075))

        @agent_turn(provider="openai")
        def ask(prompt):
            return {"model": "gpt-4o-mini-2024-07-18", "usage": {"prompt_tokens": 5000,
                    "completion_tokens": 100, "prompt_tokens_details": {"cached_tokens": 4000}}}

        @tool_call()
        async def lookup(term):
            return term

        ask("hi")
        asyncio.run(lookup("x"))
        spans = {s.name: dict(s.attributes) for s in exporter.get_finished_spans()}
        cost = {}
        for rm in reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for p in m.data.data_points:
                        if m.name in ("techrevati.cost.usd", "techrevati.tool.calls"):
                            cost[m.name] = [dict(p.attributes), p.value]
        print(json.dumps({"spans": spans, "metrics": cost}))
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    chat = out["spans"]["chat gpt-4o-mini-2024-07-18"]
    expected = (1000 * 0.15 + 4000 * 0.075 + 100 * 0.6) / 1e6
    assert chat["techrevati.cost.usd"] == pytest.approx(expected, rel=1e-12)
    assert chat["gen_ai.usage.input_tokens"] == 5000
    assert chat["gen_ai.usage.cache_read.input_tokens"] == 4000
    assert chat["gen_ai.provider.name"] == "openai"
    assert "techrevati.session.iteration" not in chat
    labels, value = out["metrics"]["techrevati.cost.usd"]
    assert value == pytest.approx(expected, rel=1e-12)
    assert labels == {
        "gen_ai.request.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.provider.name": "openai",
    }
    assert out["spans"]["execute_tool lookup"]["gen_ai.tool.name"] == "lookup"
    assert out["metrics"]["techrevati.tool.calls"][1] == 1


def test_sync_turn_under_async_breaker_shares_its_state(otel: Otel) -> None:
    breaker = AsyncCircuitBreaker("api", failure_threshold=2)

    @agent_turn("model-a")
    def flaky() -> None:
        raise TimeoutError("slow provider")

    async def main() -> None:
        async with agent_session("w", async_circuit_breaker=breaker, **otel.kwargs()):
            for _ in range(2):
                with pytest.raises(TimeoutError):
                    flaky()  # a sync turn in an async session: same breaker
            with pytest.raises(CircuitOpenError):
                await aturn()

    asyncio.run(main())
    assert asyncio.run(breaker.is_open())


def test_orchestrator_and_agent_session_share_every_default() -> None:
    import dataclasses

    from techrevati.runtime import Orchestrator

    plain = Orchestrator(role="writer")
    decorated = agent_session("writer").orchestrator
    assert plain.phase == decorated.phase == "default"
    for f in dataclasses.fields(Orchestrator):
        if not f.init or f.name in {"registry", "event_sink", "usage_sink", "guardrails"}:
            continue  # fresh objects per instance: compared by type below
        assert getattr(plain, f.name) == getattr(decorated, f.name), f.name
    for name in ("registry", "event_sink", "usage_sink", "guardrails"):
        assert type(getattr(plain, name)) is type(getattr(decorated, name)), name
