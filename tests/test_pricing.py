"""Prices out of the box: resolution order, the bundled database, bad prices, the API.

The database is the real ``genai-prices`` (pinned exactly in the dev extra).
Expected dollars are written from the providers' published per-million rates.
Two tests replace the clock (a price that starts tomorrow cannot be waited
for); they say so.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import textwrap
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from techrevati.runtime import pricing, usage_tracking
from techrevati.runtime.pricing import (
    PRICING_TABLE,
    ModelPricing,
    PricedCall,
    cost_of,
    has_pricing,
    load_pricing_from_file,
    price_call,
    price_source,
    price_turn,
    register_pricing,
)
from techrevati.runtime.pricing import database as price_db
from techrevati.runtime.telemetry import semconv
from techrevati.runtime.usage_tracking import UsageSnapshot, UsageTracker

LOGGER_NAME = "techrevati.runtime.usage_tracking"
MILLION_IN = UsageSnapshot(input_tokens=1_000_000)


@pytest.fixture
def empty_table() -> None:
    PRICING_TABLE.clear()
    pricing._warned_unpriced_models.clear()


# --- bad prices -------------------------------------------------------------------


RATE_FIELDS = (
    "input_per_million",
    "output_per_million",
    "cache_write_per_million",
    "cache_read_per_million",
)


def _rates(field: str, value: object) -> dict[str, Any]:
    rates: dict[str, Any] = dict.fromkeys(RATE_FIELDS, 1.0)
    rates[field] = value
    return rates


@pytest.mark.parametrize("field", RATE_FIELDS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -1.0, -1000, -1e-300])
def test_model_pricing_rejects_nan_infinite_negative(field: str, value: float) -> None:
    with pytest.raises(ValueError) as info:
        ModelPricing(**_rates(field, value))
    assert f"ModelPricing.{field}" in str(info.value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("field", RATE_FIELDS)
@pytest.mark.parametrize("value", ["3", None, True, [1.0]])
def test_model_pricing_rejects_non_numbers(field: str, value: object) -> None:
    with pytest.raises(TypeError, match=rf"ModelPricing\.{field}"):
        ModelPricing(**_rates(field, value))


def test_zero_and_int_prices_are_valid() -> None:
    assert ModelPricing(0, 0.0, -0.0, 0).input_per_million == 0
    assert ModelPricing(3, 15) == ModelPricing(3.0, 15.0)


def test_register_pricing_rejects_bad_prices_and_leaves_table(empty_table: None) -> None:
    register_pricing("kept", ModelPricing(1.0, 2.0))
    tampered = ModelPricing(1.0, 2.0)
    object.__setattr__(tampered, "output_per_million", math.nan)  # bypasses the frozen check
    with pytest.raises(ValueError, match="output_per_million"):
        register_pricing("bad", tampered)
    with pytest.raises(TypeError, match="ModelPricing"):
        register_pricing("bad", (1.0, 2.0))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="model must be a str"):
        register_pricing(None, ModelPricing(1.0, 2.0))  # type: ignore[arg-type]
    # An empty name is a prefix of every name: it would price every unknown model.
    for blank in ("", "  "):
        with pytest.raises(ValueError, match=f"model must be a model name, got {blank!r}"):
            register_pricing(blank, ModelPricing(1.0, 2.0))
    assert dict(PRICING_TABLE) == {"kept": ModelPricing(1.0, 2.0)}
    assert not has_pricing("gpt-9000")


@pytest.mark.parametrize(
    "text",
    [
        "[" * 200_000 + "]" * 200_000,
        '{"models": {"deep": ' + "[" * 200_000 + "]" * 200_000 + "}}",
        '{"models": ' + '{"a": ' * 100_000 + "1" + "}" * 100_001,
    ],
    ids=["top-level", "inside-an-entry", "nested-objects"],
)
def test_deeply_nested_file_is_value_error_naming_file(
    empty_table: None, tmp_path: Path, text: str
) -> None:
    register_pricing("existing", ModelPricing(1.0, 2.0))
    path = tmp_path / "deep.json"
    path.write_text(text, "utf-8")
    with pytest.raises(ValueError) as info:
        load_pricing_from_file(path)
    assert str(path) in str(info.value)
    assert "nested too deeply" in str(info.value)
    assert dict(PRICING_TABLE) == {"existing": ModelPricing(1.0, 2.0)}


def test_moderately_nested_bad_entry_message_stays_short(empty_table: None, tmp_path: Path) -> None:
    path = tmp_path / "nested.json"
    path.write_text(json.dumps({"models": {"x": [[[[list(range(500))]]]]}}), "utf-8")
    with pytest.raises(ValueError, match=r"models\['x'\] must be an object") as info:
        load_pricing_from_file(path)
    assert len(str(info.value)) < 300 + len(str(path))


# --- resolution order ---------------------------------------------------------------


def test_exact_registration_beats_the_database(empty_table: None) -> None:
    assert cost_of("gpt-4o-mini", MILLION_IN) == pytest.approx(0.15, rel=1e-12)
    register_pricing("GPT-4o-mini", ModelPricing(9.0, 0.0))
    assert cost_of("gpt-4o-mini", MILLION_IN) == 9.0
    assert price_source("gpt-4o-mini") == "registered"
    del PRICING_TABLE["gpt-4o-mini"]  # the cache follows the table back
    assert cost_of("gpt-4o-mini", MILLION_IN) == pytest.approx(0.15, rel=1e-12)
    assert price_source("gpt-4o-mini") == "bundled"


def test_database_beats_a_registered_prefix(empty_table: None) -> None:
    register_pricing("gpt-4o", ModelPricing(100.0, 100.0))
    register_pricing("gpt", ModelPricing(50.0, 50.0))
    assert cost_of("gpt-4o", MILLION_IN) == 100.0  # exact
    assert cost_of("gpt-4o-mini", MILLION_IN) == pytest.approx(0.15, rel=1e-12)  # database
    assert cost_of("gpt-4o-mini-2024-07-18", MILLION_IN) == pytest.approx(0.15, rel=1e-12)
    assert cost_of("gpt-4.1", MILLION_IN) == pytest.approx(2.0, rel=1e-12)  # database
    assert cost_of("gpt-invented-9", MILLION_IN) == 50.0  # unknown to the database: prefix
    assert price_source("gpt-invented-9") == "registered"


def test_invented_names_behave_as_in_0_1_0(
    empty_table: None, caplog: pytest.LogCaptureFixture
) -> None:
    register_pricing("family", ModelPricing(2.0, 0.0))
    assert cost_of("family-20260514", MILLION_IN) == 2.0
    for name in ("never-registered", "test-model", "claude", "gpt", ""):
        assert has_pricing(name) is False, name
        assert price_source(name) == "unpriced"
        assert cost_of(name, MILLION_IN) == 0.0
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        tracker = UsageTracker()
        tracker.record_turn("never-registered", MILLION_IN)
        tracker.record_turn("never-registered", MILLION_IN)
    warnings = [r for r in caplog.records if r.name == LOGGER_NAME]
    assert [r.getMessage() for r in warnings] == [
        "no pricing registered for model=never-registered; cost will be $0. "
        "Call register_pricing() or load_pricing_from_file()."
    ]
    assert tracker.total_cost() == 0.0


# --- registered prices follow the model, not the spelling (issue 20, point 6) ---------


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("gpt-4o-mini-2024-07-18", ""),  # what the API answers with
        ("gpt-4o-mini-2024-07-18", "openai"),
        ("GPT-4o-mini-2024-07-18", ""),
        ("gpt-4o-mini", "azure.ai.openai"),  # the provider does not matter, the model does
        ("openai/gpt-4o-mini", ""),  # LiteLLM / gateway spellings
        ("azure/gpt-4o-mini-2024-07-18", ""),
        ("openrouter/openai/gpt-4o-mini", ""),
        ("gpt-4o-mini-latest", ""),
        ("gpt-4o-mini@2024-07-18", ""),
    ],
)
def test_a_registered_price_covers_dated_and_routed_names(
    empty_table: None, model: str, provider: str
) -> None:
    register_pricing("gpt-4o-mini", ModelPricing(100.0, 0.0))
    priced = price_call(model, MILLION_IN, provider=provider)
    assert (priced.cost, priced.source) == (100.0, "registered")


def test_the_issue_case_registered_rate_not_the_public_price(empty_table: None) -> None:
    assert cost_of("gpt-4o-mini-2024-07-18", MILLION_IN) == pytest.approx(0.15, rel=1e-12)
    register_pricing("gpt-4o-mini", ModelPricing(100.0, 0.0))  # a negotiated rate
    assert cost_of("gpt-4o-mini-2024-07-18", MILLION_IN) == 100.0  # the cache was dropped
    del PRICING_TABLE["gpt-4o-mini"]
    assert cost_of("gpt-4o-mini-2024-07-18", MILLION_IN) == pytest.approx(0.15, rel=1e-12)


@pytest.mark.parametrize(
    ("registered", "model", "provider"),
    [
        # The database maps these spellings to one model.
        ("claude-3.5-sonnet", "claude-3-5-sonnet-20241022", "anthropic"),
        ("claude-3.5-sonnet", "claude-3-5-sonnet-latest", ""),
        ("gpt-4", "gpt-4-0613", "openai"),
        ("gemini-1.5-pro", "gemini-1.5-pro-002", "gcp.vertex_ai"),
        ("claude-sonnet-4-5", "claude-sonnet-4-5@20250929", "gcp.vertex_ai"),
        # Amazon Bedrock ids: region, vendor and version are spelling, not the model.
        ("claude-3-5-sonnet", "anthropic.claude-3-5-sonnet-20241022-v2:0", "aws.bedrock"),
        ("claude-3-5-sonnet", "us.anthropic.claude-3-5-sonnet-20241022-v2:0", ""),
        ("claude-3.5-sonnet", "eu.anthropic.claude-3-5-sonnet-20241022-v2:0", "aws.bedrock"),
        (
            "claude-3-5-sonnet",
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
            "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
            "",
        ),
        # A registered route prefix prices the bare and dated names.
        ("azure/gpt-4o-mini", "gpt-4o-mini-2024-07-18", "azure.ai.openai"),
        ("models/gemini-2.5-flash", "gemini-2.5-flash", "gcp.gemini"),
    ],
)
def test_database_aliases_and_registered_routes(
    empty_table: None, registered: str, model: str, provider: str
) -> None:
    register_pricing(registered, ModelPricing(42.0, 0.0))
    priced = price_call(model, MILLION_IN, provider=provider)
    assert (priced.cost, priced.known, priced.source) == (42.0, True, "registered")


@pytest.mark.parametrize(
    ("registered", "model", "public"),
    [
        ("gpt-4o", "gpt-4o-mini", 0.15),  # another model, not another spelling
        ("gpt-4o", "gpt-4o-mini-2024-07-18", 0.15),
        ("gpt-4o", "gpt-4o-2024-05-13", 5.0),  # the database prices this snapshot itself
        ("o3", "o3-mini", 1.1),
        ("gemini-2.5-flash", "gemini-2.5-flash-lite", 0.1),
        # A registered snapshot prices only itself, not its model's other names.
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini", 0.15),
        ("gpt-4o-2024-08-06", "gpt-4o-2024-11-20", 2.5),
    ],
)
def test_other_models_keep_the_database_price(
    empty_table: None, registered: str, model: str, public: float
) -> None:
    register_pricing(registered, ModelPricing(100.0, 0.0))
    priced = price_call(model, MILLION_IN)
    assert (priced.cost, priced.source) == (pytest.approx(public, rel=1e-12), "bundled")


def test_several_registered_spellings_pick_one_deterministically(empty_table: None) -> None:
    register_pricing("gpt-4o-mini", ModelPricing(1.0, 0.0))
    register_pricing("azure/gpt-4o-mini", ModelPricing(2.0, 0.0))
    register_pricing("gpt-4o-mini-2024-07-18", ModelPricing(3.0, 0.0))
    assert cost_of("gpt-4o-mini-2024-07-18", MILLION_IN) == 3.0  # exact
    assert cost_of("azure/gpt-4o-mini", MILLION_IN) == 2.0  # exact
    assert cost_of("openai/gpt-4o-mini", MILLION_IN) == 1.0  # the bare name over a route
    assert cost_of("openai/gpt-4o-mini-2024-07-18", MILLION_IN) == 3.0  # route dropped: exact
    assert cost_of("gpt-4o-mini-2025-01-01", MILLION_IN) == 1.0  # undated name, not a snapshot


def test_routed_names_are_priced_from_the_database(empty_table: None) -> None:
    assert cost_of("openai/gpt-4.1", MILLION_IN) == pytest.approx(2.0, rel=1e-12)
    # Bedrock ids without a provider (an instrumentation that reports none).
    assert cost_of("us.anthropic.claude-3-5-sonnet-20241022-v2:0", MILLION_IN) == pytest.approx(
        3.0, rel=1e-12
    )
    assert cost_of("anthropic.claude-3-haiku-20240307-v1:0", MILLION_IN) == pytest.approx(
        0.25, rel=1e-12
    )
    assert price_source("amazon.nova-pro-v1:0") == "bundled"
    assert cost_of("models/gemini-2.5-flash", MILLION_IN) == pytest.approx(0.3, rel=1e-12)
    assert price_source("anthropic/claude-haiku-4-5") == "bundled"


def test_spelling_rules_are_resolved_once_per_name(
    empty_table: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rules run on a cache miss only; a priced call is one dict lookup."""
    register_pricing("gpt-4o-mini", ModelPricing(100.0, 0.0))
    calls: list[tuple[str, str]] = []
    real = price_db.identify

    def counting(model: str, provider: str = "") -> str | None:
        calls.append((model, provider))
        return real(model, provider)

    monkeypatch.setattr(price_db, "identify", counting)
    names = ("claude-3-5-sonnet-20241022", "gpt-4o-mini-2024-07-18", "openai/gpt-4.1")
    first = [cost_of(name, MILLION_IN) for name in names]
    asked = len(calls)
    assert 0 < asked <= 6, calls
    for _ in range(50):
        assert [cost_of(name, MILLION_IN) for name in names] == first
    assert len(calls) == asked  # cache hits never reach the rules
    assert first[1] == 100.0


