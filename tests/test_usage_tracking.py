"""Tests for techrevati.runtime.usage_tracking (API contract §11)."""

from __future__ import annotations

import json
import logging
import math
import pickle
import sys
import threading
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from techrevati.runtime import usage_tracking
from techrevati.runtime.pricing import MAX_CALL_USD, price_call
from techrevati.runtime.usage_tracking import (
    PRICING_TABLE,
    BudgetExceededError,
    ModelPricing,
    UsageSnapshot,
    UsageTracker,
    has_pricing,
    load_pricing_from_file,
    register_pricing,
)

LOGGER_NAME = "techrevati.runtime.usage_tracking"
WARNING_TEXT = (
    "no pricing registered for model={}; cost will be $0. "
    "Call register_pricing() or load_pricing_from_file()."
)


@pytest.fixture
def empty_table() -> None:
    """Start from an empty price table (conftest restores it afterwards)."""
    PRICING_TABLE.clear()
    usage_tracking._warned_unpriced_models.clear()


def _write(tmp_path: Path, content: Any, name: str = "prices.json") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content), "utf-8")
    return path


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER_NAME and r.levelno == logging.WARNING]


# --- BudgetExceededError ---------------------------------------------------------


def test_budget_error_attributes_and_message() -> None:
    err = BudgetExceededError(10.0, 12.5)
    assert err.budget_usd == 10.0
    assert err.current_cost_usd == 12.5
    assert str(err) == "budget exceeded: $12.5000 > $10.0000"
    kw = BudgetExceededError(budget_usd=0.5, current_cost_usd=0.51234)
    assert "0.5123" in str(kw) and "0.5000" in str(kw)
    assert isinstance(err, Exception)


def test_budget_error_pickles() -> None:
    clone = pickle.loads(pickle.dumps(BudgetExceededError(1.0, 2.0)))
    assert (clone.budget_usd, clone.current_cost_usd) == (1.0, 2.0)
    assert str(clone) == "budget exceeded: $2.0000 > $1.0000"


# --- ModelPricing ----------------------------------------------------------------


def test_model_pricing_positional_defaults_and_validation() -> None:
    price = ModelPricing(3.0, 15.0)
    assert price == ModelPricing(
        input_per_million=3.0,
        output_per_million=15.0,
        cache_write_per_million=0.0,
        cache_read_per_million=0.0,
    )
    with pytest.raises(ValueError, match="input_per_million"):  # contract §11.2, our change
        ModelPricing(-1.0, 0.0)
    with pytest.raises(FrozenInstanceError):
        price.input_per_million = 1.0  # type: ignore[misc]


# --- registry ----------------------------------------------------------------------


def test_bundled_file_is_empty_and_loads_nothing() -> None:
    before = dict(PRICING_TABLE)
    usage_tracking._load_bundled_pricing()
    assert dict(PRICING_TABLE) == before
    assert isinstance(PRICING_TABLE, dict)


def test_register_lowercases_and_overwrites(empty_table: None) -> None:
    register_pricing("Model-A", ModelPricing(1.0, 2.0))
    assert dict(PRICING_TABLE) == {"model-a": ModelPricing(1.0, 2.0)}
    register_pricing("MODEL-a", ModelPricing(5.0, 6.0))
    assert dict(PRICING_TABLE) == {"model-a": ModelPricing(5.0, 6.0)}


def test_has_pricing_exact_case_and_prefix(empty_table: None) -> None:
    register_pricing("model-z", ModelPricing(1.0, 1.0))
    register_pricing("family", ModelPricing(1.0, 1.0))
    assert has_pricing("model-z") is True
    assert has_pricing("Model-Z") is True
    assert has_pricing("family-20260514") is True
    assert has_pricing("fam") is False
    assert has_pricing("other") is False
    assert has_pricing("") is False


def test_resolution_exact_then_longest_prefix_then_zero(empty_table: None) -> None:
    # Invented names, unknown to the bundled database (see test_pricing.py for real ones).
    tracker = UsageTracker()
    million_in = UsageSnapshot(input_tokens=1_000_000)
    register_pricing("acme", ModelPricing(1.0, 0.0))
    register_pricing("acme-4", ModelPricing(2.0, 0.0))
    register_pricing("acme-4o-small", ModelPricing(4.0, 0.0))
    register_pricing("acme-4o-small-2024", ModelPricing(8.0, 0.0))
    assert tracker.cost_for_turn("acme-4o-small", million_in) == 4.0  # exact beats prefixes
    assert tracker.cost_for_turn("ACME-4o-small-2024-beta", million_in) == 8.0  # longest
    # A dated snapshot is the registered model itself, before any prefix (pricing/names.py).
    assert tracker.cost_for_turn("ACME-4o-small-2024-07-18", million_in) == 4.0
    assert tracker.cost_for_turn("acme-4o", million_in) == 2.0
    assert tracker.cost_for_turn("acme-3.5", million_in) == 1.0
    assert tracker.cost_for_turn("claude", million_in) == 0.0  # unknown costs $0


