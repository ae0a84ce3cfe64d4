"""The report agrees with itself and says what it could not price or count.

Hand-made span records stand in for what the core and other instrumentations
write (``techrevati.cost.source``, ``techrevati.usage.missing``, the session
roll-ups), so each rule is pinned on its own.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from techrevati.runtime.pricing import ModelPricing, register_pricing
from techrevati.runtime.telemetry import semconv as sc
from techrevati.runtime.telemetry.report.model import build_report
from techrevati.runtime.telemetry.report.read import SpanRecord
from techrevati.runtime.telemetry.report.text import render_report

OURS = sc.INSTRUMENTATION_SCOPE
LIBRARY = "opentelemetry.instrumentation.openai_v2"
_ids = iter(range(1, 10_000))


def _record(
    name: str,
    parent: SpanRecord | None = None,
    *,
    scope: str = OURS,
    start: int = 0,
    **attrs: Any,
) -> SpanRecord:
    operation = name.split(" ", 1)[0]
    return SpanRecord(
        trace_id="t" * 32,
        span_id=f"{next(_ids):016x}",
        parent_id=parent.span_id if parent is not None else None,
        name=name,
        start_ns=start,
        end_ns=start + 10,
        error=False,
        attributes={sc.GEN_AI_OPERATION_NAME: operation, **attrs},
        scope=scope,
    )


def _session(role: str = "agent", **attrs: Any) -> SpanRecord:
    return _record(f"invoke_agent {role}", **{sc.GEN_AI_AGENT_NAME: role, **attrs})


def _row(text: str, first: str) -> list[str]:
    return next(line.split() for line in text.splitlines() if line.lstrip().startswith(first))


def test_a_session_of_third_party_spans_only_agrees_everywhere() -> None:
    """The official OpenAI instrumentation, no decorator: the library spans carry
    usage but no cost; the session's roll-up holds what the ledger booked."""
    register_pricing("agree-model", ModelPricing(input_per_million=3.0, output_per_million=15.0))
    session = _session(**{sc.COST_USD: 0.000612, sc.SESSION_TURNS: 2})
    calls = [
        _record(
            "chat agree-model",
            session,
            scope=LIBRARY,
            start=start,
            **{
                sc.GEN_AI_REQUEST_MODEL: "agree-model",
                sc.GEN_AI_USAGE_INPUT_TOKENS: 54,
                sc.GEN_AI_USAGE_OUTPUT_TOKENS: 9,
            },
        )
        for start in (1, 2)
    ]
    report = build_report([session, *calls])
    # 2 x (54 x $3 + 9 x $15) / 1M = $0.000594, as the ledger priced them.
    assert report.models[0].cost_usd == pytest.approx(0.000594)
    assert report.sessions[0].cost_usd == pytest.approx(0.000612)
    assert report.total_cost_usd == pytest.approx(0.000612)
    assert report.unattributed_cost_usd == pytest.approx(0.000018)

    text = render_report(report)
    assert "total cost $0.000612" in text.splitlines()[0]
    assert _row(text, "agent")[-2] == "0.000612"
    assert _row(text, "agree-model")[-2] == "0.000594"
    assert _row(text, "(session roll-ups")[-2] == "0.000018"


def test_exact_agreement_when_the_roll_up_matches_the_calls() -> None:
    register_pricing("agree-model-b", ModelPricing(input_per_million=2.0, output_per_million=8.0))
    session = _session(**{sc.COST_USD: 0.000576})
    call = _record(
        "chat agree-model-b",
        session,
        scope=LIBRARY,
        **{
            sc.GEN_AI_REQUEST_MODEL: "agree-model-b",
            sc.GEN_AI_USAGE_INPUT_TOKENS: 100,
            sc.GEN_AI_USAGE_OUTPUT_TOKENS: 47,
        },
    )
    report = build_report([session, call])
    assert report.unattributed_cost_usd == 0.0
    text = render_report(report)
    assert "total cost $0.000576" in text.splitlines()[0]
    assert _row(text, "agent")[-2] == _row(text, "agree-model-b")[-2] == "0.000576"
    assert "(session roll-ups" not in text


