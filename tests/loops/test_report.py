"""The report lists the loops of each session, from the spans a real run exported."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from otel_harness import Otel, make_otel
from techrevati.runtime import LoopDetectedError, LoopGuard, agent_session, tool_call
from techrevati.runtime.telemetry.export.jsonl import spans_to_json_line
from techrevati.runtime.telemetry.report.exporter import (
    build_report,
    record_from_span,
    records_from_otlp_json,
    render_report,
)
from techrevati.runtime.telemetry.report.model import LoopRow


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = make_otel()
    yield o
    o.shutdown()


def test_loops_per_session_in_the_report(otel: Otel) -> None:
    @tool_call("search")
    def search(q: str) -> str:
        return "nothing"

    @tool_call("open_page")
    def open_page(url: str) -> str:
        return "<html/>"

    with agent_session("calm", **otel.kwargs()):
        search("a")
        search("b")
    with agent_session("stuck", **otel.kwargs()):
        for _ in range(4):
            search("same")
    with (
        pytest.raises(LoopDetectedError),
        agent_session("browser", loop_guard=LoopGuard(on_loop="raise"), **otel.kwargs()),
    ):
        for _ in range(4):
            search("x")
            open_page("u")

    spans = otel.spans()
    report = build_report(r for r in (record_from_span(s) for s in spans) if r is not None)
    assert [(row.role, row.loops) for row in report.sessions] == [
        ("calm", []),
        ("stuck", [LoopRow("repeat", ("search",), "warn")]),
        ("browser", [LoopRow("cycle", ("search", "open_page"), "raise")]),
    ]
    # The same from the spans file's OTLP JSON lines.
    from_file = build_report(records_from_otlp_json(json.loads(spans_to_json_line(spans))))
    assert [row.loops for row in from_file.sessions] == [row.loops for row in report.sessions]

    text = render_report(report)
    section = text.split("Loops (repeated tool calls with the same result)\n", 1)[1]
    lines = section.split("\n\n", 1)[0].splitlines()
    assert [line.split() for line in lines] == [
        ["session", "pattern", "tools", "then"],
        ["stuck", "#2", "repeat", "search", "warned"],
        ["browser", "#3", "cycle", "search", "->", "open_page", "refused"],
    ]
    assert "loop" in text.split("Limit hits", 1)[1].split("\n\n", 1)[0]


def test_no_loops_no_section(otel: Otel) -> None:
    with agent_session("calm", **otel.kwargs()):
        pass
    spans = otel.spans()
    text = render_report(
        build_report(r for r in (record_from_span(s) for s in spans) if r is not None)
    )
    assert "Loops" not in text