def test_zero_rate_model_counts_as_priced(
    empty_table: None, caplog: pytest.LogCaptureFixture
) -> None:
    register_pricing("free", ModelPricing(0.0, 0.0))
    assert has_pricing("free") is True
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        UsageTracker().record_turn("free", UsageSnapshot(10, 10))
    assert _warnings(caplog) == []


def test_in_place_mutation_seen_by_lookups(empty_table: None) -> None:
    tracker = UsageTracker()
    snap = UsageSnapshot(input_tokens=1_000_000)
    register_pricing("m", ModelPricing(3.0, 0.0))
    assert tracker.cost_for_turn("m-1", snap) == 3.0  # fills the resolution cache
    PRICING_TABLE.clear()
    assert has_pricing("m-1") is False
    assert tracker.cost_for_turn("m-1", snap) == 0.0
    PRICING_TABLE.update({"m": ModelPricing(5.0, 0.0)})
    assert tracker.cost_for_turn("m-1", snap) == 5.0
    PRICING_TABLE["m-1"] = ModelPricing(7.0, 0.0)
    assert tracker.cost_for_turn("m-1", snap) == 7.0
    del PRICING_TABLE["m-1"]
    assert tracker.cost_for_turn("m-1", snap) == 5.0
    table = PRICING_TABLE
    table |= {"m-": ModelPricing(6.0, 0.0)}
    assert table is PRICING_TABLE
    assert tracker.cost_for_turn("m-1", snap) == 6.0
    assert PRICING_TABLE.pop("m-") == ModelPricing(6.0, 0.0)
    assert tracker.cost_for_turn("m-1", snap) == 5.0
    PRICING_TABLE.setdefault("m-1", ModelPricing(9.0, 0.0))
    assert tracker.cost_for_turn("m-1", snap) == 9.0
    PRICING_TABLE.popitem()
    assert tracker.cost_for_turn("m-1", snap) == 5.0
    PRICING_TABLE.popitem()
    assert dict(PRICING_TABLE) == {}
    assert tracker.cost_for_turn("m-1", snap) == 0.0


def test_adding_longer_prefix_invalidates_cached_resolution(empty_table: None) -> None:
    snap = UsageSnapshot(input_tokens=1_000_000)
    register_pricing("vendor", ModelPricing(1.0, 0.0))
    tracker = UsageTracker()
    assert tracker.cost_for_turn("vendor-large-v2", snap) == 1.0
    register_pricing("vendor-large", ModelPricing(2.0, 0.0))
    assert tracker.cost_for_turn("vendor-large-v2", snap) == 2.0


def test_rebound_table_is_still_read_live(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(usage_tracking, "PRICING_TABLE", {"alt": ModelPricing(2.0, 0.0)})
    assert has_pricing("alt-1") is True
    assert UsageTracker().cost_for_turn("alt-1", UsageSnapshot(1_000_000)) == 2.0
    register_pricing("alt-1", ModelPricing(3.0, 0.0))
    assert UsageTracker().cost_for_turn("alt-1", UsageSnapshot(1_000_000)) == 3.0


def test_table_copies_are_plain_dicts() -> None:
    import copy

    assert type(copy.copy(PRICING_TABLE)) is dict
    assert type(pickle.loads(pickle.dumps(PRICING_TABLE))) is dict


# --- load_pricing_from_file ---------------------------------------------------------


def test_load_pricing_good_file(empty_table: None, tmp_path: Path) -> None:
    register_pricing("keep", ModelPricing(1.0, 1.0))
    register_pricing("over", ModelPricing(1.0, 1.0))
    path = _write(
        tmp_path,
        {
            "_comment": "ignored",
            "models": {
                "Big-Model": {
                    "input_per_million": 3,
                    "output_per_million": 15.0,
                    "cache_write_per_million": 3.75,
                    "cache_read_per_million": 0.3,
                },
                "over": {"input_per_million": 2.0, "output_per_million": 4.0},
            },
        },
    )
    load_pricing_from_file(path)
    assert dict(PRICING_TABLE) == {
        "keep": ModelPricing(1.0, 1.0),
        "over": ModelPricing(2.0, 4.0, 0.0, 0.0),
        "big-model": ModelPricing(3.0, 15.0, 3.75, 0.3),
    }
    load_pricing_from_file(str(_write(tmp_path, {"models": {}}, "empty.json")))
    assert len(PRICING_TABLE) == 3


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "top level must be a JSON object"),
        ({"models": []}, "'models' must be an object"),
        ({"models": {"bad": 3}}, "models['bad'] must be an object"),
        ({"models": {"bad": {"input_per_million": "3", "output_per_million": 1}}}, "bad"),
        ({"models": {"bad": {"input_per_million": True, "output_per_million": 1}}}, "bad"),
        ({"models": {"bad": {"input_per_million": None, "output_per_million": 1}}}, "bad"),
        ({"models": {"bad": {"input_per_million": -1, "output_per_million": 1}}}, "bad"),
        ('{"models": {"bad": {"input_per_million": NaN, "output_per_million": 1}}}', "bad"),
        ('{"models": {"bad": {"input_per_million": 1, "output_per_million": Infinity}}}', "bad"),
        (
            {
                "models": {
                    "bad": {
                        "input_per_million": 1,
                        "output_per_million": 1,
                        "cache_read_per_million": "x",
                    }
                }
            },
            "cache_read_per_million",
        ),
    ],
)
def test_load_pricing_malformed_raises_value_error(
    empty_table: None, tmp_path: Path, content: Any, fragment: str
) -> None:
    register_pricing("existing", ModelPricing(1.0, 2.0))
    before = dict(PRICING_TABLE)
    path = _write(tmp_path, content)
    with pytest.raises(ValueError) as info:
        load_pricing_from_file(path)
    assert str(path) in str(info.value)
    assert fragment in str(info.value)
    assert dict(PRICING_TABLE) == before