@pytest.mark.parametrize(
    ("model", "provider", "rates"),
    [
        # (input, output, cache read) per million, from the providers' price pages.
        ("gpt-4o-mini", "openai", (0.15, 0.60, 0.075)),
        ("gpt-4.1", "", (2.00, 8.00, 0.50)),
        ("o3", "openai", (2.00, 8.00, 0.50)),
        ("claude-haiku-4-5", "anthropic", (1.00, 5.00, 0.10)),
        ("claude-haiku-4-5-20251001", "", (1.00, 5.00, 0.10)),
        ("claude-sonnet-4-5-20250929", "anthropic", (3.00, 15.00, 0.30)),
        ("gemini-2.5-flash", "gcp.gemini", (0.30, 2.50, 0.03)),
    ],
)
def test_known_models_are_priced_without_registration(
    empty_table: None, model: str, provider: str, rates: tuple[float, float, float]
) -> None:
    usage = UsageSnapshot(input_tokens=10_000, output_tokens=2_000, cache_read_tokens=50_000)
    expected = (10_000 * rates[0] + 2_000 * rates[1] + 50_000 * rates[2]) / 1e6
    priced = price_call(model, usage, provider=provider)
    assert priced.cost == pytest.approx(expected, rel=1e-12)
    assert (priced.source, priced.known) == ("bundled", True)
    assert has_pricing(model, provider)


