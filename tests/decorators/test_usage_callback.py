"""A usage= callback that gives no usage, and provider usage blocks with a bad count.

A callback's return is the caller's to fix: the call (which ran, and is
billed) is booked, then a TypeError says what it returned and what it must
return. A provider's bad count is not the caller's: the block's other counts
are kept and the field is named once, never "returned no token usage".
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from otel_harness import Otel
from techrevati.runtime import Orchestrator, UsageSnapshot, agent_session, agent_turn
from techrevati.runtime.telemetry.readings import usage_extract

# model-a: $3 / $15 per million (conftest).
_RESPONSE = {"model": "model-a", "usage": {"prompt_tokens": 1000, "completion_tokens": 100}}


@pytest.fixture(autouse=True)
def fresh_field_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(usage_extract, "_WARNED_FIELDS", set(), raising=False)


def test_a_callback_returning_no_usage_raises_after_booking_the_result(otel: Otel) -> None:
    @agent_turn("model-a", usage=lambda r: {"bad": 1})
    def ask() -> dict[str, Any]:
        return _RESPONSE

    @agent_turn("model-a")
    def ask_again() -> dict[str, Any]:
        return _RESPONSE

    with agent_session("w", budget_usd=1.0, enforce_budget=True, **otel.kwargs()) as s:
        with pytest.raises(TypeError) as raised:
            ask()
        message = str(raised.value)
        assert "returned dict: {'bad': 1}" in message
        assert "UsageSnapshot" in message and "or None" in message
        assert "booked at the usage its result reports" in message
        # Booked at what the response says: the next call is not refused.
        assert s.tracker.total_cost() == pytest.approx(1000 * 3e-6 + 100 * 15e-6)
        ask_again()
        assert s.tracker.turn_count == 2


def test_a_callback_returning_no_usage_for_a_result_without_any_says_so(otel: Otel) -> None:
    @agent_turn("model-a", usage=lambda r: 7)
    def ask() -> str:
        return "text"

    with (
        warnings.catch_warnings(record=True) as seen,
        agent_session("w", budget_usd=1.0, enforce_budget=True, **otel.kwargs()) as s,
    ):
        warnings.simplefilter("always")
        with pytest.raises(TypeError, match=r"returned int: 7.*booked as a call without usage"):
            ask()
        assert s.tracker.turn_count == 1
    said = [str(w.message) for w in seen]
    assert not [m for m in said if "returned no token usage" in m]
    assert [m for m in said if "usage callback" in m and "'model-a'" in m]


def test_a_callback_returning_an_empty_block_reads_the_result(otel: Otel) -> None:
    # A review: ``usage=lambda r: r.get("usage", {})``, a common idiom, raised TypeError
    # on a response without usage, where it used to return: an empty block is "none
    # here", as None is, and the result is read.
    @agent_turn("model-a", usage=lambda r: r.get("usage", {}))
    def ask(response: dict[str, Any]) -> dict[str, Any]:
        return response

    @agent_turn("model-a", usage=lambda chunk: chunk.get("usage", {}))
    def stream() -> Iterator[dict[str, Any]]:
        yield {"model": "model-a"}  # chunks without usage: none of them gives any
        yield {"model": "model-a", "choices": []}

    with agent_session("w", **otel.kwargs()) as s:
        assert ask({"model": "model-a"}) == {"model": "model-a"}
        ask(_RESPONSE)
        assert len(list(stream())) == 2  # the same in a streamed turn's chunks
    assert s.tracker.turn_count == 3
    assert s.tracker.total_cost() == pytest.approx(1000 * 3e-6 + 100 * 15e-6)


def test_a_stream_whose_callback_never_gives_usage_raises_at_its_end(otel: Otel) -> None:
    @agent_turn("model-a", usage=lambda chunk: "junk")
    def stream() -> Iterator[str]:
        yield "a"
        yield "b"

    with agent_session("w", **otel.kwargs()) as s:
        chunks = []
        with pytest.raises(TypeError, match="returned str: 'junk'"):
            for chunk in stream():
                chunks.append(chunk)
        assert chunks == ["a", "b"]
        assert s.tracker.turn_count == 1


def test_a_stream_whose_chunks_carry_usage_is_not_an_error(otel: Otel) -> None:
    # Chunks without usage are normal in a stream: junk for them is harmless
    # when another chunk gives the call's usage.
    @agent_turn("model-a", usage=lambda chunk: chunk)
    def stream() -> Iterator[object]:
        yield "a"
        yield UsageSnapshot(10, 2)

    with agent_session("w", **otel.kwargs()) as s:
        list(stream())
        assert s.tracker.total_input_tokens == 10


@pytest.mark.parametrize(
    ("bad", "named"),
    [("many", "prompt_tokens='many'"), (-1000, "prompt_tokens=-1000")],
)
def test_a_bad_prompt_count_keeps_the_completion_count_and_is_named(
    otel: Otel, bad: object, named: str
) -> None:
    @agent_turn("model-a")
    def ask() -> dict[str, Any]:
        return {"model": "model-a", "usage": {"prompt_tokens": bad, "completion_tokens": 3}}

    with (
        warnings.catch_warnings(record=True) as seen,
        agent_session("w", budget_usd=1.0, enforce_budget=True, **otel.kwargs()) as s,
    ):
        warnings.simplefilter("always")
        ask()
        ask()  # said once
        assert s.tracker.total_cost() == pytest.approx(2 * 3 * 15e-6)
    said = [str(w.message) for w in seen]
    assert not [m for m in said if "returned no token usage" in m]
    assert len([m for m in said if named in m]) == 1


def test_a_bad_output_count_of_an_anthropic_block_keeps_its_input() -> None:
    with pytest.warns(RuntimeWarning, match=r"output_tokens=nan"):
        usage = usage_extract.extract_usage(
            {"usage": {"input_tokens": 10, "output_tokens": float("nan")}}
        )
    assert usage == UsageSnapshot(10, 0)


def test_run_turn_estimate_usage_returning_junk_is_said_as_the_callbacks_fault(otel: Otel) -> None:
    orch = Orchestrator(role="w", phase="p", budget_usd=1.0, enforce_budget=True, **otel.kwargs())
    with warnings.catch_warnings(record=True) as seen, orch.session() as s:
        warnings.simplefilter("always")
        with pytest.raises(TypeError, match="must return a UsageSnapshot, got dict"):
            s.run_turn(lambda: "text", model="model-a", estimate_usage=lambda r: {"bad": 1})  # type: ignore[arg-type,return-value]
        assert s.tracker.turn_count == 1
    said = [str(w.message) for w in seen]
    assert not [m for m in said if "returned no token usage" in m]
    assert [m for m in said if "usage callback" in m]