def test_load_pricing_non_utf8_is_value_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"models": {"caf\xe9": {}}}')
    with pytest.raises(ValueError, match=r"latin1\.json"):
        load_pricing_from_file(path)


def test_load_pricing_missing_models_key_is_key_error(tmp_path: Path) -> None:
    path = _write(tmp_path, {"model": {}})
    with pytest.raises(KeyError) as info:
        load_pricing_from_file(path)
    assert str(path) in str(info.value)
    assert "models" in str(info.value)


def test_load_pricing_missing_required_rate_is_key_error(empty_table: None, tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "models": {
                "good": {"input_per_million": 1.0, "output_per_million": 2.0},
                "half": {"input_per_million": 1.0},
            }
        },
    )
    with pytest.raises(KeyError) as info:
        load_pricing_from_file(path)
    message = str(info.value)
    assert str(path) in message and "half" in message and "output_per_million" in message
    assert dict(PRICING_TABLE) == {}  # the valid "good" entry was not merged either


def test_load_pricing_missing_file() -> None:
    with pytest.raises(FileNotFoundError):
        load_pricing_from_file("/nonexistent/prices.json")


# --- UsageSnapshot ---------------------------------------------------------------------


def test_snapshot_defaults_positional_equality() -> None:
    assert UsageSnapshot() == UsageSnapshot(0, 0, 0, 0)
    snap = UsageSnapshot(1, 2, 3, 4)
    assert (snap.input_tokens, snap.output_tokens) == (1, 2)
    assert (snap.cache_write_tokens, snap.cache_read_tokens) == (3, 4)
    assert snap == UsageSnapshot(
        input_tokens=1, output_tokens=2, cache_write_tokens=3, cache_read_tokens=4
    )
    assert snap != UsageSnapshot(1, 2, 3, 5)
    with pytest.raises(FrozenInstanceError):
        snap.input_tokens = 9  # type: ignore[misc]


def test_snapshot_dict_and_json_round_trip() -> None:
    snap = UsageSnapshot(5000, 1200, 7, 9)
    assert snap.to_dict() == {
        "input_tokens": 5000,
        "output_tokens": 1200,
        "cache_write_tokens": 7,
        "cache_read_tokens": 9,
    }
    assert UsageSnapshot.from_dict(snap.to_dict()) == snap
    assert json.loads(snap.to_json()) == snap.to_dict()
    assert UsageSnapshot.from_json(snap.to_json()) == snap


def test_snapshot_from_dict_missing_keys_are_zero() -> None:
    assert UsageSnapshot.from_dict({}) == UsageSnapshot()
    assert UsageSnapshot.from_dict({"output_tokens": 3, "extra": "x"}) == UsageSnapshot(0, 3)
    assert UsageSnapshot.from_dict({"input_tokens": 5.0}) == UsageSnapshot(5)
    assert type(UsageSnapshot.from_dict({"input_tokens": 5.0}).input_tokens) is int


@pytest.mark.parametrize("value", ["12", None, [1], True])
def test_snapshot_from_dict_non_numeric_is_type_error(value: object) -> None:
    with pytest.raises(TypeError, match="cache_read_tokens"):
        UsageSnapshot.from_dict({"cache_read_tokens": value})


def test_snapshot_from_dict_fractional_or_negative() -> None:
    with pytest.raises(ValueError, match="output_tokens"):
        UsageSnapshot.from_dict({"output_tokens": 1.5})
    with pytest.raises(ValueError, match="input_tokens"):
        UsageSnapshot.from_dict({"input_tokens": -3})


def test_snapshot_from_json_requires_object() -> None:
    with pytest.raises(TypeError):
        UsageSnapshot.from_json("[1, 2]")


@pytest.mark.parametrize("field", usage_tracking._TOKEN_FIELDS)
def test_snapshot_rejects_negative(field: str) -> None:
    with pytest.raises(ValueError, match=rf"{field}.*-5"):
        UsageSnapshot(**{field: -5})