def test_claude_cache_write_rate(empty_table: None) -> None:
    usage = UsageSnapshot(cache_write_tokens=1_000_000)
    assert cost_of("claude-haiku-4-5", usage) == pytest.approx(1.25, rel=1e-12)
    # Sonnet 4.5: $3.75 per million written; a call over 200k input tokens pays $7.50.
    assert cost_of("claude-sonnet-4-5", UsageSnapshot(cache_write_tokens=100_000)) == (
        pytest.approx(0.375, rel=1e-12)
    )
    assert cost_of("claude-sonnet-4-5", usage) == pytest.approx(7.5, rel=1e-12)


def test_provider_names_from_the_conventions(empty_table: None) -> None:
    usage = UsageSnapshot(input_tokens=1_000_000, output_tokens=1_000_000)
    # Bedrock's model id for Claude 3.5 Sonnet v2: $3 in, $15 out.
    bedrock = price_call("anthropic.claude-3-5-sonnet-20241022-v2:0", usage, "aws.bedrock")
    assert bedrock.cost == pytest.approx(18.0, rel=1e-12)
    assert bedrock.source == "bundled"
    # An unknown provider (a proxy) still gets the model's own price.
    assert cost_of("gpt-4o-mini", usage, provider="my-proxy") == pytest.approx(0.75, rel=1e-12)
    # A provider that does not list the model: the model is looked up on its own.
    assert cost_of("claude-haiku-4-5", usage, provider="openai") == pytest.approx(6.0, rel=1e-12)


