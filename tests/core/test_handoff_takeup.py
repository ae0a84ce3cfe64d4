"""Handoffs: the target's session takes its worker up; a refused handoff leaves nothing."""

from __future__ import annotations

import asyncio

import pytest

from techrevati.runtime import AgentStatus, Orchestrator
from techrevati.runtime.agent_lifecycle import InvalidTransitionError


def test_the_targets_session_takes_the_handoff_up() -> None:
    """The handoff's placeholder worker ends when a session of its role opens."""
    writer = Orchestrator(role="writer", phase="draft", project_id=42)
    handoffs = []
    for _ in range(2):  # two drafts handed to the editor before it runs
        with writer.session() as session:
            handoffs.append(session.handoff_to("editor", reason="needs review"))
    registry = writer.registry
    assert [w.worker_id for w in registry.list_active()] == [h.target_worker_id for h in handoffs]
    editor = Orchestrator(role="editor", phase="draft", project_id=42, registry=registry)
    with editor.session() as first:
        # The oldest handoff is this session's; the other still waits for its session.
        assert [w.worker_id for w in registry.list_active()] == [
            handoffs[1].target_worker_id,
            first.worker.worker_id,
        ]
    taken = registry.get(handoffs[0].target_worker_id)
    assert taken is not None and taken.status is AgentStatus.CANCELLED
    assert taken.events[-1].detail == f"taken up by {first.worker.worker_id}"
    with editor.session():
        pass
    assert registry.list_active() == []  # no placeholder left behind


def test_a_handoff_from_a_paused_session_is_refused_before_anything_is_registered() -> None:
    orch = Orchestrator(role="src", phase="p", project_id=7)

    async def main() -> None:
        async with orch.asession() as session:
            waiting = asyncio.ensure_future(session.pause_for_input("which?"))
            await asyncio.sleep(0)
            assert session.worker.status is AgentStatus.WAITING_FOR_INPUT
            with pytest.raises(InvalidTransitionError, match="waiting_for_input → completed"):
                session.handoff_to("dst", reason="r")
            assert [w.role for w in orch.registry.get_by_project(7)] == ["src"]
            session.provide_input("this")
            await waiting

    asyncio.run(main())


@pytest.mark.parametrize(("target", "error"), [(None, TypeError), ("", ValueError)])
def test_a_handoff_needs_a_target_role(target: object, error: type[Exception]) -> None:
    with Orchestrator(role="src", project_id=9).session() as session:
        with pytest.raises(error, match="target_role"):
            session.handoff_to(target, reason="r")  # type: ignore[arg-type]
        assert session.worker.status is AgentStatus.RUNNING
    assert [w.role for w in session.registry.get_by_project(9)] == ["src"]


def test_a_handoff_context_json_cannot_carry_still_leaves_summary_json() -> None:
    import datetime
    import json

    with Orchestrator(role="j").session() as session:
        context = {"when": datetime.datetime(2026, 1, 1), "ids": {2, 1}, "pair": (1, "a")}
        handoff = session.handoff_to("k", "why", context=context)
    assert handoff.context == context  # the caller's own objects, as given
    summary = json.loads(json.dumps(session.summary()))
    data = summary["agent_events"][-1]["data"]["handoff"]["context"]
    assert data == {"when": "2026-01-01T00:00:00", "ids": [1, 2], "pair": [1, "a"]}
    assert json.loads(session.events[-1].to_json())["data"]["handoff"]["context"] == data


def test_a_block_that_raises_after_its_handoff_leaves_an_error_on_the_session_span() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import StatusCode

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    orch = Orchestrator(role="src", tracer_provider=provider)
    with pytest.raises(RuntimeError), orch.session() as session:
        session.handoff_to("dst", reason="r")
        raise RuntimeError("model blew up after the handoff")
    [span] = [s for s in exporter.get_finished_spans() if s.name == "invoke_agent src"]
    assert span.status.status_code is StatusCode.ERROR  # it said OK: the error escaped unseen
    assert span.attributes is not None and "error.type" in span.attributes
    assert span.attributes["techrevati.session.outcome"] == "completed"  # the handoff was made
