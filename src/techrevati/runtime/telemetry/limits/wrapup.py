"""What a session has left before its limits stop it, read from its ledger chain.

A session's calls count against its own level and every ancestor session's
(``ledger.py``), so what is left is the tightest of them: the fewest calls
before a cap refuses, the least money before a budget is used up. ``fraction``
is the share left of the tightest *stopping* limit (a cap, or an enforced
budget): that is what ``wrap_up_at`` compares with.

A shared session's level counts its calls and spend in every process it
reaches: its cap and budget count here with the whole tree's totals, as this
process last saw them (each admission's reply carries them), or read from the
store with ``fresh`` (``session.remaining()``; one round trip). Fleet scopes
are not limits of a session and are not read here.
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


def remaining(ledger: Ledger, fresh: bool = False) -> Remaining:
    """The tightest of ``ledger``'s level and its ancestors (see the module docstring)."""
    left = _Left()
    level: Ledger | None = ledger
    while level is not None:
        left.cap(level.max_iterations, level.calls)
        left.budget(level.budget_usd, level.spent, level.enforce_budget)
        for fleet in level.fleet:
            totals = getattr(fleet, "shared_totals", None)
            if totals is not None:
                cap, calls, budget, spent = totals(fresh)
                left.cap(cap, calls)
                left.budget(budget, spent, True)  # a shared budget is always enforced
        level = level.parent
    return Remaining(left.calls, left.budget_usd, left.fraction, left.limit)


@dataclass(slots=True)
class _Left:
    """The tightest limits seen so far, walking up a chain."""

    calls: int | None = None
    budget_usd: float | None = None
    fraction: float | None = None
    limit: str | None = None

    def cap(self, cap: int | None, used: int) -> None:
        if cap is None:
            return
        left = max(cap - used, 0)
        self.calls = left if self.calls is None else min(self.calls, left)
        self._share(left / cap if cap > 0 else 0.0, sc.LIMIT_ITERATIONS)

    def budget(self, limit_usd: float | None, spent: float, enforced: bool) -> None:
        if limit_usd is None:
            return
        # To the nano-dollar the ledger counts in: two whole amounts' difference, without
        # the float subtraction's tail (1.0 - 0.1527 reads 0.8472999999999999).
        left_usd = max(round(limit_usd - spent, 9), 0.0)
        self.budget_usd = left_usd if self.budget_usd is None else min(self.budget_usd, left_usd)
        if enforced:
            self._share(left_usd / limit_usd if limit_usd > 0 else 0.0, sc.LIMIT_BUDGET)

    def _share(self, share: float, limit: str) -> None:
        if self.fraction is None or share < self.fraction:
            self.fraction, self.limit = share, limit


def check_wrap_up_at(value: object) -> float | None:
    """``wrap_up_at`` validated: None, or a number in (0, 1]."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"wrap_up_at must be a number between 0 and 1, got {value!r}")
    if not 0.0 < value <= 1.0:
        raise ValueError(f"wrap_up_at must be > 0 and <= 1 (a share of the limit), got {value!r}")
    return float(value)