def test_tiered_price_is_chosen_per_call_by_total_input(empty_table: None) -> None:
    # Gemini 2.5 Pro: $1.25 in / $10 out up to 200k prompt tokens, $2.50 / $15 above.
    at_limit = UsageSnapshot(input_tokens=150_000, output_tokens=1000, cache_read_tokens=50_000)
    over = UsageSnapshot(input_tokens=150_001, output_tokens=1000, cache_read_tokens=50_000)
    small = price_call("gemini-2.5-pro", at_limit)
    big = price_call("gemini-2.5-pro", over)
    assert small.cost == pytest.approx((150_000 * 1.25 + 50_000 * 0.125 + 1000 * 10) / 1e6)
    assert big.cost == pytest.approx((150_001 * 2.50 + 50_000 * 0.25 + 1000 * 15) / 1e6)
    assert small.band is not None and big.band is not None and small.band != big.band

    tracker = UsageTracker()
    for usage in (at_limit, over, at_limit):
        tracker.record_and_price("gemini-2.5-pro", usage)
    expected = 2 * small.cost + big.cost
    assert tracker.total_cost() == pytest.approx(expected, rel=1e-12)
    PRICING_TABLE["unrelated"] = ModelPricing(1.0, 1.0)  # forces a recomputation from sums
    assert tracker.total_cost() == pytest.approx(expected, rel=1e-12)
    assert tracker.summary()["total_cost_usd"] == round(expected, 4)


def test_registering_a_database_model_reprices_history(empty_table: None) -> None:
    tracker = UsageTracker()
    tracker.record_and_price("claude-haiku-4-5", MILLION_IN, provider="anthropic")
    assert tracker.total_cost() == pytest.approx(1.0, rel=1e-12)
    register_pricing("claude-haiku-4-5", ModelPricing(2.0, 0.0))
    assert tracker.total_cost() == 2.0
    assert tracker.per_model_summary() == {"claude-haiku-4-5": 2.0}
    del PRICING_TABLE["claude-haiku-4-5"]
    assert tracker.total_cost() == pytest.approx(1.0, rel=1e-12)


def test_tiered_history_recorded_under_a_registered_price(empty_table: None) -> None:
    """Usage recorded while registered has no band; later it is charged at the lowest band."""
    register_pricing("gemini-2.5-pro", ModelPricing(1.0, 0.0))
    tracker = UsageTracker()
    tracker.record_and_price("gemini-2.5-pro", UsageSnapshot(input_tokens=300_000))
    assert tracker.total_cost() == pytest.approx(0.3, rel=1e-12)
    del PRICING_TABLE["gemini-2.5-pro"]
    assert tracker.total_cost() == pytest.approx(300_000 * 1.25 / 1e6, rel=1e-12)


