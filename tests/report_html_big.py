"""Synthetic spans files of any size, shaped like ours, for the HTML report's bounds.

Each session is what the core writes: an ``invoke_agent`` span with its roll-ups,
its model calls (priced, ``techrevati.cost.source`` set) and its tool calls
(some denied); one session in ``hit_every`` has a budget limit-hit event and one
in ``child_every`` is the child of the session before it. Deterministic for a
seed, so two runs write the same bytes. Used by the tests (a few MB) and by
``bench/html_report.py`` (100 MB).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from techrevati.runtime.telemetry import semconv as sc


def _attr(key: str, value: object) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": str(value)}}


@dataclass
class Written:
    """What a synthetic file holds, to check the page against."""

    bytes: int
    sessions: int
    limit_hit_sessions: int
    #: (trace id, span id) of each session, with its cost.
    costs: dict[str, float]
    hit_ids: set[str]


def write_spans(
    path: Path,
    target_bytes: int,
    *,
    seed: int = 7,
    hit_every: int = 40,
    child_every: int = 5,
    sessions_per_line: int = 20,
) -> Written:
    """Write sessions to ``path`` until it holds at least ``target_bytes``."""
    rng = random.Random(seed)
    models = [f"model-{i}" for i in range(6)]
    tools = [f"tool_{i}" for i in range(12)]
    roles = [f"agent-{i}" for i in range(8)]
    written = Written(0, 0, 0, {}, set())
    span_counter = 0
    clock = 1_700_000_000_000_000_000
    previous: tuple[str, str] | None = None

    def next_id() -> str:
        nonlocal span_counter
        span_counter += 1
        return f"{span_counter:016x}"

    with open(path, "w", encoding="utf-8") as out:
        while written.bytes < target_bytes:
            spans: list[dict[str, Any]] = []
            for _ in range(sessions_per_line):
                index = written.sessions
                written.sessions += 1
                child = previous is not None and index % child_every == 1
                trace_id = previous[0] if child and previous else f"{index + 1:032x}"
                session_id = next_id()
                start = clock
                clock += 50_000_000
                calls = rng.randint(1, 12)
                cost_total = 0.0
                tokens_in = tokens_out = 0
                at = start + 1_000_000
                for _ in range(calls):
                    model = rng.choice(models)
                    tin, tout = rng.randint(100, 5_000), rng.randint(10, 800)
                    cost = (tin * 1.0 + tout * 4.0) / 1e6
                    cost_total += cost
                    tokens_in += tin
                    tokens_out += tout
                    spans.append(
                        {
                            "traceId": trace_id,
                            "spanId": next_id(),
                            "parentSpanId": session_id,
                            "name": f"chat {model}",
                            "kind": 3,
                            "startTimeUnixNano": str(at),
                            "endTimeUnixNano": str(at + 2_000_000),
                            "attributes": [
                                _attr(sc.GEN_AI_OPERATION_NAME, "chat"),
                                _attr(sc.GEN_AI_REQUEST_MODEL, model),
                                _attr(sc.GEN_AI_PROVIDER_NAME, "openai"),
                                _attr(sc.GEN_AI_USAGE_INPUT_TOKENS, tin),
                                _attr(sc.GEN_AI_USAGE_OUTPUT_TOKENS, tout),
                                _attr(sc.COST_USD, cost),
                                _attr(sc.COST_SOURCE, "registered"),
                                _attr(sc.BREAKER_NAME, "model-api"),
                                _attr(sc.BREAKER_STATE, "closed"),
                            ],
                            "status": {},
                        }
                    )
                    at += 2_500_000
                    if rng.random() < 0.5:
                        denied = rng.random() < 0.1
                        spans.append(
                            {
                                "traceId": trace_id,
                                "spanId": next_id(),
                                "parentSpanId": session_id,
                                "name": f"execute_tool {rng.choice(tools)}",
                                "kind": 1,
                                "startTimeUnixNano": str(at),
                                "endTimeUnixNano": str(at + 1_000_000),
                                "attributes": [
                                    _attr(sc.GEN_AI_OPERATION_NAME, "execute_tool"),
                                    _attr(
                                        sc.PERMISSION_DECISION,
                                        sc.PERMISSION_DENY if denied else sc.PERMISSION_ALLOW,
                                    ),
                                    *([_attr(sc.ERROR_TYPE, "PermissionDeniedError")] * denied),
                                ],
                                "status": {"code": 2} if denied else {},
                            }
                        )
                        at += 1_500_000
                hit = index % hit_every == hit_every - 1
                role = rng.choice(roles)
                session: dict[str, Any] = {
                    "traceId": trace_id,
                    "spanId": session_id,
                    "name": f"invoke_agent {role}",
                    "kind": 1,
                    "startTimeUnixNano": str(start),
                    "endTimeUnixNano": str(at + 1_000_000),
                    "attributes": [
                        _attr(sc.GEN_AI_OPERATION_NAME, "invoke_agent"),
                        _attr(sc.GEN_AI_AGENT_NAME, role),
                        _attr(sc.SESSION_OUTCOME, "failed" if hit else "completed"),
                        _attr(sc.SESSION_TURNS, calls),
                        _attr(sc.COST_USD, cost_total),
                        _attr(sc.GEN_AI_USAGE_INPUT_TOKENS, tokens_in),
                        _attr(sc.GEN_AI_USAGE_OUTPUT_TOKENS, tokens_out),
                    ],
                    "events": (
                        [
                            {
                                "timeUnixNano": str(at),
                                "name": sc.EVENT_LIMIT_HIT,
                                "attributes": [
                                    _attr(sc.LIMIT_KIND, "budget"),
                                    _attr(sc.ERROR_TYPE, "BudgetExceededError"),
                                ],
                            }
                        ]
                        if hit
                        else []
                    ),
                    "status": {"code": 2} if hit else {},
                }
                if child and previous is not None:
                    session["parentSpanId"] = previous[1]
                spans.append(session)
                key = f"{trace_id}/{session_id}"
                written.costs[key] = cost_total
                if hit:
                    written.limit_hit_sessions += 1
                    written.hit_ids.add(key)
                previous = (trace_id, session_id)
            line = json.dumps(
                {
                    "resourceSpans": [
                        {
                            "resource": {
                                "attributes": [
                                    _attr("service.name", "synthetic"),
                                    _attr(sc.RUN_ID, "run-1"),
                                ]
                            },
                            "scopeSpans": [
                                {"scope": {"name": sc.INSTRUMENTATION_SCOPE}, "spans": spans}
                            ],
                        }
                    ]
                },
                separators=(",", ":"),
            )
            out.write(line + "\n")
            written.bytes += len(line) + 1
    return written