def test_unpriced_models_and_calls_without_usage_are_listed() -> None:
    session = _session(
        **{sc.SESSION_CALLS_WITHOUT_USAGE: 3, sc.SESSION_UNPRICED_CALLS: 2, sc.COST_USD: 0.0}
    )
    records = [session]
    for start in (1, 2):
        records.append(
            _record(
                "chat mystery-model",
                session,
                start=start,
                **{
                    sc.GEN_AI_REQUEST_MODEL: "mystery-model",
                    sc.GEN_AI_USAGE_INPUT_TOKENS: 10,
                    sc.GEN_AI_USAGE_OUTPUT_TOKENS: 1,
                    sc.COST_USD: 0.0,
                    sc.COST_SOURCE: sc.COST_SOURCE_UNPRICED,
                },
            )
        )
    for start in (3, 4, 5):
        records.append(
            _record(
                "chat gpt-x",
                session,
                start=start,
                **{sc.GEN_AI_REQUEST_MODEL: "gpt-x", sc.USAGE_MISSING: True, sc.COST_USD: 0.0},
            )
        )
    report = build_report(records)
    assert report.unpriced_models == {"mystery-model": 2}
    assert report.calls_without_usage == 3
    assert (report.sessions[0].unpriced_calls, report.sessions[0].calls_without_usage) == (2, 3)
    text = render_report(report)
    assert "Unpriced models (no known price; booked at $0): mystery-model (2 calls)" in text
    assert (
        "Calls without usage: 3 (the response carried no token counts; booked at $0: their "
        "tokens and cost are not known)"
    ) in text


def test_a_library_call_without_usage_counts_as_one_without_usage() -> None:
    session = _session()
    bare = _record("chat some-model", session, scope=LIBRARY, **{sc.GEN_AI_REQUEST_MODEL: "m"})
    report = build_report([session, bare])
    assert report.calls_without_usage == 1 and report.models[0].calls == 1


def test_nesting_follows_the_shared_rule() -> None:
    """Our turn + its first library span = one call; a second library span in it,
    and our own turn inside our turn, are new calls; library in library is one."""
    session = _session()
    turn = _record("chat m", session, start=1, **{sc.COST_USD: 1.0})
    first = _record("chat m", turn, scope=LIBRARY, start=2, **{sc.GEN_AI_USAGE_INPUT_TOKENS: 1})
    inner_library = _record("chat m", first, scope=LIBRARY, start=3)
    second = _record("chat m", turn, scope=LIBRARY, start=4, **{sc.COST_USD: 0.5})
    nested_turn = _record("chat m", turn, start=5, **{sc.COST_USD: 0.25})
    report = build_report([session, turn, first, inner_library, second, nested_turn])
    assert report.models[0].calls == 3  # turn, second, nested_turn
    assert report.total_cost_usd == pytest.approx(1.75)
    assert report.sessions[0].turns == 3


def test_the_report_names_the_input_count_it_shows() -> None:
    session = _session(**{sc.GEN_AI_USAGE_INPUT_TOKENS: 6200, sc.GEN_AI_USAGE_OUTPUT_TOKENS: 9})
    text = render_report(build_report([session]))
    header = next(line for line in text.splitlines() if line.lstrip().startswith("role"))
    assert "input incl. cached" in header
    assert _row(text, "agent")[-4:-2] == ["6200", "9"]


def test_other_vocabularies_are_recognised_as_the_limits_recognise_them() -> None:
    """An OpenInference LLM span (no gen_ai.* at all) is a call with its usage."""
    register_pricing("oi-model", ModelPricing(input_per_million=1.0, output_per_million=2.0))
    session = _session()
    span = _record(
        "ChatCompletion",
        session,
        scope="openinference.instrumentation.openai",
        **{
            "openinference.span.kind": "LLM",
            "llm.model_name": "oi-model",
            "llm.token_count.prompt": 1200,
            "llm.token_count.completion": 300,
            "llm.token_count.prompt_details.cache_read": 200,
        },
    )
    # _record sets gen_ai.operation.name from the name; an OpenInference span has none.
    attrs = {k: v for k, v in span.attributes.items() if k != sc.GEN_AI_OPERATION_NAME}
    bare = dataclasses.replace(span, attributes=attrs)
    report = build_report([session, bare])
    [row] = report.models
    assert (row.model, row.calls, row.input_tokens, row.output_tokens) == ("oi-model", 1, 1200, 300)
    # 1000 uncached x $1 + 200 cache reads x $0 (no cache rate registered) + 300 x $2, per 1M.
    assert row.cost_usd == pytest.approx(0.0016)