def test_per_call_fee(empty_table: None) -> None:
    # Perplexity Sonar in the database: $1 / $1 per million tokens plus $12 per 1,000 requests.
    usage = UsageSnapshot(input_tokens=1000, output_tokens=500)
    one = price_call("sonar", usage, "perplexity")
    assert one.cost == pytest.approx((1000 + 500) / 1e6 + 0.012, rel=1e-12)
    tracker = UsageTracker()
    for _ in range(3):
        tracker.record_and_price("sonar", usage, provider="perplexity")
    register_pricing("unrelated", ModelPricing(1.0, 1.0))  # recompute from sums
    assert tracker.total_cost() == pytest.approx(3 * one.cost, rel=1e-12)


def test_provider_kept_per_model_in_the_tracker(empty_table: None) -> None:
    tracker = UsageTracker()
    tracker.record_and_price("sonar", UsageSnapshot(1000), provider="perplexity")
    tracker.record_and_price("sonar", UsageSnapshot(1000), provider="")
    # The second "sonar" resolves without a provider, maybe elsewhere; each keeps its own.
    expected = price_call("sonar", UsageSnapshot(1000), "perplexity").cost + cost_of(
        "sonar", UsageSnapshot(1000)
    )
    register_pricing("unrelated", ModelPricing(1.0, 1.0))
    assert tracker.total_cost() == pytest.approx(expected, rel=1e-12)
    assert list(tracker.per_model_summary()) == ["sonar"]


# --- dated prices (clock replaced: a price change cannot be waited for) ----------------


class _Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def time(self) -> float:
        return self.now.timestamp()


def test_o3_dated_prices_follow_the_database_history() -> None:
    """o3 cost $10 / $40 per million until OpenAI's 2025-06-10 cut to $2 / $8."""
    from genai_prices import data_snapshot

    _, info = data_snapshot.get_snapshot().find_provider_model("o3", None, "openai", None)
    built = price_db._build(info, "openai")
    before = built._choose(datetime(2025, 6, 9, 12, tzinfo=UTC))
    after = built._choose(datetime(2025, 6, 10, 0, 1, tzinfo=UTC))
    assert built._schedules[before].bands[0][:2] == (10.0, 40.0)
    assert built._schedules[after].bands[0][:2] == (2.0, 8.0)
    assert built.flat is not None and built.flat[:2] == (2.0, 8.0)  # no change ahead: flat


def test_price_starting_tomorrow_switches_at_midnight(
    monkeypatch: pytest.MonkeyPatch, empty_table: None
) -> None:
    """The clock is replaced (mock): the new price starts at the next UTC midnight."""
    from genai_prices.types import (
        ClauseEquals,
        ConditionalPrice,
        ModelInfo,
        ModelPrice,
        StartDateConstraint,
    )

    today = datetime.now(UTC).date()
    tomorrow = today + timedelta(days=1)
    info = ModelInfo(
        id="dated-model",
        match=ClauseEquals(equals="dated-model"),
        prices=[
            ConditionalPrice(prices=ModelPrice(input_mtok=_dec(1), output_mtok=_dec(2))),
            ConditionalPrice(
                constraint=StartDateConstraint(start_date=tomorrow),
                prices=ModelPrice(input_mtok=_dec(4), output_mtok=_dec(8)),
            ),
        ],
    )
    built = price_db._build(info, "test")
    assert built.flat is None  # a change is ahead: chosen per call
    monkeypatch.setitem(price_db._cache, ("", "dated-model"), built)
    clock = _Clock(datetime.combine(today, datetime.min.time(), UTC) + timedelta(hours=23))
    monkeypatch.setattr(price_db, "time", clock)
    monkeypatch.setattr(price_db, "datetime", _FrozenDatetime.at(clock))

    tracker = UsageTracker()
    assert tracker.record_and_price("dated-model", MILLION_IN) == 1.0
    clock.now = datetime.combine(tomorrow, datetime.min.time(), UTC) + timedelta(seconds=1)
    assert tracker.record_and_price("dated-model", MILLION_IN) == 4.0
    assert tracker.total_cost() == 5.0
    register_pricing("unrelated", ModelPricing(1.0, 1.0))  # recomputed: each call at its date
    assert tracker.total_cost() == 5.0


def _dec(value: int) -> Any:
    from decimal import Decimal

    return Decimal(value)


class _FrozenDatetime(datetime):
    clock: _Clock

    @classmethod
    def at(cls, clock: _Clock) -> type[_FrozenDatetime]:
        return type("FrozenDatetime", (cls,), {"clock": clock})

    @classmethod
    def now(cls, tz: Any = None) -> Any:
        return cls.clock.now


# --- cache ----------------------------------------------------------------------------


