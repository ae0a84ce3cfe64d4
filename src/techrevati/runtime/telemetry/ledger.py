"""The per-session ledger: what a session has spent and how many model calls it made.

One ledger per session, and the session's ``UsageTracker`` is its store, so
``session.tracker``, the span roll-up and the enforcement read the same numbers.
Both entry points, the span processor and the core's fallback for unsampled
spans, go through ``admit`` and ``record``: the limit logic exists once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import MaxIterationsExceededError
from ..sinks import UsageSink
from ..usage_tracking import BudgetExceededError, PricedTurn, UsageSnapshot, UsageTracker
from . import semconv as sc

_orchestrator_log = logging.getLogger("techrevati.runtime.orchestrator")
_USAGE_SINK_FAILED = "usage_sink.record raised; suppressing to keep session alive"

#: Called with (limit kind, the error) whenever a limit is hit, enforced or not.
LimitListener = Callable[[str, Exception], None]
#: Called with (model, usage, cost) for usage the core did not price itself.
CostListener = Callable[[str, UsageSnapshot, float], None]


@dataclass(eq=False)
class SessionLedger:
    """Budget and iteration cap of one session, kept consistent under threads.

    Example::

        ledger = SessionLedger(UsageTracker(), budget_usd=1.0, enforce_budget=True,
                               max_iterations=3)
        ledger.admit()                      # 1st model call may start
        ledger.record("gpt-4o", UsageSnapshot(1000, 200))
    """

    tracker: UsageTracker
    budget_usd: float | None = None
    enforce_budget: bool = False
    max_iterations: int | None = None
    usage_sink: UsageSink | None = None
    on_limit: LimitListener | None = None
    on_unpriced_cost: CostListener | None = None
    iterations: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _sink_failed: bool = field(default=False, repr=False)

    def admit(self) -> int:
        """Count one model call that is about to start, or raise if a limit forbids it.

        The cap means "never start call max+1"; an enforced budget that is
        already exceeded refuses the next call before its body runs.
        """
        error: Exception
        with self._lock:
            if self.max_iterations is not None and self.iterations >= self.max_iterations:
                kind, error = sc.LIMIT_ITERATIONS, MaxIterationsExceededError(self.max_iterations)
            elif (
                self.enforce_budget
                and self.budget_usd is not None
                and self.tracker.total_cost() > self.budget_usd
            ):
                kind = sc.LIMIT_BUDGET
                error = BudgetExceededError(self.budget_usd, self.tracker.total_cost())
            else:
                self.iterations += 1
                return self.iterations
        self._notify(kind, error)
        raise error

    def record(
        self,
        model: str,
        usage: UsageSnapshot,
        *,
        priced: bool = True,
        price: PricedTurn | None = None,
    ) -> float:
        """Book one finished model call; returns its cost. Never raises.

        ``priced=False`` means nobody has accounted this cost in metrics yet
        (usage read from a third-party span), so the cost listener is told.
        ``price`` is the turn's ``price_turn`` result when the caller already
        priced it (the core does, for its span), so it is not priced again.
        """
        if not model:
            # The contract books only turns that name a model.
            return 0.0
        tracker = self.tracker
        cost = (
            tracker.record_and_price(model, usage)
            if price is None
            else tracker.record_priced(model, usage, price)
        )
        if self.usage_sink is not None:
            try:
                self.usage_sink.record(model, usage, cost)
            except Exception:
                # Once per session at ERROR: a sink that is down fails on every
                # turn, and one traceback says all there is to say.
                if self._sink_failed:
                    _orchestrator_log.debug(_USAGE_SINK_FAILED, exc_info=True)
                else:
                    self._sink_failed = True
                    _orchestrator_log.exception(_USAGE_SINK_FAILED)
        if not priced and self.on_unpriced_cost is not None and cost:
            self.on_unpriced_cost(model, usage, cost)
        return cost

    def check_budget(self) -> BudgetExceededError | None:
        """After a turn: report an exceeded budget; return the error if it is enforced."""
        # ``total_cost() > budget`` is ``is_over_budget``, one call frame cheaper per turn.
        if self.budget_usd is None or not self.tracker.total_cost() > self.budget_usd:
            return None
        error = BudgetExceededError(self.budget_usd, self.tracker.total_cost())
        self._notify(sc.LIMIT_BUDGET, error)
        return error if self.enforce_budget else None

    def _notify(self, kind: str, error: Exception) -> None:
        if self.on_limit is None:
            return
        try:
            self.on_limit(kind, error)
        except Exception:
            _orchestrator_log.exception("limit listener raised; suppressing")
