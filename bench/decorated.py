"""Workloads on the decorator front door: ``@agent_turn``, ``@tool_call``, ``agent_session``.

The decorated model call returns a real ``openai`` ``ChatCompletion`` (built
once), so every call also reads its usage and model from the response the
way it reads a client's, which is how the decorator is meant to be used.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from techrevati.runtime.decorators import agent_session, agent_turn, tool_call

from . import harness, ours
from .harness import Bench
from .otelkit import INPUT_TOKENS, MODEL, OUTPUT_TOKENS


def _completion() -> Any:
    """A real ``openai`` chat completion, as the client returns it (parsed once)."""
    from openai.types.chat import ChatCompletion

    return ChatCompletion.model_validate(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 0,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "fact"},
                }
            ],
            "usage": {
                "prompt_tokens": INPUT_TOKENS,
                "completion_tokens": OUTPUT_TOKENS,
                "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS,
            },
        }
    )


RESPONSE = _completion()


@agent_turn(MODEL)
def ask() -> Any:
    return RESPONSE


@agent_turn(MODEL)
async def ask_async() -> Any:
    await asyncio.sleep(0)  # yield: concurrent sessions really interleave
    return RESPONSE


@tool_call("lookup")
def lookup() -> str:
    return "fact"


def session(tracer_provider: Any, meter_provider: Any, **kwargs: Any) -> agent_session:
    """An ``agent_session`` with the configuration ``ours.orchestrator`` uses."""
    options: dict[str, Any] = {
        "phase": "draft",
        "budget_usd": ours.BUDGET,
        "enforce_budget": True,
        "max_iterations": ours.BIG,
        "permissions": ours.permissions(),
        "tracer_provider": tracer_provider,
        "meter_provider": meter_provider,
        "provider_name": "bench",
    }
    options.update(kwargs)
    return agent_session("writer", **options)


def turns_in(cm: agent_session, warm: int, timed: int) -> Callable[[], float]:
    """A sample: a fresh session, ``warm`` decorated turns untimed, ``timed`` timed."""

    def sample() -> float:
        with cm:
            for _ in range(warm):
                ask()
            start = time.perf_counter()
            for _ in range(timed):
                ask()
            elapsed = time.perf_counter() - start
        return elapsed / timed

    return sample


def tools_in(cm: agent_session, timed: int) -> Callable[[], float]:
    def sample() -> float:
        with cm:
            start = time.perf_counter()
            for _ in range(timed):
                lookup()
            elapsed = time.perf_counter() - start
        return elapsed / timed

    return sample


def bare_turns(n: int) -> None:
    """Decorated turns outside any session (and, here, with no OTel configured)."""
    for _ in range(n):
        ask()


def overhead_benches(tp: Any, mp: Any, calls: int, warm: int, timed: int) -> list[Bench]:
    on = session(tp, mp)
    off = session(tp, None)
    fallback = session(None, None)
    return [
        Bench("agent_turn_on", "@agent_turn, metrics on", turns_in(on, warm, timed), "BM"),
        Bench("agent_turn_off", "@agent_turn, metrics off", turns_in(off, warm, timed), "B"),
        Bench("tool_call_on", "@tool_call + permission, metrics on", tools_in(on, timed), "B"),
        Bench("tool_call_off", "@tool_call + permission, metrics off", tools_in(off, timed), "B"),
        Bench(
            "agent_turn_fallback",
            "@agent_turn, no OTel configured",
            turns_in(fallback, warm, timed),
            "B",
        ),
        Bench(
            "tool_call_fallback",
            "@tool_call + permission, no OTel configured",
            tools_in(fallback, timed),
            "B",
        ),
        Bench(
            "agent_turn_bare",
            "@agent_turn, no session, no OTel configured",
            harness.batch(bare_turns, calls),
            "B",
        ),
    ]