@pytest.mark.parametrize("field", usage_tracking._TOKEN_FIELDS)
@pytest.mark.parametrize("value", [1.0, "3", None, True, False])
def test_snapshot_rejects_non_int(field: str, value: object) -> None:
    with pytest.raises(TypeError) as info:
        UsageSnapshot(**{field: value})  # type: ignore[arg-type]
    assert field in str(info.value)
    assert repr(value) in str(info.value)


def test_snapshot_accepts_int_subclass() -> None:
    from enum import IntEnum

    class N(IntEnum):
        TEN = 10

    assert UsageSnapshot(N.TEN).input_tokens == 10


# --- UsageTracker: recording ----------------------------------------------------------


def test_record_turn_appends_and_returns_none(empty_table: None) -> None:
    tracker = UsageTracker()
    assert tracker.turns == []
    snap = UsageSnapshot(10, 20)
    assert tracker.record_turn("m", snap) is None  # type: ignore[func-returns-value]
    tracker.record_turn("", snap)
    assert tracker.turns == [("m", snap), ("", snap)]
    assert tracker.turn_count == 2
    assert tracker.total_input_tokens == 20
    assert tracker.total_output_tokens == 40


def test_trackers_do_not_share_turns() -> None:
    a, b = UsageTracker(), UsageTracker()
    a.record_turn("m", UsageSnapshot(1))
    assert b.turns == []
    assert b.turn_count == 0


def test_repr_and_eq_hide_private_state() -> None:
    tracker = UsageTracker()
    assert "_lock" not in repr(tracker)
    assert repr(tracker) == "UsageTracker(turns=[], retain_turns=None)"
    other = UsageTracker()
    assert tracker == other
    tracker.record_turn("m", UsageSnapshot(1))
    other.record_turn("m", UsageSnapshot(1))
    assert tracker == other


def test_record_and_price_returns_turn_cost(empty_table: None) -> None:
    register_pricing("m", ModelPricing(3.0, 15.0))
    tracker = UsageTracker()
    cost = tracker.record_and_price("m", UsageSnapshot(input_tokens=1_000_000))
    assert cost == 3.0
    assert tracker.turns == [("m", UsageSnapshot(input_tokens=1_000_000))]
    assert tracker.record_and_price("unpriced", UsageSnapshot(5, 5)) == 0.0
    assert tracker.total_cost() == 3.0


def test_initial_turns_are_aggregated(empty_table: None) -> None:
    register_pricing("m", ModelPricing(1.0, 2.0))
    snap = UsageSnapshot(1_000_000, 1_000_000)
    tracker = UsageTracker(turns=[("m", snap), ("m", snap)])
    assert tracker.turn_count == 2
    assert tracker.total_cost() == 6.0
    assert tracker.summary()["total_input_tokens"] == 2_000_000


def test_direct_edits_to_turns_are_noticed(empty_table: None) -> None:
    register_pricing("m", ModelPricing(1.0, 0.0))
    tracker = UsageTracker()
    tracker.record_turn("m", UsageSnapshot(1_000_000))
    tracker.turns.append(("m", UsageSnapshot(2_000_000)))
    assert tracker.total_input_tokens == 3_000_000
    assert tracker.total_cost() == 3.0
    tracker.turns = []
    assert tracker.turn_count == 0
    assert tracker.total_cost() == 0.0
    tracker.record_turn("m", UsageSnapshot(1_000_000))
    assert tracker.turns == [("m", UsageSnapshot(1_000_000))]
    assert tracker.total_cost() == 1.0


# --- costs, formatting and budget ------------------------------------------------------


def test_cost_arithmetic_all_four_kinds(empty_table: None) -> None:
    register_pricing("m", ModelPricing(3.0, 15.0, 3.75, 0.30))
    tracker = UsageTracker()
    snap = UsageSnapshot(
        input_tokens=1000, output_tokens=500, cache_write_tokens=2000, cache_read_tokens=10_000
    )
    # 0.003 input + 0.0075 output + 0.0075 cache write + 0.003 cache read
    assert tracker.cost_for_turn("m", snap) == pytest.approx(0.021, rel=1e-12)
    for kind, expected in [
        (UsageSnapshot(input_tokens=1_000_000), 3.0),
        (UsageSnapshot(output_tokens=1_000_000), 15.0),
        (UsageSnapshot(cache_write_tokens=1_000_000), 3.75),
        (UsageSnapshot(cache_read_tokens=1_000_000), 0.30),
    ]:
        assert tracker.cost_for_turn("m", kind) == pytest.approx(expected, rel=1e-12)
    tracker.record_turn("m", snap)
    tracker.record_turn("m", snap)
    assert tracker.total_cost() == pytest.approx(0.042, rel=1e-12)
    assert tracker.turns == [("m", snap), ("m", snap)]  # cost_for_turn recorded nothing


def test_one_million_input_tokens_at_three_dollars(empty_table: None) -> None:
    register_pricing("model-a", ModelPricing(input_per_million=3.0, output_per_million=15.0))
    tracker = UsageTracker()
    tracker.record_turn("model-a", UsageSnapshot(input_tokens=1_000_000))
    assert tracker.total_cost() == 3.0


