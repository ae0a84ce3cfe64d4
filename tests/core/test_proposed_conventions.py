"""The proposed GenAI cost (PR #443) and budget (#425) attributes: off by default, on
with configure(proposed_conventions=True), equal to our own numbers when on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from otel_harness import Otel
from techrevati.runtime import ModelPricing, Orchestrator, UsageSnapshot, configure
from techrevati.runtime.telemetry.calls import conventions
from techrevati.runtime.usage_tracking import register_pricing

PROPOSED = ("gen_ai.usage.cost.amount", "gen_ai.usage.cost.currency", "gen_ai.usage.cost.source")
BUDGET = ("gen_ai.agent.iteration_budget.limit", "gen_ai.agent.iteration_budget.consumed")


@pytest.fixture
def switch() -> Iterator[None]:
    before = conventions.proposed()
    yield
    conventions.use_proposed(before)


def _session(otel: Otel) -> None:
    register_pricing("conv-model", ModelPricing(2.0, 4.0))
    orch = Orchestrator(role="w", max_iterations=5, **otel.orch_kwargs())
    with orch.session() as s:
        s.run_turn(lambda: "a", model="conv-model", usage=UsageSnapshot(1000, 500))
        s.run_turn(lambda: "b", model="no-price-known-anywhere", usage=UsageSnapshot(10, 10))


def test_off_by_default_nothing_proposed_is_written(otel: Otel, switch: None) -> None:
    conventions.use_proposed(False)
    _session(otel)
    for span in otel.spans():
        attrs = dict(span.attributes or {})
        assert not set(PROPOSED + BUDGET) & set(attrs), (span.name, attrs)


def test_on_the_proposed_attributes_repeat_our_numbers(otel: Otel, switch: None) -> None:
    handle = configure(
        proposed_conventions=True, set_global=False, spans_file=False, report=False, metrics=False
    )
    handle.shutdown()
    assert conventions.proposed() is True
    _session(otel)
    priced = dict(otel.span("chat conv-model").attributes or {})
    assert (
        priced["gen_ai.usage.cost.amount"]
        == priced["techrevati.cost.usd"]
        == pytest.approx((1000 * 2.0 + 500 * 4.0) / 1e6)
    )
    assert priced["gen_ai.usage.cost.currency"] == "USD"
    assert priced["gen_ai.usage.cost.source"] == priced["techrevati.cost.source"]
    unpriced = dict(otel.span("chat no-price-known-anywhere").attributes or {})
    assert not set(PROPOSED) & set(unpriced), "a cost that is not known is not set"
    session = dict(otel.span("invoke_agent w").attributes or {})
    assert session["gen_ai.usage.cost.amount"] == session["techrevati.cost.usd"]
    assert session["gen_ai.usage.cost.source"] == "computed"
    assert session["gen_ai.agent.iteration_budget.limit"] == 5
    assert session["gen_ai.agent.iteration_budget.consumed"] == 2


def test_a_non_bool_switch_is_refused_naming_the_value(switch: None) -> None:
    with pytest.raises(TypeError, match="'yes'"):
        conventions.use_proposed("yes")  # type: ignore[arg-type]
