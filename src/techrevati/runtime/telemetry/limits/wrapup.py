"""What a session has left before its limits stop it, read from its ledger chain.

A session's calls count against its own level and every ancestor session's
(``ledger.py``), so what is left is the tightest of them: the fewest calls
before a cap refuses, the least money before a budget is used up. ``fraction``
is the share left of the tightest *stopping* limit (a cap, or an enforced
budget): that is what ``wrap_up_at`` compares with. Fleet scopes live in Redis
and are not read here (that would be a network call per model call).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import semconv as sc
from .ledger import Ledger


@dataclass(frozen=True, slots=True)
class Remaining:
    """What is left: calls, budget (USD) and the share of the tightest stopping limit.

    ``calls`` is None without a cap; ``budget_usd`` None without a budget;
    ``fraction`` (0.0-1.0) None when neither a cap nor an enforced budget applies.
    ``limit`` names the limit ``fraction`` comes from (``"max_iterations"`` or
    ``"budget"``).

    Example::

        left = session.remaining()
        if left.fraction is not None and left.fraction < 0.2:
            ask_for_final_answer()
    """

    calls: int | None
    budget_usd: float | None
    fraction: float | None
    limit: str | None = None


def remaining(ledger: Ledger) -> Remaining:
    """The tightest of ``ledger``'s level and its ancestors (see the module docstring)."""
    calls: int | None = None
    budget: float | None = None
    fraction: float | None = None
    limit: str | None = None
    level: Ledger | None = ledger
    while level is not None:
        cap = level.max_iterations
        if cap is not None:
            left = max(cap - level.calls, 0)
            calls = left if calls is None else min(calls, left)
            share = left / cap if cap > 0 else 0.0
            if fraction is None or share < fraction:
                fraction, limit = share, sc.LIMIT_ITERATIONS
        limit_usd = level.budget_usd
        if limit_usd is not None:
            left_usd = max(limit_usd - level.spent, 0.0)
            budget = left_usd if budget is None else min(budget, left_usd)
            if level.enforce_budget:
                share = left_usd / limit_usd if limit_usd > 0 else 0.0
                if fraction is None or share < fraction:
                    fraction, limit = share, sc.LIMIT_BUDGET
        level = level.parent
    return Remaining(calls, budget, fraction, limit)


def check_wrap_up_at(value: object) -> float | None:
    """``wrap_up_at`` validated: None, or a number in (0, 1]."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"wrap_up_at must be a number between 0 and 1, got {value!r}")
    if not 0.0 < value <= 1.0:
        raise ValueError(f"wrap_up_at must be > 0 and <= 1 (a share of the limit), got {value!r}")
    return float(value)
