"""A session tree across two processes, joined by W3C trace context only.

``python tests/report_html_processes.py parent SPANS CHILD_SPANS`` opens a
planner session, runs one turn and starts ``child``: a second process that
extracts the injected context (as a server or Celery instrumentation does) and
opens its own session under it. Each process writes its own spans file, so the
child's session span names a parent span that only the other file holds.
"""

from __future__ import annotations

import json
import subprocess
import sys

from opentelemetry import context, propagate

from techrevati.runtime import (
    ModelPricing,
    Orchestrator,
    UsageSnapshot,
    configure,
    register_pricing,
)


def _turn(session: object, tokens: int) -> None:
    session.run_turn(  # type: ignore[attr-defined]
        lambda: "ok", model="tree-model", usage=UsageSnapshot(tokens, tokens // 10)
    )


def main(role: str, spans: str, other: str) -> None:
    telemetry = configure(service_name=f"tree-{role}", spans_file=spans, report=False)
    register_pricing("tree-model", ModelPricing(input_per_million=2.0, output_per_million=8.0))
    if role == "parent":
        with Orchestrator(role="planner", phase="p").session() as session:
            _turn(session, 1_000)
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            subprocess.run(
                [sys.executable, __file__, "child", other, json.dumps(carrier)], check=True
            )
    else:
        token = context.attach(propagate.extract(json.loads(other)))
        try:
            with Orchestrator(role="worker", phase="p").session() as session:
                _turn(session, 2_000)
        finally:
            context.detach(token)
    telemetry.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
