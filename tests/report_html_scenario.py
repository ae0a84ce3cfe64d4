"""A run with everything the HTML report draws, made with the public API.

Run as a program (``python tests/report_html_scenario.py SPANS HTML``) so that
``configure()`` owns a fresh process: a planner session with priced turns, an
allowed tool, a tool its role may not use (refused), a tool that raises
(failed), a breaker, a cycle of two tools returning the same results (the
default loop guard reports it), a child session that crosses its enforced
budget (a limit hit), and the planner passing its wrap-up threshold. Model and
tool names are hostile HTML. ``configure(report_html=...)`` writes the page at exit.
"""

from __future__ import annotations

import contextlib
import sys
import time

from techrevati.runtime import (
    BudgetExceededError,
    CircuitBreaker,
    ModelPricing,
    Orchestrator,
    PermissionDeniedError,
    PermissionEnforcer,
    PermissionMode,
    PermissionPolicy,
    RolePermissionConfig,
    UsageSnapshot,
    configure,
    register_pricing,
)

HOSTILE_MODEL = "<script>alert(1)</script>"
HOSTILE_TOOL = "</script><b id=injected>lookup</b>"


def main(spans: str, page: str) -> None:
    telemetry = configure(service_name="html-report-test", spans_file=spans, report_html=page)
    register_pricing(HOSTILE_MODEL, ModelPricing(input_per_million=3.0, output_per_million=15.0))
    register_pricing("model-b", ModelPricing(input_per_million=1.0, output_per_million=2.0))
    permissions = PermissionEnforcer(
        PermissionPolicy(
            role_configs={"planner": RolePermissionConfig("planner", PermissionMode.READ_ONLY)},
            tool_requirements={"write_db": PermissionMode.FULL_ACCESS},
        )
    )
    planner = Orchestrator(
        role="planner",
        phase="plan",
        permissions=permissions,
        circuit_breaker=CircuitBreaker("model-api"),
        budget_usd=1.0,
        max_iterations=4,
        wrap_up_at=0.5,  # the second model call in the tree (the child's count too)
    )
    with planner.session() as session:
        session.run_turn(
            lambda: "outline",
            model=HOSTILE_MODEL,
            usage=UsageSnapshot(input_tokens=1_000, output_tokens=200),
        )
        session.run_tool(HOSTILE_TOOL, lambda: time.sleep(0.01) or "found")
        with contextlib.suppress(PermissionDeniedError):
            session.run_tool("write_db", lambda: "never runs")
        with contextlib.suppress(ZeroDivisionError):
            session.run_tool("flaky", lambda: 1 / 0)
        # A-B-A-B-..., the same results each time, after one model call: a loop the model
        # calls that made it are not seen in (one reply's identical calls are one step, up
        # to FANOUT of them; see docs/loops.md), so 8 rounds: reported as a cycle.
        for _ in range(8):
            session.run_tool("search", lambda: "same hits", arguments={"q": "x"})
            session.run_tool("fetch", lambda: "same page", arguments={"url": "u"})
        researcher = Orchestrator(
            role="researcher",
            phase="plan",
            budget_usd=0.0005,
            enforce_budget=True,
            registry=planner.registry,
        )
        try:
            with researcher.session() as child:
                for _ in range(5):
                    child.run_turn(
                        lambda: "notes",
                        model="model-b",
                        usage=UsageSnapshot(input_tokens=200, output_tokens=100),
                    )
        except BudgetExceededError:
            pass
        session.run_turn(
            lambda: "final",
            model="model-b",
            usage=UsageSnapshot(input_tokens=300, output_tokens=50),
        )
    telemetry.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
