"""Tests for techrevati.runtime.agent_events (contract §2)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from techrevati.runtime.agent_events import (
    AgentEvent,
    AgentEventName,
    AgentEventStatus,
    AgentFailureClass,
)

EXPECTED_NAMES = {
    "AGENT_STARTED": "agent.started",
    "AGENT_READY": "agent.ready",
    "AGENT_BLOCKED": "agent.blocked",
    "AGENT_TOOL_CALLED": "agent.tool_called",
    "AGENT_TOOL_COMPLETED": "agent.tool_completed",
    "AGENT_COMPLETED": "agent.completed",
    "AGENT_FAILED": "agent.failed",
    "PHASE_STARTED": "phase.started",
    "PHASE_COMPLETED": "phase.completed",
    "PHASE_GATE_EVALUATED": "phase.gate_evaluated",
    "PHASE_GATE_PASSED": "phase.gate_passed",
    "PHASE_GATE_FAILED": "phase.gate_failed",
    "RECOVERY_ATTEMPTED": "agent.recovery.attempted",
    "RECOVERY_SUCCEEDED": "agent.recovery.succeeded",
    "RECOVERY_FAILED": "agent.recovery.failed",
    "RECOVERY_ESCALATED": "agent.recovery.escalated",
    "RECOVERY_PROVIDER_SWITCHED": "agent.recovery.provider_switched",
    "HOOK_PRE_TOOL": "hook.pre_tool",
    "HOOK_POST_TOOL": "hook.post_tool",
}

EXPECTED_STATUSES = {
    "RUNNING": "running",
    "READY": "ready",
    "BLOCKED": "blocked",
    "GREEN": "green",
    "RED": "red",
    "COMPLETED": "completed",
    "FAILED": "failed",
}

EXPECTED_FAILURE_CLASSES = {
    "LLM_TIMEOUT": "llm_timeout",
    "LLM_ERROR": "llm_error",
    "TOOL_ERROR": "tool_error",
    "CONTEXT_OVERFLOW": "context_overflow",
    "RATE_LIMIT": "rate_limit",
    "DEPENDENCY_FAILED": "dependency_failed",
    "MEMORY_CORRUPTION": "memory_corruption",
    "VALIDATION_ERROR": "validation_error",
    "PROMPT_REJECTION": "prompt_rejection",
    "UNKNOWN": "unknown",
}


# -- enums ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("enum_cls", "expected"),
    [
        (AgentEventName, EXPECTED_NAMES),
        (AgentEventStatus, EXPECTED_STATUSES),
        (AgentFailureClass, EXPECTED_FAILURE_CLASSES),
    ],
)
def test_enum_members_exact(enum_cls: Any, expected: dict[str, str]) -> None:
    assert {m.name: m.value for m in enum_cls} == expected


def test_enums_are_str_enums_not_strenum() -> None:
    member = AgentEventName.AGENT_STARTED
    assert isinstance(member, str)
    assert member == "agent.started"
    assert str(member) == "AgentEventName.AGENT_STARTED"
    assert json.dumps(member) == '"agent.started"'
    assert str(AgentFailureClass.LLM_ERROR) == "AgentFailureClass.LLM_ERROR"
    assert str(AgentEventStatus.RED) == "AgentEventStatus.RED"


def test_failure_class_has_exactly_ten_members() -> None:
    assert len(AgentFailureClass) == 10


# -- construction defaults -----------------------------------------------------


def test_defaults_and_timestamp_format() -> None:
    ev = AgentEvent(AgentEventName.AGENT_READY, AgentEventStatus.READY)
    assert ev.role is None
    assert ev.phase is None
    assert ev.project_id is None
    assert ev.failure_class is None
    assert ev.detail is None
    assert ev.data is None
    assert ev.emitted_at.endswith("+00:00")
    parsed = datetime.fromisoformat(ev.emitted_at)
    assert parsed.utcoffset() == timedelta(0)


def test_emitted_at_is_per_instance() -> None:
    a = AgentEvent(AgentEventName.AGENT_READY, AgentEventStatus.READY, emitted_at="x")
    b = AgentEvent(AgentEventName.AGENT_READY, AgentEventStatus.READY)
    assert a.emitted_at == "x"
    assert b.emitted_at != "x"


def test_positional_field_order() -> None:
    ev = AgentEvent(
        AgentEventName.AGENT_FAILED,
        AgentEventStatus.FAILED,
        "t",
        "r",
        "p",
        3,
        AgentFailureClass.TOOL_ERROR,
        "d",
        {"k": 1},
    )
    assert (ev.emitted_at, ev.role, ev.phase, ev.project_id) == ("t", "r", "p", 3)
    assert (ev.failure_class, ev.detail, ev.data) == (AgentFailureClass.TOOL_ERROR, "d", {"k": 1})


def test_frozen() -> None:
    ev = AgentEvent.started("r", "p")
    with pytest.raises(AttributeError):
        ev.role = "other"  # type: ignore[misc]


# -- factories -----------------------------------------------------------------


def _fields(ev: AgentEvent) -> tuple[Any, ...]:
    return (ev.event, ev.status, ev.role, ev.phase, ev.failure_class, ev.detail, ev.data)


N, S, FC = AgentEventName, AgentEventStatus, AgentFailureClass


@pytest.mark.parametrize(
    ("ev", "expected"),
    [
        (AgentEvent.started("r", "p"), (N.AGENT_STARTED, S.RUNNING, "r", "p", None, None, None)),
        (
            AgentEvent.completed("r", "p"),
            (N.AGENT_COMPLETED, S.COMPLETED, "r", "p", None, None, None),
        ),
        (
            AgentEvent.completed("r", "p", "done"),
            (N.AGENT_COMPLETED, S.COMPLETED, "r", "p", None, "done", None),
        ),
        (
            AgentEvent.completed("r", "p", detail="kw"),
            (N.AGENT_COMPLETED, S.COMPLETED, "r", "p", None, "kw", None),
        ),
        (
            AgentEvent.failed("r", "p", FC.LLM_TIMEOUT),
            (N.AGENT_FAILED, S.FAILED, "r", "p", FC.LLM_TIMEOUT, None, None),
        ),
        (
            AgentEvent.failed("r", "p", FC.TOOL_ERROR, "bad"),
            (N.AGENT_FAILED, S.FAILED, "r", "p", FC.TOOL_ERROR, "bad", None),
        ),
        (AgentEvent.phase_started("p"), (N.PHASE_STARTED, S.RUNNING, None, "p", None, None, None)),
        (AgentEvent.gate_passed("p"), (N.PHASE_GATE_PASSED, S.GREEN, None, "p", None, None, None)),
        (
            AgentEvent.gate_passed("p", "observed=STRICT"),
            (N.PHASE_GATE_PASSED, S.GREEN, None, "p", None, "observed=STRICT", None),
        ),
        (AgentEvent.gate_failed("p"), (N.PHASE_GATE_FAILED, S.RED, None, "p", None, None, None)),
        (
            AgentEvent.gate_failed("p", "observed=MINIMAL"),
            (N.PHASE_GATE_FAILED, S.RED, None, "p", None, "observed=MINIMAL", None),
        ),
        (
            AgentEvent.recovery_attempted("r", "p"),
            (N.RECOVERY_ATTEMPTED, S.RUNNING, "r", "p", None, None, None),
        ),
        (
            AgentEvent.recovery_attempted("r", "p", "llm_error: recovered"),
            (N.RECOVERY_ATTEMPTED, S.RUNNING, "r", "p", None, "llm_error: recovered", None),
        ),
    ],
)
def test_factories(ev: AgentEvent, expected: tuple[Any, ...]) -> None:
    assert _fields(ev) == expected
    assert ev.project_id is None


# -- copy builders -------------------------------------------------------------


def test_copy_builders_return_new_instances_and_chain() -> None:
    base = AgentEvent.started("r", "p")
    chained = (
        base.with_failure_class(FC.RATE_LIMIT).with_detail("d").with_data({"a": 1}).with_project(42)
    )
    assert chained is not base
    assert (chained.failure_class, chained.detail, chained.data, chained.project_id) == (
        FC.RATE_LIMIT,
        "d",
        {"a": 1},
        42,
    )
    # receiver untouched, everything else carried over
    assert _fields(base) == (N.AGENT_STARTED, S.RUNNING, "r", "p", None, None, None)
    assert base.project_id is None
    assert chained.emitted_at == base.emitted_at
    assert (chained.event, chained.role, chained.phase) == (base.event, "r", "p")


@pytest.mark.parametrize(
    ("method", "arg", "attr"),
    [
        ("with_failure_class", FC.UNKNOWN, "failure_class"),
        ("with_detail", "x", "detail"),
        ("with_data", {"y": 2}, "data"),
        ("with_project", 9, "project_id"),
    ],
)
def test_each_copy_builder_replaces_one_field(method: str, arg: Any, attr: str) -> None:
    base = AgentEvent.completed("r", "p", "orig")
    copy = getattr(base, method)(arg)
    assert getattr(copy, attr) == arg
    for name in ("event", "status", "emitted_at", "role", "phase", "project_id", "detail"):
        if name != attr:
            assert getattr(copy, name) == getattr(base, name)


# -- to_dict / to_json -----------------------------------------------------------


def test_to_dict_minimal_omits_none_fields() -> None:
    ev = AgentEvent(AgentEventName.AGENT_STARTED, AgentEventStatus.RUNNING, emitted_at="T")
    assert ev.to_dict() == {
        "event": "agent.started",
        "type": "started",
        "status": "running",
        "emitted_at": "T",
    }


def test_to_dict_full() -> None:
    ev = AgentEvent.failed("r", "p", FC.LLM_ERROR, "boom").with_project(5).with_data({"k": [1]})
    d = ev.to_dict()
    assert d == {
        "event": "agent.failed",
        "type": "failed",
        "status": "failed",
        "emitted_at": ev.emitted_at,
        "role": "r",
        "phase": "p",
        "project_id": 5,
        "failure_class": "llm_error",
        "detail": "boom",
        "data": {"k": [1]},
    }
    assert type(d["failure_class"]) is str
    assert type(d["event"]) is str
    assert type(d["status"]) is str
    json.dumps(d)  # serialisable


def test_to_dict_keeps_falsy_but_not_none_values() -> None:
    ev = AgentEvent(
        AgentEventName.AGENT_READY,
        AgentEventStatus.READY,
        role="",
        project_id=0,
        detail="",
        data={},
    )
    d = ev.to_dict()
    assert d["role"] == ""
    assert d["project_id"] == 0
    assert d["detail"] == ""
    assert d["data"] == {}
    assert "phase" not in d


@pytest.mark.parametrize("name", list(AgentEventName))
def test_type_is_last_dotted_segment(name: AgentEventName) -> None:
    ev = AgentEvent(name, AgentEventStatus.RUNNING)
    assert ev.to_dict()["type"] == name.value.split(".")[-1]


def test_type_examples() -> None:
    assert AgentEvent.started("r", "p").to_dict()["type"] == "started"
    assert AgentEvent.recovery_attempted("r", "p").to_dict()["type"] == "attempted"


def test_to_json_keeps_non_ascii() -> None:
    ev = AgentEvent.completed("r", "p", "handoff → x: café")
    text = ev.to_json()
    assert "→" in text and "café" in text
    assert "\\u" not in text
    assert json.loads(text) == ev.to_dict()


# -- from_dict / from_json --------------------------------------------------------


def test_round_trip_every_field() -> None:
    ev = AgentEvent(
        AgentEventName.RECOVERY_PROVIDER_SWITCHED,
        AgentEventStatus.BLOCKED,
        emitted_at="2024-01-01T00:00:00+00:00",
        role="r",
        phase="p",
        project_id=11,
        failure_class=AgentFailureClass.DEPENDENCY_FAILED,
        detail="d",
        data={"nested": {"a": 1}},
    )
    assert AgentEvent.from_dict(ev.to_dict()) == ev
    assert AgentEvent.from_json(ev.to_json()) == ev


def test_round_trip_minimal() -> None:
    ev = AgentEvent.phase_started("p")
    back = AgentEvent.from_dict(ev.to_dict())
    assert back == ev
    assert back.failure_class is None


def test_from_dict_accepts_enum_members() -> None:
    ev = AgentEvent.from_dict(
        {
            "event": AgentEventName.HOOK_PRE_TOOL,
            "status": AgentEventStatus.GREEN,
            "failure_class": AgentFailureClass.UNKNOWN,
        }
    )
    assert ev.event is AgentEventName.HOOK_PRE_TOOL
    assert ev.status is AgentEventStatus.GREEN
    assert ev.failure_class is AgentFailureClass.UNKNOWN


def test_from_dict_converts_strings_to_members() -> None:
    ev = AgentEvent.from_dict(
        {"event": "agent.failed", "status": "failed", "failure_class": "tool_error"}
    )
    assert ev.event is AgentEventName.AGENT_FAILED
    assert ev.status is AgentEventStatus.FAILED
    assert ev.failure_class is AgentFailureClass.TOOL_ERROR


def test_from_dict_ignores_type_and_defaults_emitted_at() -> None:
    ev = AgentEvent.from_dict({"event": "agent.ready", "status": "ready", "type": "bogus"})
    assert ev.event is AgentEventName.AGENT_READY
    assert datetime.fromisoformat(ev.emitted_at).utcoffset() == timedelta(0)


@pytest.mark.parametrize("bad_fc", [123, 1.5, ["llm_error"], {"x": 1}, None])
def test_from_dict_non_string_failure_class_is_absent(bad_fc: Any) -> None:
    ev = AgentEvent.from_dict(
        {"event": "agent.failed", "status": "failed", "failure_class": bad_fc}
    )
    assert ev.failure_class is None


def test_from_dict_unknown_failure_class_string_raises() -> None:
    with pytest.raises(ValueError, match="failure_class") as info:
        AgentEvent.from_dict({"event": "agent.failed", "status": "failed", "failure_class": "zzz"})
    assert "zzz" in str(info.value)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"status": "running"}, "event"),
        ({"event": None, "status": "running"}, "event"),
        ({"event": 3, "status": "running"}, "event"),
        ({"event": "agent.started"}, "status"),
        ({"event": "agent.started", "status": 1}, "status"),
        ({"event": "agent.started", "status": ["running"]}, "status"),
    ],
)
def test_from_dict_missing_or_wrong_type_names_field(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field} field missing or invalid: "):
        AgentEvent.from_dict(payload)


def test_from_dict_unknown_event_value_raises_naming_it() -> None:
    with pytest.raises(ValueError, match=r"agent\.nope") as info:
        AgentEvent.from_dict({"event": "agent.nope", "status": "running"})
    assert "event field missing or invalid" in str(info.value)


def test_from_dict_unknown_status_value_raises_naming_it() -> None:
    with pytest.raises(ValueError, match="status field missing or invalid") as info:
        AgentEvent.from_dict({"event": "agent.started", "status": "sleepy"})
    assert "'sleepy'" in str(info.value)


def test_from_dict_rejects_wrong_status_enum() -> None:
    # An AgentEventName member is a str, but not a valid status value.
    with pytest.raises(ValueError, match="status"):
        AgentEvent.from_dict({"event": "agent.started", "status": AgentEventName.AGENT_STARTED})


def test_from_dict_rejects_non_mapping() -> None:
    with pytest.raises(TypeError, match="list"):
        AgentEvent.from_dict(["event", "status"])  # type: ignore[arg-type]


def test_from_json_parses() -> None:
    ev = AgentEvent.from_json('{"event": "phase.gate_failed", "status": "red", "detail": "x"}')
    assert ev.event is AgentEventName.PHASE_GATE_FAILED
    assert ev.status is AgentEventStatus.RED
    assert ev.detail == "x"


def test_from_json_invalid_json_raises_value_error() -> None:
    with pytest.raises(ValueError):
        AgentEvent.from_json("{not json")


# -- to_otel_attributes -------------------------------------------------------------


def test_otel_attributes_minimal() -> None:
    ev = AgentEvent(AgentEventName.AGENT_READY, AgentEventStatus.READY, emitted_at="T")
    assert ev.to_otel_attributes() == {
        "agent.event": "agent.ready",
        "agent.event.status": "ready",
        "agent.event.timestamp": "T",
    }


def test_otel_attributes_full_and_excludes_data() -> None:
    ev = (
        AgentEvent.failed("r", "p", FC.CONTEXT_OVERFLOW, "too long")
        .with_project(8)
        .with_data({"secret": "x"})
    )
    attrs = ev.to_otel_attributes()
    assert attrs == {
        "agent.event": "agent.failed",
        "agent.event.status": "failed",
        "agent.event.timestamp": ev.emitted_at,
        "agent.role": "r",
        "agent.phase": "p",
        "agent.project_id": 8,
        "agent.failure_class": "context_overflow",
        "agent.detail": "too long",
    }
    assert type(attrs["agent.project_id"]) is int
    assert type(attrs["agent.failure_class"]) is str
    assert not any("data" in k or "secret" in k for k in attrs)