def test_database_is_asked_once_per_provider_and_model(
    monkeypatch: pytest.MonkeyPatch, empty_table: None
) -> None:
    asked: list[tuple[str, str]] = []
    real = price_db._resolve

    def counting(model: str, provider: str) -> Any:
        asked.append((provider, model))
        return real(model, provider)

    monkeypatch.setattr(price_db, "_resolve", counting)
    monkeypatch.setattr(price_db, "_cache", {})
    for _ in range(3):
        price_call("GPT-4o-mini", UsageSnapshot(10), "OpenAI")
        price_call("gpt-4o-mini", UsageSnapshot(10))
        register_pricing("unrelated", ModelPricing(1.0, 1.0))  # drops only our resolution cache
    assert asked == [("openai", "gpt-4o-mini"), ("", "gpt-4o-mini")]


def test_no_network_at_import_or_lookup(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        events = []
        def audit(event, args):
            if event.startswith(("socket.", "urllib.")) and event != "socket.__new__":
                events.append(event)
        sys.addaudithook(audit)
        import techrevati.runtime
        from techrevati.runtime.pricing import price_call, has_pricing
        from techrevati.runtime.usage_tracking import UsageSnapshot
        assert "genai_prices" not in sys.modules, "imported before the first lookup"
        call = price_call("gpt-4o-mini", UsageSnapshot(1000, 100), "openai")
        assert call.source == "bundled", call
        assert has_pricing("claude-haiku-4-5")
        import threading
        from genai_prices import data_snapshot
        assert data_snapshot._custom_snapshot is None  # no UpdatePrices ran
        print(events, sorted(t.name for t in threading.enumerate()))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[] ['MainThread']"


# --- the API the core calls -------------------------------------------------------------


def test_priced_call_shape_and_legacy_triple(empty_table: None) -> None:
    register_pricing("m", ModelPricing(2.0, 8.0))
    call = price_call("m", UsageSnapshot(500_000, 0))
    assert isinstance(call, PricedCall) and isinstance(call, tuple)
    assert (call[0], call[1], call[2]) == (1.0, pricing._table_version(), True)
    assert (call.cost, call.known, call.source, call.band, call.provider) == (
        1.0,
        True,
        "registered",
        None,
        "",
    )
    assert price_turn("m", UsageSnapshot(500_000, 0)) == call
    unpriced = price_call("unknown-thing", UsageSnapshot(5, 5), provider="OpenAI")
    assert unpriced == PricedCall(0.0, call.version, False, "unpriced", None, "OpenAI")

    tracker = UsageTracker()
    assert tracker.record_priced("m", UsageSnapshot(500_000, 0), (1.0, call.version, True)) == 1.0
    assert tracker.record_priced("m", UsageSnapshot(500_000, 0), call) == 1.0
    assert tracker.total_cost() == 2.0


def test_cost_source_names_match_semconv() -> None:
    assert (pricing.REGISTERED, pricing.BUNDLED, pricing.UNPRICED) == (
        semconv.COST_SOURCE_REGISTERED,
        semconv.COST_SOURCE_BUNDLED,
        semconv.COST_SOURCE_UNPRICED,
    )


def test_usage_tracking_keeps_the_pinned_names() -> None:
    assert usage_tracking.PRICING_TABLE is pricing.PRICING_TABLE
    assert usage_tracking._warned_unpriced_models is pricing._warned_unpriced_models
    for name in (
        "ModelPricing",
        "register_pricing",
        "has_pricing",
        "load_pricing_from_file",
        "price_turn",
        "cost_of",
        "PricedTurn",
        "_load_bundled_pricing",
        "_cost",
    ):
        assert getattr(usage_tracking, name) is getattr(pricing, name), name
    original = pricing.PRICING_TABLE
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(usage_tracking, "PRICING_TABLE", {"alt": ModelPricing(2.0, 0.0)})
        assert pricing.PRICING_TABLE is usage_tracking.PRICING_TABLE
        assert has_pricing("alt-1") is True
    assert pricing.PRICING_TABLE is original is usage_tracking.PRICING_TABLE
    assert has_pricing("alt-1") is False


def test_database_version_is_reported() -> None:
    version = price_db.database_version()
    assert version is not None and tuple(int(x) for x in version.split(".")[:2]) >= (0, 2)


def test_lookup_date_is_utc_midnight() -> None:
    assert price_db._midnight(date(2026, 1, 2)) == datetime(2026, 1, 2, tzinfo=UTC).timestamp()


def test_prices_page_example_runs_and_is_true(empty_table: None) -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "prices.md").read_text("utf-8")
    code = page.split("```python", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/prices.md", "exec"), namespace)
    # The comments in the example state the results; check them.
    assert "# 0.01195" in code and "# 'bundled'" in code and "# 0.1\n" in code
    usage = UsageSnapshot(1200, 400, 3000, 50_000)
    assert price_call("claude-haiku-4-5", usage).cost == pytest.approx(0.01195, rel=1e-12)
    assert PRICING_TABLE["gpt-4o"] == ModelPricing(2.0, 8.0)
    assert price_source("gpt-4o") == "registered"
    dated = price_call("gpt-4o-mini-2024-07-18", MILLION_IN)
    assert (dated.cost, dated.source) == (pytest.approx(0.1, rel=1e-12), "registered")
    assert price_source("azure/gpt-4o-mini") == "registered"
    del PRICING_TABLE["gpt-4o-mini"]
    assert price_source("gpt-4o-mini") == "bundled"  # the page's third line, in its order


def test_prices_page_states_the_file_errors_truly(empty_table: None, tmp_path: Path) -> None:
    """docs/prices.md's table of errors, each row tried."""
    page = (Path(__file__).resolve().parent.parent / "docs" / "prices.md").read_text("utf-8")
    assert "| `ValueError` naming the file (and the entry); it is also a `KeyError`" in page
    cases: list[tuple[str, type[Exception]]] = [
        ('{"models": {"m": {"input_per_million": 1.0}}}', KeyError),
        ('{"prices": {}}', KeyError),
        ('{"models": {"m": {"input_per_million": 1.0}}}', ValueError),
        ('{"prices": {}}', ValueError),
        ("not json", ValueError),
        ("[]", ValueError),
        ('{"models": []}', ValueError),
        ('{"models": {"m": 3}}', ValueError),
        ('{"models": {"m": {"input_per_million": "1", "output_per_million": 1}}}', ValueError),
        ('{"models": {"m": {"input_per_million": -1, "output_per_million": 1}}}', ValueError),
    ]
    for index, (text, error) in enumerate(cases):
        path = tmp_path / f"p{index}.json"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(error) as raised:
            load_pricing_from_file(path)
        assert str(path) in str(raised.value), text
    bad_utf8 = tmp_path / "latin1.json"
    bad_utf8.write_bytes('{"models": {"caf\u00e9": 1}}'.encode("latin-1"))
    with pytest.raises(ValueError, match="not valid UTF-8"):
        load_pricing_from_file(bad_utf8)
    with pytest.raises(FileNotFoundError):
        load_pricing_from_file(tmp_path / "missing.json")
    with pytest.raises(TypeError, match="must be a number"):
        ModelPricing("1", 1.0)  # type: ignore[arg-type]
    assert dict(PRICING_TABLE) == {}


def test_without_genai_prices_only_registered_prices_apply(
    monkeypatch: pytest.MonkeyPatch, empty_table: None, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken install (the import fails) degrades to 0.1.0's rules with one warning."""
    monkeypatch.setitem(sys.modules, "genai_prices", None)  # makes the import fail
    monkeypatch.setattr(price_db, "_load_failed", False)
    monkeypatch.setattr(price_db, "_cache", {})
    register_pricing("family", ModelPricing(2.0, 0.0))
    with caplog.at_level(logging.WARNING, logger="techrevati.runtime.pricing"):
        assert price_db.preload() is False
        assert price_source("gpt-4o-mini") == "unpriced"
        assert cost_of("family-2026", MILLION_IN) == 2.0
        assert has_pricing("claude-haiku-4-5") is False
    failures = [r for r in caplog.records if r.name == "techrevati.runtime.pricing"]
    assert len(failures) == 1 and "genai-prices could not be imported" in failures[0].getMessage()


def test_preload_imports_the_database_once() -> None:
    assert price_db.preload() is True
    assert "genai_prices" in sys.modules


def test_price_with_two_tiers(monkeypatch: pytest.MonkeyPatch, empty_table: None) -> None:
    """A database entry with two thresholds (no real model has one yet): built here."""
    from genai_prices.types import ClauseEquals, ModelInfo, ModelPrice, Tier, TieredPrices

    info = ModelInfo(
        id="two-tier-model",
        match=ClauseEquals(equals="two-tier-model"),
        prices=ModelPrice(
            input_mtok=TieredPrices(
                base=_dec(1),
                tiers=[Tier(start=1000, price=_dec(3)), Tier(start=100, price=_dec(2))],
            ),
            output_mtok=TieredPrices(base=_dec(10), tiers=[Tier(start=1000, price=_dec(30))]),
        ),
    )
    built = price_db._build(info, "test")
    assert built.flat is None and built.static is not None and built.static[0] == (100, 1000)
    monkeypatch.setitem(price_db._cache, ("", "two-tier-model"), built)

    def dollars(inp: int, out: int) -> float:
        return price_call("two-tier-model", UsageSnapshot(inp, out)).cost

    assert dollars(100, 1) == pytest.approx((100 * 1 + 1 * 10) / 1e6, rel=1e-12)
    assert dollars(101, 1) == pytest.approx((101 * 2 + 1 * 10) / 1e6, rel=1e-12)
    assert dollars(1000, 1) == pytest.approx((1000 * 2 + 1 * 10) / 1e6, rel=1e-12)
    assert dollars(1001, 1) == pytest.approx((1001 * 3 + 1 * 30) / 1e6, rel=1e-12)
    tracker = UsageTracker()
    for inp in (50, 500, 5000):
        tracker.record_and_price("two-tier-model", UsageSnapshot(inp, 1))
    expected = (50 * 1 + 10 + 500 * 2 + 10 + 5000 * 3 + 30) / 1e6
    register_pricing("unrelated", ModelPricing(1.0, 1.0))  # recompute from the band sums
    assert tracker.total_cost() == pytest.approx(expected, rel=1e-12)


def test_concurrent_first_lookups_agree(monkeypatch: pytest.MonkeyPatch, empty_table: None) -> None:
    import threading

    monkeypatch.setattr(price_db, "_cache", {})
    models = ["gpt-4.1-mini", "claude-opus-4-1", "gemini-2.5-pro", "o4-mini"]
    usage = UsageSnapshot(input_tokens=300_000, output_tokens=1000, cache_read_tokens=5000)
    expected = {m: price_call(m, usage).cost for m in models}
    monkeypatch.setattr(price_db, "_cache", {})
    register_pricing("unrelated", ModelPricing(1.0, 1.0))  # fresh resolution cache too
    results: list[tuple[str, float]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(offset: int) -> None:
        try:
            start.wait()
            for i in range(40):
                model = models[(i + offset) % len(models)]
                results.append((model, price_call(model, usage).cost))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 8 * 40
    assert all(cost == expected[model] for model, cost in results)


@pytest.mark.parametrize(
    ("vertex", "provider_spelling"),
    [
        ("claude-opus-4@20250514", "claude-opus-4-20250514"),
        ("claude-sonnet-4@20250514", "claude-sonnet-4-20250514"),
    ],
)
def test_vertex_spellings_of_a_dated_snapshot_have_its_bundled_price(
    empty_table: None, vertex: str, provider_spelling: str
) -> None:
    # Vertex AI names a snapshot with "@date": claude-opus-4@20250514 was unpriced
    # (refused under an enforced budget, $0 otherwise) while its provider's spelling
    # had the database's price.
    usage = UsageSnapshot(1_000_000, 1_000_000)
    expected = price_call(provider_spelling, usage)
    assert expected.source == "bundled"
    found = price_call(vertex, usage)
    assert (found.cost, found.source) == (expected.cost, "bundled")


@pytest.mark.parametrize(
    ("model", "per_million"),
    [("text-embedding-3-small", 0.02), ("text-embedding-3-large", 0.13)],
)
def test_a_model_no_provider_rule_places_has_its_makers_price(
    empty_table: None, model: str, per_million: float
) -> None:
    # OpenAI's embedding models match no provider's name pattern in the database: with
    # no provider named they were unpriced ($0, or refused under an enforced budget as
    # UnpricedModelError), though the database lists them under openai (and azure).
    usage = UsageSnapshot(1_000_000, 0)
    found = price_call(model, usage)
    assert (found.cost, found.source) == (pytest.approx(per_million), "bundled")
    assert price_call(model, usage, "openai").cost == pytest.approx(per_million)
    assert price_call("no-such-model-anywhere", usage).source == "unpriced"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: has_pricing(5), "model must be a str (a model name), got int: 5"),
        (lambda: has_pricing(None), "model must be a str (a model name), got NoneType: None"),
        (
            lambda: has_pricing("gpt-4o", provider=7),
            "provider must be a str (a provider name), got int: 7",
        ),
        (
            lambda: price_source(b"gpt-4o"),
            "model must be a str (a model name), got bytes: b'gpt-4o'",
        ),
        (
            lambda: price_call(None, UsageSnapshot(1, 1)),
            "model must be a str (a model name), got NoneType: None",
        ),
        # Unhashable: "unhashable type: 'list'" from the cache, naming nothing.
        (lambda: has_pricing(["x"]), "model must be a str (a model name), got list: ['x']"),
        (
            lambda: has_pricing("m", ["p"]),
            "provider must be a str (a provider name), got list: ['p']",
        ),
    ],
)
def test_a_model_that_is_not_a_name_is_a_type_error_naming_it(call: Any, message: str) -> None:
    # A bare AttributeError before: 'int' object has no attribute 'lower'.
    with pytest.raises(TypeError) as caught:
        call()
    assert str(caught.value) == message
    # Twice: a refused name is never cached as a price (the check runs on a miss only).
    with pytest.raises(TypeError):
        call()
    assert has_pricing("claude-haiku-4-5") is True


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('{"prices": {}}', "missing 'models' key"),
        (
            '{"models": {"m": {"input_per_million": 1.0}}}',
            "models['m'] is missing required rate 'output_per_million'",
        ),
    ],
)
def test_a_missing_key_in_a_pricing_file_is_a_value_error_too(
    empty_table: None, tmp_path: Path, text: str, said: str
) -> None:
    """Every format error of the file is a ValueError; these stay KeyErrors as 0.1.0's."""
    path = tmp_path / "prices.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError) as info:
        load_pricing_from_file(path)
    assert isinstance(info.value, KeyError)
    assert str(info.value) == f"{path}: {said}"  # not quoted, as KeyError's str() would be
    assert dict(PRICING_TABLE) == {}