def test_seed_example_cost(empty_table: None) -> None:
    register_pricing("model-a", ModelPricing(input_per_million=3.0, output_per_million=15.0))
    tracker = UsageTracker()
    tracker.record_turn("model-a", UsageSnapshot(input_tokens=5000, output_tokens=1200))
    assert tracker.total_cost() == pytest.approx(0.033, rel=1e-12)
    assert tracker.format_cost() == "$0.03"


@pytest.mark.parametrize(
    ("input_tokens", "expected"),
    [
        (0, "$0.0000"),
        (8_400, "$0.0084"),
        (99, "$0.0001"),
        (10_000, "$0.01"),
        (3_000_000, "$3.00"),
        (1_234_567, "$1.23"),
    ],
)
def test_format_cost_thresholds(empty_table: None, input_tokens: int, expected: str) -> None:
    register_pricing("m", ModelPricing(1.0, 0.0))
    tracker = UsageTracker()
    tracker.record_turn("m", UsageSnapshot(input_tokens=input_tokens))
    assert tracker.format_cost() == expected


def test_empty_tracker_formatting_and_summary() -> None:
    tracker = UsageTracker()
    assert tracker.format_cost() == "$0.0000"
    assert tracker.total_cost() == 0.0
    assert tracker.per_model_summary() == {}
    assert tracker.summary() == {
        "turns": 0,
        "total_input_tokens": 0,
        "total_output_tokens": 0,
        "total_cost_usd": 0.0,
        "formatted_cost": "$0.0000",
    }


def test_budget_remaining_and_strict_over_budget(empty_table: None) -> None:
    register_pricing("m", ModelPricing(1.0, 0.0))
    tracker = UsageTracker()
    tracker.record_turn("m", UsageSnapshot(input_tokens=3_000_000))
    assert tracker.budget_remaining(5.0) == 2.0
    assert tracker.budget_remaining(1.0) == -2.0
    assert tracker.is_over_budget(3.0) is False  # equal is not over
    assert tracker.is_over_budget(2.99) is True
    assert tracker.is_over_budget(3.01) is False


def test_summary_rounds_cost_to_four_decimals(empty_table: None) -> None:
    register_pricing("m", ModelPricing(1.0, 2.0))
    tracker = UsageTracker()
    tracker.record_turn("m", UsageSnapshot(input_tokens=123_456, output_tokens=10))
    tracker.record_turn("x", UsageSnapshot(input_tokens=4, output_tokens=6))
    summary = tracker.summary()
    assert summary == {
        "turns": 2,
        "total_input_tokens": 123_460,
        "total_output_tokens": 16,
        "total_cost_usd": 0.1235,
        "formatted_cost": "$0.12",
    }
    assert tracker.total_cost() == pytest.approx(0.123476, rel=1e-12)  # unrounded
    json.dumps(summary)


def test_per_model_summary_order_and_exact_keys(empty_table: None) -> None:
    register_pricing("a", ModelPricing(1.0, 0.0))
    register_pricing("b", ModelPricing(2.0, 0.0))
    tracker = UsageTracker()
    million = UsageSnapshot(input_tokens=1_000_000)
    for model in ["B-1", "a", "B-1", "A", "zzz", "a"]:
        tracker.record_turn(model, million)
    summary = tracker.per_model_summary()
    assert list(summary) == ["B-1", "a", "A", "zzz"]
    assert summary == {"B-1": 4.0, "a": 2.0, "A": 1.0, "zzz": 0.0}
    tracker.record_turn("c", UsageSnapshot(input_tokens=1))
    assert list(tracker.per_model_summary())[-1] == "c"


def test_per_model_summary_is_unrounded(empty_table: None) -> None:
    register_pricing("m", ModelPricing(1.0, 0.0))
    tracker = UsageTracker()
    tracker.record_turn("m", UsageSnapshot(input_tokens=1))
    assert tracker.per_model_summary() == {"m": pytest.approx(1e-6, rel=1e-12)}


def test_reregistering_changes_history(empty_table: None) -> None:
    register_pricing("m", ModelPricing(1.0, 0.0))
    tracker = UsageTracker()
    tracker.record_turn("m", UsageSnapshot(input_tokens=1_000_000))
    assert tracker.total_cost() == 1.0
    register_pricing("m", ModelPricing(10.0, 0.0))
    assert tracker.total_cost() == 10.0
    assert tracker.per_model_summary() == {"m": 10.0}
    PRICING_TABLE.clear()
    assert tracker.total_cost() == 0.0


def test_running_total_follows_in_place_price_changes(empty_table: None) -> None:
    tracker = UsageTracker()
    million = UsageSnapshot(input_tokens=1_000_000)
    register_pricing("m", ModelPricing(1.0, 0.0))
    tracker.record_turn("m", million)
    assert tracker.total_cost() == 1.0  # running total now cached
    tracker.record_turn("m", million)
    assert tracker.total_cost() == 2.0  # incremented, not recomputed
    PRICING_TABLE["m"] = ModelPricing(4.0, 0.0)
    assert tracker.total_cost() == 8.0
    tracker.record_turn("m", million)
    assert tracker.total_cost() == 12.0
    PRICING_TABLE.clear()
    tracker.record_turn("m", million)
    assert tracker.total_cost() == 0.0
    assert tracker.is_over_budget(0.0) is False


