"""Tests for techrevati.runtime.handoffs (contract §6)."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta

import pytest

from techrevati.runtime.handoffs import Handoff


def test_field_order_and_defaults() -> None:
    assert [f.name for f in dataclasses.fields(Handoff)] == [
        "source_role",
        "target_role",
        "phase",
        "reason",
        "context",
        "project_id",
        "target_worker_id",
        "created_at",
    ]
    h = Handoff("a", "b", "p", "why")
    assert h.context == {}
    assert h.project_id is None
    assert h.target_worker_id == ""
    assert datetime.fromisoformat(h.created_at).utcoffset() == timedelta(0)
    assert Handoff("a", "b", "p", "why").context is not h.context


def test_positional_construction() -> None:
    h = Handoff("a", "b", "p", "why", {"k": 1}, 9, "b-p-1234abcd", "T")
    assert (h.context, h.project_id, h.target_worker_id, h.created_at) == (
        {"k": 1},
        9,
        "b-p-1234abcd",
        "T",
    )


def test_frozen() -> None:
    h = Handoff("a", "b", "p", "why")
    with pytest.raises(dataclasses.FrozenInstanceError):
        h.reason = "other"  # type: ignore[misc]


def test_to_dict_exact_keys_and_values() -> None:
    h = Handoff("researcher", "writer", "draft", "done", {"doc": "x"}, 4, "wid", "T")
    assert h.to_dict() == {
        "source_role": "researcher",
        "target_role": "writer",
        "phase": "draft",
        "reason": "done",
        "context": {"doc": "x"},
        "project_id": 4,
        "target_worker_id": "wid",
        "created_at": "T",
    }
    json.dumps(h.to_dict())


def test_to_dict_context_is_shallow_copy() -> None:
    inner = [1, 2]
    h = Handoff("a", "b", "p", "why", {"items": inner})
    d = h.to_dict()
    assert d["context"] is not h.context
    d["context"]["new"] = True
    assert "new" not in h.context
    # shallow: nested objects are shared
    assert d["context"]["items"] is inner
