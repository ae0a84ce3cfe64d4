"""A session's circuit breaker sees every model call of the session, whichever door admits it.

docs/breakers.md: "Give a session a breaker and every model call of the session
goes through it". Real ``openai`` and ``anthropic`` clients, bare (the client
guard admits their calls) or under the official OpenAI instrumentation (its
spans are admitted by the limits processor, with or without the guard), against
a dead port (a connection error) and the local stand-in
(``tests/interop/standin.py``), which counts every request it received: a call
the breaker refuses raises ``CircuitOpenError`` before anything is sent; each
call's outcome counts once (the SDK's retries are one call; a call inside a
turn is the turn's); half-open probing is the breaker's, as with ``run_turn``.
"""

from __future__ import annotations

import asyncio
import contextvars
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from fake_openai import FakeOpenAI, instrumented_openai, serve
from otel_harness import Otel
from techrevati.runtime import (
    AsyncCircuitBreaker,
    CircuitBreaker,
    CircuitOpenError,
    MaxIterationsExceededError,
    ModelPricing,
    Orchestrator,
    agent_session,
    agent_turn,
    register_pricing,
)
from techrevati.runtime.circuit_breaker import CircuitState
from techrevati.runtime.telemetry import semconv as sc
from techrevati.runtime.telemetry.limits import guard

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "interop"))

import standin

MODEL = "model-breaker"
CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
COMPLETION: dict[str, Any] = standin.chat_completion(MODEL)


@pytest.fixture(autouse=True)
def setting() -> Iterator[None]:
    register_pricing(MODEL, ModelPricing(1.0, 2.0, cache_read_per_million=0.1))
    # Each test starts with the process default: the guard not yet installed, not opted out.
    guard.uninstall_guard()
    guard.enable_guard()
    yield
    guard.uninstall_guard()
    guard.enable_guard()


