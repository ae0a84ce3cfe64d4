"""With content capture off, nothing a user typed leaves the process.

A secret is planted in every field a user controls (prompt, result, an
exception message, tool arguments and result, a handoff reason, a guardrail
reason); every exported span is then serialised and searched for it. The same
run with capture on must show the secret, so the search can fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from otel_harness import Otel, make_otel
from techrevati.runtime import (
    GuardrailOutcome,
    GuardrailViolatedError,
    ModelPricing,
    Orchestrator,
    UsageSnapshot,
    agent_session,
    agent_turn,
    register_pricing,
    tool_call,
)
from techrevati.runtime.telemetry.calls.content import set_capture_content

SECRET = "sk-live-PLANTED-7f3a9"


class _Blocks:
    """A guardrail whose refusal reason quotes what it saw."""

    name = "leak-check"

    def check_pre(self, *, role: str, tool: str) -> GuardrailOutcome:
        return GuardrailOutcome(allowed=True)

    def check_post(self, value: Any, *, role: str, tool: str) -> GuardrailOutcome:
        return GuardrailOutcome(allowed=False, reason=f"output contained {value}")


@pytest.fixture
def capture() -> Iterator[None]:
    yield
    set_capture_content(None)


def _run(otel: Otel) -> str:
    register_pricing("m", ModelPricing(1.0, 1.0))

    @agent_turn("m", usage=UsageSnapshot(10, 2))
    def ask(prompt: str) -> str:
        return f"answer about {prompt}"

    @agent_turn("m")
    def broken(prompt: str) -> str:
        raise ValueError(f"provider rejected prompt {prompt!r}")

    @tool_call()
    def lookup(term: str) -> str:
        return f"definition of {term}"

    with agent_session("w", guardrails=[], **otel.kwargs()) as session:
        ask(f"tell me {SECRET}")
        with pytest.raises(ValueError):
            broken(f"use {SECRET}")
        lookup(SECRET)
        session.handoff_to("editor", reason=f"needs {SECRET} checked")
    orch = Orchestrator(role="g", phase="p", guardrails=[_Blocks()], **otel.kwargs())
    with orch.session() as guarded, pytest.raises(GuardrailViolatedError):
        guarded.run_tool("echo", lambda: SECRET)
    with pytest.raises(RuntimeError), orch.session():
        raise RuntimeError(f"session died holding {SECRET}")
    return "\n".join(span.to_json() for span in otel.spans())


def test_capture_off_keeps_every_planted_secret_in_the_process(capture: None) -> None:
    set_capture_content(False)
    otel = make_otel()
    dump = _run(otel)
    assert SECRET not in dump
    # What is recorded instead: the error's type, never its message.
    failed = [s for s in otel.spans("chat m") if s.status.description]
    assert [s.status.description for s in failed] == ["ValueError"]
    event = next(e for e in failed[0].events if e.name == "exception")
    assert dict(event.attributes or {})["exception.message"] == "ValueError"
    assert "Traceback" in str(dict(event.attributes or {})["exception.stacktrace"])


def test_capture_on_records_them(capture: None) -> None:
    set_capture_content(True)
    dump = _run(make_otel())
    assert dump.count(SECRET) >= 5
