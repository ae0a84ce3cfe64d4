"""Proposed GenAI attributes, written on our spans only when the user opts in.

The cost attributes (``gen_ai.usage.cost.*``, semantic-conventions-genai PR #443)
and the iteration-budget attributes (``gen_ai.agent.iteration_budget.*``, issue
#425) are proposals: their names may still change, so they are off by default and
switched on process-wide by ``configure(proposed_conventions=True)``. Our own
``techrevati.cost.usd`` and ``techrevati.session.max_iterations`` are written
either way, so a dashboard built on them never depends on this switch.
"""

from __future__ import annotations

import threading
from typing import Any

from .. import semconv as sc
from ..readings.sdk_attributes import KnownValue

_lock = threading.Lock()
_on = False


def use_proposed(on: bool) -> None:
    """Write (True) or stop writing (False) the proposed attributes, process-wide.

    Example::

        use_proposed(True)   # what configure(proposed_conventions=True) does
    """
    global _on
    if not isinstance(on, bool):
        raise TypeError(f"proposed_conventions must be a bool, got {on!r}")
    with _lock:
        _on = on


def proposed() -> bool:
    """Whether the proposed attributes are being written."""
    return _on


def cost_attributes(amount: float, source: str | None) -> dict[str, KnownValue]:
    """``gen_ai.usage.cost.*`` of one priced model call; empty when off or not priced.

    A call of a model with no known price gets none: the proposal says not to set
    a cost that is not known (ours books it at $0 under ``techrevati.cost.source =
    unpriced``).

    Example::

        cost_attributes(0.0125, "registered")
    """
    if not _on or source is None or source in (sc.COST_SOURCE_UNPRICED, sc.COST_SOURCE_NO_USAGE):
        return {}
    return {
        sc.GEN_AI_USAGE_COST_AMOUNT: amount,
        sc.GEN_AI_USAGE_COST_CURRENCY: sc.COST_CURRENCY_USD,
        sc.GEN_AI_USAGE_COST_SOURCE: source,
    }


def session_attributes(cost: float, max_iterations: int | None, used: int) -> dict[str, Any]:
    """The proposed attributes of a finished session (an invoke_agent span).

    Its own cost as the operation's cost (``source`` ``computed``: the sum of its
    priced calls), and, when it has an iteration cap, the cap and the model calls
    it admitted.

    Example::

        session_attributes(0.25, 10, 3)
    """
    if not _on:
        return {}
    out: dict[str, Any] = {
        sc.GEN_AI_USAGE_COST_AMOUNT: cost,
        sc.GEN_AI_USAGE_COST_CURRENCY: sc.COST_CURRENCY_USD,
        sc.GEN_AI_USAGE_COST_SOURCE: "computed",
    }
    if max_iterations is not None:
        out[sc.GEN_AI_AGENT_ITERATION_BUDGET_LIMIT] = max_iterations
        out[sc.GEN_AI_AGENT_ITERATION_BUDGET_CONSUMED] = used
    return out