def test_running_total_with_rebound_table(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = {"m": ModelPricing(1.0, 0.0)}
    monkeypatch.setattr(usage_tracking, "PRICING_TABLE", plain)
    tracker = UsageTracker()
    tracker.record_turn("m", UsageSnapshot(input_tokens=1_000_000))
    assert tracker.total_cost() == 1.0
    plain["m"] = ModelPricing(2.0, 0.0)  # a plain dict has no version: never cached
    assert tracker.total_cost() == 2.0


def test_late_registration_prices_unpriced_history(empty_table: None) -> None:
    tracker = UsageTracker()
    tracker.record_turn("later", UsageSnapshot(output_tokens=1_000_000))
    assert tracker.total_cost() == 0.0
    register_pricing("later", ModelPricing(0.0, 15.0))
    assert tracker.total_cost() == 15.0


# --- warn once ---------------------------------------------------------------------------


def test_logger_setup() -> None:
    log = logging.getLogger(LOGGER_NAME)
    assert any(isinstance(h, logging.NullHandler) for h in log.handlers)
    assert log.propagate is True


def test_unpriced_model_warns_once(empty_table: None, caplog: pytest.LogCaptureFixture) -> None:
    tracker = UsageTracker()
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        tracker.record_turn("Mystery-Model", UsageSnapshot(1, 1))
        tracker.record_turn("Mystery-Model", UsageSnapshot(1, 1))
        UsageTracker().record_turn("mystery-model", UsageSnapshot(1, 1))  # same, lowercased
    records = _warnings(caplog)
    assert len(records) == 1
    assert records[0].getMessage() == WARNING_TEXT.format("Mystery-Model")
    assert "no pricing" in records[0].getMessage()
    assert "mystery-model" in usage_tracking._warned_unpriced_models


def test_warning_repeats_after_set_is_cleared(
    empty_table: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        UsageTracker().record_turn("x-model", UsageSnapshot(1))
        usage_tracking._warned_unpriced_models.clear()
        UsageTracker().record_turn("x-model", UsageSnapshot(1))
    assert len(_warnings(caplog)) == 2


def test_no_warning_for_priced_or_empty_model(
    empty_table: None, caplog: pytest.LogCaptureFixture
) -> None:
    register_pricing("family", ModelPricing(1.0, 1.0))
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        tracker = UsageTracker()
        tracker.record_turn("family-2026", UsageSnapshot(1, 1))
        tracker.record_turn("", UsageSnapshot(1, 1))
    assert _warnings(caplog) == []
    assert usage_tracking._warned_unpriced_models == set()
    assert len(tracker.turns) == 2


def test_warning_uses_live_set_object(empty_table: None, caplog: pytest.LogCaptureFixture) -> None:
    usage_tracking._warned_unpriced_models.add("pre-warned")
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        UsageTracker().record_turn("Pre-Warned", UsageSnapshot(1))
    assert _warnings(caplog) == []


# --- retain_turns ---------------------------------------------------------------------------


def test_retain_turns_bounds_list_but_not_totals(empty_table: None) -> None:
    register_pricing("m", ModelPricing(1.0, 0.0))
    tracker = UsageTracker(retain_turns=3)
    snaps = [UsageSnapshot(input_tokens=1_000_000 + i) for i in range(10)]
    for snap in snaps:
        tracker.record_turn("m", snap)
    assert tracker.turns == [("m", s) for s in snaps[-3:]]
    assert tracker.turn_count == 10
    assert tracker.total_input_tokens == sum(s.input_tokens for s in snaps)
    assert tracker.total_cost() == pytest.approx(10.000045, rel=1e-12)
    summary = tracker.summary()
    assert summary["turns"] == 10
    assert summary["total_input_tokens"] == 10_000_045


def test_retain_turns_zero_keeps_nothing(empty_table: None) -> None:
    tracker = UsageTracker(retain_turns=0)
    tracker.record_turn("m", UsageSnapshot(5, 6))
    assert tracker.turns == []
    assert tracker.turn_count == 1
    assert tracker.total_output_tokens == 6


def test_retain_turns_trims_initial_list() -> None:
    snaps = [("m", UsageSnapshot(i)) for i in range(5)]
    tracker = UsageTracker(turns=list(snaps), retain_turns=2)
    assert tracker.turns == snaps[-2:]
    assert tracker.turn_count == 5
    assert tracker.total_input_tokens == 10


def test_retain_turns_external_clear_keeps_totals() -> None:
    tracker = UsageTracker(retain_turns=2)
    tracker.record_turn("m", UsageSnapshot(7))
    tracker.turns.clear()
    assert tracker.total_input_tokens == 7
    tracker.record_turn("m", UsageSnapshot(1))
    assert tracker.turns == [("m", UsageSnapshot(1))]
    assert tracker.turn_count == 2


@pytest.mark.parametrize(
    ("value", "error"), [(-1, ValueError), (True, TypeError), (1.5, TypeError)]
)
def test_retain_turns_validation(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="retain_turns"):
        UsageTracker(retain_turns=value)  # type: ignore[arg-type]


# --- concurrency -----------------------------------------------------------------------------


def test_threads_lose_no_update(empty_table: None, caplog: pytest.LogCaptureFixture) -> None:
    register_pricing("m0", ModelPricing(1.0, 2.0, 3.0, 4.0))
    register_pricing("m1", ModelPricing(0.5, 0.25))
    tracker = UsageTracker()
    threads_n, per_thread = 8, 2000
    returned: list[float] = [0.0] * threads_n
    reader_errors: list[BaseException] = []
    writers_done = threading.Event()
    barrier = threading.Barrier(threads_n + 1)

    def work(index: int) -> None:
        barrier.wait()
        total = 0.0
        for i in range(per_thread):
            # New model names keep inserting into the per-model table while the
            # reader iterates it, which is exactly what the lock must serialise.
            model = ("m0", "m1", "unpriced-m2", f"dyn-{i}")[(index + i) % 4]
            total += tracker.record_and_price(model, UsageSnapshot(1, 2, 3, 4))
        returned[index] = total

    def read() -> None:
        barrier.wait()
        try:
            while not writers_done.is_set():
                summary = tracker.summary()
                # Every snapshot has one input token, so a torn read shows up here.
                assert summary["total_input_tokens"] == summary["turns"], summary
        except BaseException as exc:  # surfaced in the main thread below
            reader_errors.append(exc)

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # force frequent thread switches to expose races
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
            reader = threading.Thread(target=read)
            workers = [threading.Thread(target=work, args=(n,)) for n in range(threads_n)]
            reader.start()
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            writers_done.set()
            reader.join()
    finally:
        sys.setswitchinterval(old_interval)

    assert reader_errors == []
    total_turns = threads_n * per_thread
    assert tracker.turn_count == total_turns
    assert len(tracker.turns) == total_turns
    assert tracker.total_input_tokens == total_turns
    assert tracker.total_output_tokens == 2 * total_turns
    counts: dict[str, int] = {}
    for model, _ in tracker.turns:
        counts[model] = counts.get(model, 0) + 1
    assert counts["m0"] == counts["m1"] == counts["unpriced-m2"] == total_turns // 4
    expected_cost = counts["m0"] * (1 + 4 + 9 + 16) / 1e6 + counts["m1"] * (0.5 + 0.5) / 1e6
    assert tracker.total_cost() == pytest.approx(expected_cost, rel=1e-9)
    assert sum(returned) == pytest.approx(expected_cost, rel=1e-9)
    # One warning for unpriced-m2 and one per distinct dyn-* name, never duplicated.
    warned = [r.getMessage() for r in _warnings(caplog)]
    assert len(warned) == len(set(warned)) == 1 + len([m for m in counts if m.startswith("dyn-")])


# --- property tests ---------------------------------------------------------------------------

tokens = st.integers(min_value=0, max_value=10**9)
snapshots = st.builds(UsageSnapshot, tokens, tokens, tokens, tokens)
rates = st.floats(min_value=0.0, max_value=1000.0, allow_nan=False, allow_infinity=False)
pricings = st.builds(ModelPricing, rates, rates, rates, rates)
model_names = st.sampled_from(["prop-a", "prop-b", "Prop-A", "prop-a-mini", "unpriced"])


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


@settings(max_examples=200, deadline=None)
@given(
    price_a=pricings,
    price_b=pricings,
    turns=st.lists(st.tuples(model_names, snapshots), max_size=30),
)
def test_total_cost_equals_sum_of_turn_costs(
    price_a: ModelPricing, price_b: ModelPricing, turns: list[tuple[str, UsageSnapshot]]
) -> None:
    register_pricing("prop-a", price_a)
    register_pricing("prop-b", price_b)
    tracker = UsageTracker()
    returned = [tracker.record_and_price(model, snap) for model, snap in turns]
    per_turn = [tracker.cost_for_turn(model, snap) for model, snap in turns]
    assert returned == per_turn
    assert _close(tracker.total_cost(), sum(per_turn))
    assert _close(sum(tracker.per_model_summary().values()), sum(per_turn))
    assert tracker.summary()["turns"] == len(turns)


@settings(max_examples=200, deadline=None)
@given(price=pricings, a=snapshots, b=snapshots, k=st.integers(min_value=0, max_value=1000))
def test_cost_is_linear(price: ModelPricing, a: UsageSnapshot, b: UsageSnapshot, k: int) -> None:
    register_pricing("prop-linear", price)
    tracker = UsageTracker()
    added = UsageSnapshot(
        a.input_tokens + b.input_tokens,
        a.output_tokens + b.output_tokens,
        a.cache_write_tokens + b.cache_write_tokens,
        a.cache_read_tokens + b.cache_read_tokens,
    )
    scaled = UsageSnapshot(
        k * a.input_tokens, k * a.output_tokens, k * a.cache_write_tokens, k * a.cache_read_tokens
    )
    cost_a = tracker.cost_for_turn("prop-linear", a)
    cost_b = tracker.cost_for_turn("prop-linear", b)
    # Linear up to the bound on one call's price (pricing.MAX_CALL_USD, $1e6), where a
    # hostile usage block is clamped: min() holds on both sides of it.
    assert _close(tracker.cost_for_turn("prop-linear", added), min(MAX_CALL_USD, cost_a + cost_b))
    assert _close(tracker.cost_for_turn("prop-linear", scaled), min(MAX_CALL_USD, k * cost_a))
    assert cost_a >= 0.0


@settings(max_examples=100, deadline=None)
@given(price=pricings, model=model_names)
def test_zero_snapshot_costs_nothing(price: ModelPricing, model: str) -> None:
    register_pricing(model, price)
    tracker = UsageTracker()
    assert tracker.cost_for_turn(model, UsageSnapshot()) == 0.0
    tracker.record_turn(model, UsageSnapshot())
    assert tracker.total_cost() == 0.0
    assert tracker.format_cost() == "$0.0000"


operations = st.lists(
    st.one_of(
        st.tuples(st.just("record"), model_names, snapshots),
        st.tuples(st.just("price"), model_names, pricings),
        st.tuples(st.just("clear"), st.none(), st.none()),
        st.tuples(st.just("total"), st.none(), st.none()),
    ),
    max_size=40,
)


def _believable_total(
    tracker: UsageTracker, history: list[tuple[str, UsageSnapshot]], clamped: list[bool]
) -> float:
    """What ``total_cost()`` must say: every call at today's prices, but a call
    priced above MAX_CALL_USD when it was booked stays booked at the clamp
    (never re-priced, as the ledger and its span booked it)."""
    total = 0.0
    for (model, usage), held in zip(history, clamped, strict=True):
        if held:
            total += MAX_CALL_USD
            continue
        cost = tracker.cost_for_turn(model, usage)
        # One that reaches the clamp only when re-priced later is not re-clamped
        # (the tracker keeps sums, not calls).
        assume(cost < MAX_CALL_USD)
        total += cost
    return total


@example(
    ops=[
        ("price", "prop-a", ModelPricing(0.0, 922.0, 0.0, 589.0)),
        ("record", "prop-a", UsageSnapshot(0, 1_000_000_000, 0, 132_427_844)),
        ("price", "prop-a", ModelPricing(0.0, 0.0, 0.0, 0.0)),
        ("total", None, None),
    ]
)  # booked at the clamp ($1,000,000), and still $1,000,000 after its price went to 0
@settings(max_examples=200, deadline=None)
@given(ops=operations)
def test_totals_stay_exact_across_interleaved_price_changes(ops: list[tuple[Any, ...]]) -> None:
    PRICING_TABLE.clear()
    tracker = UsageTracker(retain_turns=5)
    history: list[tuple[str, UsageSnapshot]] = []
    clamped: list[bool] = []
    for kind, arg, value in ops:
        if kind == "record":
            clamped.append(price_call(arg, value).source == "clamped")
            tracker.record_turn(arg, value)
            history.append((arg, value))
        elif kind == "price":
            register_pricing(arg, value)
        elif kind == "clear":
            PRICING_TABLE.clear()
        else:
            expected = _believable_total(tracker, history, clamped)
            assert _close(tracker.total_cost(), expected)
    expected = _believable_total(tracker, history, clamped)
    assert _close(tracker.total_cost(), expected)
    assert _close(sum(tracker.per_model_summary().values()), expected)
    assert tracker.turn_count == len(history)
    assert tracker.turns == history[-5:]


def test_record_turn_with_a_wrong_type_is_a_type_error_naming_it_and_records_nothing() -> None:
    # A bare AttributeError before ('NoneType' object has no attribute 'lower'; 'dict'
    # object has no attribute 'input_tokens').
    tracker = UsageTracker()
    with pytest.raises(TypeError) as caught:
        tracker.record_turn(None, UsageSnapshot(1, 1))  # type: ignore[arg-type]
    assert str(caught.value) == "model must be a str (a model name), got NoneType: None"
    with pytest.raises(TypeError) as caught:
        tracker.record_turn("m", {"input_tokens": 1})  # type: ignore[arg-type]
    assert str(caught.value) == "usage must be a UsageSnapshot, got dict: {'input_tokens': 1}"
    assert (tracker.turn_count, tracker.turns, tracker.total_cost()) == (0, [], 0.0)
    tracker.record_turn("claude-haiku-4-5", UsageSnapshot(1_000_000, 0))
    assert (tracker.turn_count, tracker.total_cost()) == (1, 1.0)