def _dead_port() -> str:
    """A local URL nothing listens at: every request fails to connect."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return f"http://127.0.0.1:{port}"


def _no_backoff(client: Any) -> Any:
    client._calculate_retry_timeout = lambda *a, **k: 0.0
    return client


def _client(kind: str, url: str, retries: int = 0) -> Any:
    if kind == "openai":
        return _no_backoff(openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=retries))
    return _no_backoff(anthropic.Anthropic(base_url=url, api_key="k", max_retries=retries))


def _aclient(kind: str, url: str) -> Any:
    if kind == "openai":
        return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
    return anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0)


def _ask(client: Any) -> Any:
    messages = [{"role": "user", "content": "hi"}]
    if isinstance(client, openai.OpenAI | openai.AsyncOpenAI):
        return client.chat.completions.create(model=MODEL, messages=messages)
    return client.messages.create(model=MODEL, max_tokens=16, messages=messages)


def _connection_error(kind: str) -> type[Exception]:
    return openai.APIConnectionError if kind == "openai" else anthropic.APIConnectionError


def _outcomes(calls: list[Callable[[], object]]) -> list[str]:
    """What each call did: "ok", or the type of the error it raised."""
    seen = []
    for call in calls:
        try:
            call()
            seen.append("ok")
        except Exception as error:
            seen.append(type(error).__name__)
    return seen


def _session(how: str, breaker: CircuitBreaker, **options: Any) -> AbstractContextManager[Any]:
    if how == "Orchestrator":
        return Orchestrator(role="w", circuit_breaker=breaker, **options).session()
    return agent_session("w", circuit_breaker=breaker, **options)


@pytest.mark.parametrize("how", ["Orchestrator", "agent_session"])
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_a_bare_clients_failures_open_the_breaker_which_refuses_before_sending(
    kind: str, how: str
) -> None:
    breaker = CircuitBreaker("provider", failure_threshold=2, recovery_timeout_seconds=1000)
    with standin.serve() as api, _session(how, breaker) as session:
        dead, live = _client(kind, _dead_port()), _client(kind, api.url)
        seen = _outcomes([lambda: _ask(dead)] * 2 + [lambda: _ask(dead), lambda: _ask(live)])
        assert breaker.state() is OPEN
        with pytest.raises(CircuitOpenError, match="Circuit breaker 'provider' is OPEN"):
            _ask(live)
        assert session._iteration_count == 2  # the refused calls were never counted
    failed = _connection_error(kind).__name__
    assert seen == [failed, failed, "CircuitOpenError", "CircuitOpenError"]
    assert api.hits == []  # nothing refused reached the provider


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_an_answer_resets_the_count_and_half_open_probing_is_the_breakers(kind: str) -> None:
    now = [0.0]
    breaker = CircuitBreaker(
        "provider", failure_threshold=2, recovery_timeout_seconds=30, clock=lambda: now[0]
    )
    failed = _connection_error(kind).__name__
    with standin.serve() as api, _session("Orchestrator", breaker):
        dead, live = _client(kind, _dead_port()), _client(kind, api.url)
        # A failure, an answer, a failure: never two in a row, so it stays closed.
        assert _outcomes([lambda: _ask(dead), lambda: _ask(live), lambda: _ask(dead)]) == [
            failed,
            "ok",
            failed,
        ]
        assert breaker.state() is CLOSED
        _outcomes([lambda: _ask(dead)])
        assert breaker.state() is OPEN
        now[0] = 30.0
        assert breaker.state() is HALF_OPEN
        # The probe fails: open again at once, and the next call is refused unsent.
        assert _outcomes([lambda: _ask(dead), lambda: _ask(live)]) == [failed, "CircuitOpenError"]
        assert breaker.state() is OPEN
        now[0] = 60.0
        # The probe is answered: closed, and calls flow again.
        assert _outcomes([lambda: _ask(live), lambda: _ask(live)]) == ["ok", "ok"]
        assert breaker.state() is CLOSED
    assert len(api.hits) == 3


def test_while_a_half_open_probe_is_in_flight_other_calls_are_refused_unsent() -> None:
    now = [0.0]
    breaker = CircuitBreaker(
        "provider", failure_threshold=1, recovery_timeout_seconds=30, clock=lambda: now[0]
    )
    with serve(FakeOpenAI(COMPLETION, delays=[0.5])) as api, _session("Orchestrator", breaker):
        dead, slow = _client("openai", _dead_port()), _client("openai", api.url[: -len("/v1")])
        _outcomes([lambda: _ask(dead)])
        now[0] = 30.0
        probe: list[str] = []
        # The probe runs on a thread carrying the session's context (what session.wrap does).
        context = contextvars.copy_context()
        thread = threading.Thread(
            target=context.run, args=(lambda: probe.extend(_outcomes([lambda: _ask(slow)])),)
        )
        thread.start()
        deadline = time.monotonic() + 5
        while not api.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(CircuitOpenError, match="half-open and its 1 probe call is still"):
            _ask(slow)
        thread.join()
        assert probe == ["ok"]
        assert breaker.state() is CLOSED
        assert _outcomes([lambda: _ask(slow)]) == ["ok"]
    assert len(api.requests) == 2


def test_the_sdks_retries_are_one_call_and_5xx_and_429_are_failures() -> None:
    breaker = CircuitBreaker("provider", failure_threshold=2, recovery_timeout_seconds=1000)
    api = FakeOpenAI(COMPLETION, statuses=[500, 500, 500, 429, 429, 429])
    with serve(api), _session("Orchestrator", breaker) as session:
        client = _client("openai", api.url[: -len("/v1")], retries=2)
        with pytest.raises(openai.InternalServerError):
            _ask(client)
        assert len(api.requests) == 3  # three attempts, one call: one failure
        assert breaker.state() is CLOSED
        with pytest.raises(openai.RateLimitError):
            _ask(client)
        assert len(api.requests) == 6
        assert breaker.state() is OPEN
        with pytest.raises(CircuitOpenError):
            _ask(client)
        assert session._iteration_count == 2
    assert len(api.requests) == 6


def test_a_timed_out_bare_call_is_a_failure_and_a_stream_an_answer_once_it_begins() -> None:
    now = [0.0]
    breaker = CircuitBreaker(
        "provider", failure_threshold=1, recovery_timeout_seconds=30, clock=lambda: now[0]
    )
    api = FakeOpenAI(COMPLETION, stream=standin.chat_chunks(MODEL), delays=[1.0])
    with serve(api), _session("Orchestrator", breaker):
        client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0, timeout=0.2)
        with pytest.raises(openai.APITimeoutError):
            _ask(client)
        assert breaker.state() is OPEN
        now[0] = 30.0
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        assert breaker.state() is CLOSED  # the half-open probe was answered
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert len(api.requests) == 2


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_a_connection_retried_by_the_sdk_is_one_failure(kind: str) -> None:
    breaker = CircuitBreaker("provider", failure_threshold=2, recovery_timeout_seconds=1000)
    with _session("Orchestrator", breaker) as session:
        for state in (CLOSED, OPEN):  # each call of four attempts is one failure
            with pytest.raises(_connection_error(kind)):
                _ask(_client(kind, _dead_port(), retries=3))
            assert breaker.state() is state
        assert session._iteration_count == 2


def test_a_runtime_refusal_of_a_bare_call_is_no_failure() -> None:
    breaker = CircuitBreaker("provider", failure_threshold=1, recovery_timeout_seconds=1000)
    with standin.serve() as api, _session("Orchestrator", breaker, max_iterations=1):
        live = _client("openai", api.url)
        assert _outcomes([lambda: _ask(live), lambda: _ask(live)]) == [
            "ok",
            "MaxIterationsExceededError",
        ]
        assert breaker.state() is CLOSED
    assert len(api.hits) == 1
    # The same session's calls do reach the breaker: a failure opens it (threshold 1).
    with _session("Orchestrator", breaker, max_iterations=1):
        _outcomes([lambda: _ask(_client("openai", _dead_port()))])
    assert breaker.state() is OPEN


@pytest.mark.parametrize("turn", ["run_turn", "@agent_turn"])
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_a_call_inside_a_turn_is_the_turns_and_counts_once(kind: str, turn: str) -> None:
    now = [0.0]
    breaker = CircuitBreaker(
        "provider", failure_threshold=2, recovery_timeout_seconds=30, clock=lambda: now[0]
    )
    with standin.serve() as api, _session("agent_session", breaker) as session:
        dead, live = _client(kind, _dead_port()), _client(kind, api.url)

        def asks(*clients: Any) -> Callable[[], object]:
            def body() -> object:
                return [_ask(client) for client in clients]

            if turn == "run_turn":
                return lambda: session.run_turn(body, model=MODEL)
            return agent_turn(MODEL)(body)

        failed = _connection_error(kind).__name__
        # One failed turn is one failure (threshold 2: still closed), two open the breaker.
        assert _outcomes([asks(dead)]) == [failed]
        assert breaker.state() is CLOSED
        assert _outcomes([asks(dead), asks(live)]) == [failed, "CircuitOpenError"]
        assert breaker.state() is OPEN
        now[0] = 30.0
        # Half-open: the turn is the probe; its two requests are its own, never refused
        # as a second probe.
        assert _outcomes([asks(live, live)]) == ["ok"]
        assert breaker.state() is CLOSED
    assert len(api.hits) == 2


@pytest.mark.parametrize("guarded", [True, False], ids=["with the guard", "spans only"])
def test_under_the_official_instrumentation_each_call_counts_once(guarded: bool) -> None:
    now = [0.0]
    breaker = CircuitBreaker(
        "provider", failure_threshold=2, recovery_timeout_seconds=30, clock=lambda: now[0]
    )
    if not guarded:
        guard.disable_guard()  # configure(guard=False): the processor's door alone
    with (
        instrumented_openai() as (provider, exporter),
        standin.serve() as api,
        _session("Orchestrator", breaker, tracer_provider=provider) as session,
    ):
        assert guard.is_installed("openai") is guarded
        dead, live = _client("openai", _dead_port()), _client("openai", api.url)
        # The SDK retries one call three times: still one failure (threshold 2).
        with pytest.raises(openai.APIConnectionError):
            _ask(_client("openai", _dead_port(), retries=2))
        assert breaker.state() is CLOSED
        assert _outcomes([lambda: _ask(dead), lambda: _ask(live)]) == [
            "APIConnectionError",
            "CircuitOpenError",
        ]
        assert breaker.state() is OPEN
        now[0] = 30.0
        assert _outcomes([lambda: _ask(live), lambda: _ask(live)]) == ["ok", "ok"]
        assert breaker.state() is CLOSED
        assert session._iteration_count == 4
    assert len(api.hits) == 2
    chats = [s for s in exporter.get_finished_spans() if s.name.startswith("chat")]
    # The instrumentation's spans of the four calls sent; the refused one left none of its own.
    assert len([s for s in chats if s.instrumentation_scope.name != sc.INSTRUMENTATION_SCOPE]) == 4


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_an_async_bare_client_goes_through_the_async_sessions_breaker(kind: str) -> None:
    breaker = AsyncCircuitBreaker("provider", failure_threshold=2, recovery_timeout_seconds=1000)
    orch = Orchestrator(role="w", async_circuit_breaker=breaker)

    async def run(url: str) -> list[str]:
        dead, live = _aclient(kind, _dead_port()), _aclient(kind, url)
        seen = []
        async with orch.asession():
            for client in (dead, dead, dead, live):
                try:
                    await _ask(client)
                    seen.append("ok")
                except Exception as error:
                    seen.append(type(error).__name__)
            seen.append((await breaker.state()).value)
        return seen

    with standin.serve() as api:
        seen = asyncio.run(run(api.url))
    failed = _connection_error(kind).__name__
    assert seen == [failed, failed, "CircuitOpenError", "CircuitOpenError", "open"]
    assert api.hits == []


def test_a_refused_bare_call_is_reported_like_a_refused_turn(otel: Otel) -> None:
    breaker = CircuitBreaker("provider", failure_threshold=1, recovery_timeout_seconds=1000)
    with standin.serve() as api, _session("Orchestrator", breaker, **otel.kwargs()):
        _outcomes([lambda: _ask(_client("openai", _dead_port()))])
        assert otel.metric_sum(sc.METRIC_BREAKER_STATE, techrevati__breaker__name="provider") == 2
        with pytest.raises(CircuitOpenError):
            _ask(_client("openai", api.url))
    refused = otel.span(f"chat {MODEL}")
    attributes = refused.attributes or {}
    assert attributes[sc.BREAKER_NAME] == "provider"
    assert attributes[sc.BREAKER_STATE] == "open"
    assert attributes[sc.ERROR_TYPE] == "CircuitOpenError"
    assert api.hits == []


def test_a_session_without_a_breaker_admits_its_calls_without_one() -> None:
    with standin.serve() as api, agent_session("w", max_iterations=3) as session:
        assert session._ledger.breaker is None
        live = _client("openai", api.url)
        assert _outcomes([lambda: _ask(live)] * 2) == ["ok", "ok"]
        with pytest.raises(MaxIterationsExceededError):
            for _ in range(2):
                _ask(live)
    assert len(api.hits) == 3


@pytest.mark.parametrize(
    "where", ["a tool", "a sub-session sharing the breaker", "a sub-session's run_turn"]
)
def test_a_bare_call_inside_a_turn_at_any_depth_is_the_turns(where: str) -> None:
    now = [0.0]
    breaker = CircuitBreaker(
        "provider", failure_threshold=2, recovery_timeout_seconds=30, clock=lambda: now[0]
    )
    with standin.serve() as api, _session("agent_session", breaker) as session:
        dead, live = _client("openai", _dead_port()), _client("openai", api.url)

        def turn(client: Any) -> Callable[[], object]:
            def inner() -> object:
                if where == "a tool":
                    return session.run_tool("sub_agent", lambda: _ask(client))
                with agent_session("child", circuit_breaker=breaker) as child:
                    if where == "a sub-session's run_turn":
                        return child.run_turn(lambda: _ask(client), model=MODEL)
                    return _ask(client)

            return lambda: session.run_turn(inner, model=MODEL)

        # One turn whose one request failed is one failure (was two: the breaker opened).
        assert _outcomes([turn(dead)]) == ["APIConnectionError"]
        assert (breaker.state(), breaker._failure_count) == (CLOSED, 1)
        assert _outcomes([turn(dead)]) == ["APIConnectionError"]
        assert breaker.state() is OPEN
        now[0] = 30.0
        # Half-open: the turn is the probe and its request is its own (was refused as a
        # second probe, never sent).
        assert _outcomes([turn(live)]) == ["ok"]
        assert (breaker.state(), breaker._failure_count, breaker._probe_in_flight) == (
            CLOSED,
            0,
            0,
        )
    assert len(api.hits) == 1


def test_a_cancelled_probe_under_the_anthropic_sdks_own_spans_is_no_answer() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    now = [0.0]
    breaker = AsyncCircuitBreaker(
        "anthropic", failure_threshold=1, recovery_timeout_seconds=30, clock=lambda: now[0]
    )
    orch = Orchestrator(role="w", async_circuit_breaker=breaker, tracer_provider=provider)
    hang = socket.socket()  # accepts the request, never answers
    hang.bind(("127.0.0.1", 0))
    hang.listen(8)
    spans = {"traces": True, "tracer_provider": provider}  # the SDK's own spans

    def client(url: str) -> Any:
        return anthropic.AsyncAnthropic(
            base_url=url, api_key="k", max_retries=0, open_telemetry=spans
        )

    async def main() -> list[object]:
        seen: list[object] = []
        async with orch.asession():
            with pytest.raises(anthropic.APIConnectionError):
                await _ask(client(_dead_port()))
            seen.append(breaker._state)
            now[0] = 30.0
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(
                    _ask(client(f"http://127.0.0.1:{hang.getsockname()[1]}")), 0.3
                )
            seen.append((await breaker.state(), breaker._failure_count, breaker._probe_in_flight))
        return seen

    try:
        # The SDK's span ended UNSET before the cancellation reached the guard: it closed
        # the breaker (was (CLOSED, 0, 0)); now the probe is only freed.
        assert asyncio.run(main()) == [OPEN, (HALF_OPEN, 1, 0)]
    finally:
        hang.close()


def test_an_answer_the_sdk_fails_to_parse_is_no_failure_but_an_error_status_is() -> None:
    import pydantic

    class Out(pydantic.BaseModel):
        x: int

    cut: dict[str, Any] = standin.chat_completion(MODEL)
    cut["choices"][0]["finish_reason"] = "length"
    cut["choices"][0]["message"]["content"] = '{"x": '
    breaker = CircuitBreaker("provider", failure_threshold=1, recovery_timeout_seconds=1000)
    api = FakeOpenAI(cut, statuses=[200, 200, 400])
    with serve(api), _session("agent_session", breaker):
        client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
        messages = [{"role": "user", "content": "hi"}]
        with pytest.raises(openai.LengthFinishReasonError):
            client.chat.completions.parse(model=MODEL, messages=messages, response_format=Out)
        # Answered (HTTP 200), cut at max_tokens: the provider did not fail (was OPEN).
        assert breaker.state() is CLOSED
        assert _outcomes([lambda: _ask(client)]) == ["ok"]
        # A 4xx counts, as it does when run_turn's body raises it.
        assert _outcomes([lambda: _ask(client), lambda: _ask(client)]) == [
            "BadRequestError",
            "CircuitOpenError",
        ]
        assert breaker.state() is OPEN
    assert len(api.requests) == 3


def test_spans_only_a_stream_dropped_unread_is_an_answer() -> None:
    import gc

    guard.disable_guard()  # configure(guard=False): the instrumentation's spans alone
    breaker = CircuitBreaker("provider", failure_threshold=1, recovery_timeout_seconds=1000)
    api = FakeOpenAI(COMPLETION, stream=standin.chat_chunks(MODEL))
    with (
        instrumented_openai() as (provider, _),
        serve(api),
        _session("Orchestrator", breaker, tracer_provider=provider),
    ):
        client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        del stream  # its span ends with error.type "_OTHER": the stream had begun
        gc.collect()
        assert breaker.state() is CLOSED  # was OPEN
        assert _outcomes([lambda: _ask(client)]) == ["ok"]
    assert len(api.requests) == 2


def test_spans_only_a_streamed_probe_kept_unread_holds_no_probe_slot() -> None:
    guard.disable_guard()
    now = [0.0]
    breaker = CircuitBreaker(
        "provider", failure_threshold=1, recovery_timeout_seconds=30, clock=lambda: now[0]
    )
    api = FakeOpenAI(COMPLETION, stream=standin.chat_chunks(MODEL))
    with (
        instrumented_openai() as (provider, _),
        serve(api),
        _session("Orchestrator", breaker, tracer_provider=provider),
    ):
        _outcomes([lambda: _ask(_client("openai", _dead_port()))])
        assert breaker.state() is OPEN
        now[0] = 30.0
        kept = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0).chat.completions
        stream = kept.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True)
        # Nothing sees the stream begin before its span ends: the probe slot was
        # given back (was held until the stream was read, refusing every call).
        assert (breaker.state(), breaker._probe_in_flight) == (HALF_OPEN, 0)
        with _session("Orchestrator", breaker, tracer_provider=provider) as other:
            assert other.run_turn(lambda: "r", model=MODEL)[0] == "r"
        assert breaker.state() is CLOSED
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert breaker.state() is CLOSED  # its span's end: an answer
    assert len(api.requests) == 1


def test_a_call_whose_context_outlived_its_turn_is_a_call_of_its_own() -> None:
    # A thread a turn started (its context copied) called a bare client after the turn
    # had ended: it joined the ended turn as that turn's own request, so the breaker,
    # open by then, never saw it (1 request sent); and a turn that timed out left its
    # thread's calls unrefused (3 requests sent while open).
    now = [0.0]
    breaker = CircuitBreaker("outlived", failure_threshold=1, clock=lambda: now[0])
    api = FakeOpenAI(COMPLETION)
    go = threading.Event()
    seen: list[str] = []

    def boom() -> None:
        raise ConnectionError("down")

    with serve(api), Orchestrator(role="w", circuit_breaker=breaker).session() as session:
        client = _client("openai", api.url)

        def later() -> None:
            go.wait(5)
            seen.extend(_outcomes([lambda: _ask(client)]))

        def body() -> str:
            thread = threading.Thread(target=contextvars.copy_context().run, args=(later,))
            thread.start()
            threads.append(thread)
            return "r"

        threads: list[threading.Thread] = []
        session.run_turn(body, model=MODEL)
        with pytest.raises(ConnectionError):
            session.run_turn(boom, model=MODEL)
        assert breaker.state() is OPEN
        go.set()
        threads[0].join(5)
        assert seen == ["CircuitOpenError"]
        assert len(api.requests) == 0

        calls: list[str] = []

        def slow() -> str:
            time.sleep(0.3)  # still running after its turn timed out
            calls.extend(_outcomes([lambda: _ask(client)] * 3))
            return "r"

        timed = CircuitBreaker("timed", failure_threshold=1, recovery_timeout_seconds=300)
        with Orchestrator(role="t", circuit_breaker=timed, max_iterations=100).session() as inner:
            with pytest.raises(Exception, match=r"timed out|timeout"):
                inner.run_turn(slow, model=MODEL, timeout=0.05)
            assert timed.state() is OPEN
            deadline = time.monotonic() + 5
            while len(calls) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
        assert calls == ["CircuitOpenError"] * 3
        assert len(api.requests) == 0


def test_a_frameworks_span_over_a_guarded_client_holds_its_half_open_probe_slot() -> None:
    # A framework's model span (LangChain's, pydantic-ai's) over an openai client the
    # guard wraps was judged by its producer's name to be seen by no guard, so it gave
    # its half-open probe slot back at once: 4 concurrent runs sent 4 requests to a
    # provider still down. The guard sees the request under it: 1 probe, 3 refused.
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import SpanKind

    now = [0.0]
    breaker = CircuitBreaker(
        "framework", failure_threshold=1, recovery_timeout_seconds=30, clock=lambda: now[0]
    )
    provider = TracerProvider()
    framework = provider.get_tracer("langchain_core.callbacks")  # no client in its name
    api = FakeOpenAI(COMPLETION, delay=0.5)
    with serve(api), _session("Orchestrator", breaker, tracer_provider=provider):
        _outcomes([lambda: _ask(_client("openai", _dead_port()))])
        assert breaker.state() is OPEN
        now[0] = 30.0
        client = _client("openai", api.url[: -len("/v1")])
        seen: list[str] = []

        def run() -> None:
            def call() -> object:
                with framework.start_as_current_span(
                    f"chat {MODEL}",
                    kind=SpanKind.CLIENT,
                    attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": MODEL},
                ):
                    return _ask(client)

            seen.extend(_outcomes([call]))

        threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(run,)) for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert sorted(seen) == ["CircuitOpenError"] * 3 + ["ok"]
    assert len(api.requests) == 1
    assert breaker.state() is CLOSED
