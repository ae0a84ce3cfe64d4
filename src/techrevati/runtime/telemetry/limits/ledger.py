"""The ledger: what each session has admitted, reserved and spent, as a tree.

Every session owns one ``Ledger``; a session opened while another is active
gets that session's ledger as its parent, and fleet scopes (shared budgets in
Redis) hang above the roots. A model call walks the whole chain:

* ``admit`` reserves the call's expected cost and counts it at every level, all
  or none: a level whose cap is reached, or whose enforced budget is already
  committed (spent + reserved by other calls in flight), refuses the call
  before its body runs;
* ``settle`` replaces the reservation with the actual cost at every level;
* ``release`` drops the reservation of a call that failed or was refused.

One lock per tree (the root's) makes admission atomic across the chain; the
critical sections are a few additions, and no lock is ever held while user
code or the network runs. Fleet levels are asked after the local levels have
agreed, and a fleet refusal releases what the local levels reserved.

The expected cost of a call is, in order: the price of usage known up front,
the most expensive finished call of that model in the session (or an
ancestor), the session's ``call_estimate_usd``, else 0; where the client guard
sees the request, at least its upper-bound estimate (``estimate.py``: counted
at once for a first call, else when another call is admitted while it runs).
A call whose model is
not known yet when it is admitted (LangChain instrumentations' spans name it
only later) is expected to cost the most expensive finished call of any model
in the chain: concurrent calls admitted that way would otherwise reserve
nothing and all pass a nearly spent budget. With K calls in flight
the overshoot of an enforced budget is therefore at most
K × (actual − reserved) per call.

Money is integer nano-dollars (``money.py``): a level is refused once spent +
reserved by calls in flight has *reached* its budget, and it raises after a call
only when spent is strictly *above* it, so spend landing exactly on the budget
does not raise and the next call is refused before it runs, the same rule as
the fleet's Redis level.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry.context import Context

from ...caller import UserSite, late_site, warn_site
from ...circuit_breaker import (
    AsyncCircuitBreaker,
    BreakerPermit,
    CircuitBreaker,
    CircuitOpenError,
)
from ...pricing import ESTIMATED, PricedCall, has_pricing, price_call
from ...sinks import UsageSink
from ...usage_tracking import (
    BudgetExceededError,
    LimitSite,
    PricedTurn,
    UsageSnapshot,
    UsageTracker,
    usd_text,
)
from .. import semconv as sc
from .errors import (
    DEFAULT_MAX_ITERATIONS,
    RUNTIME_REFUSALS,
    DefaultCap,
    MaxIterationsExceededError,
    UnpricedModelError,
)
from .estimate import DEFERRED, RAISED_FROM, estimate_deferred
from .money import booking_nano, check_budget, to_nano, to_usd
from .probe import DEFAULT_PROBE_WAIT_S, Probe, _ProbeWait
from .probe import strand as probe_strand

_orchestrator_log = logging.getLogger("techrevati.runtime.orchestrator")

# Late fleet bookings still on their way to Redis (``Ledger._fleet_unasked``).
# Their threads are daemons, so the fleet's flushes (``FleetLimits.flush``, the
# exit and SIGTERM flushes) wait for them: a booking that counts a call which
# already ran must not be lost because the process ended a moment later.
_late: set[threading.Thread] = set()
_late_lock = threading.Lock()


def _run_late(book: Callable[[], None]) -> None:
    def run() -> None:
        try:
            book()
        finally:
            with _late_lock:
                _late.discard(thread)

    thread = threading.Thread(target=run, name="techrevati-fleet-late", daemon=True)
    with _late_lock:
        _late.add(thread)
    thread.start()


def late_fleet_bookings() -> int:
    """How many late fleet bookings are still running."""
    with _late_lock:
        return len(_late)


def wait_late_fleet_bookings(deadline: float) -> bool:
    """Wait until ``deadline`` (``time.monotonic()``) for late fleet bookings; True: none left."""
    with _late_lock:
        running = list(_late)
    me = threading.current_thread()
    for thread in running:
        if thread is not me:  # a booking's own flush cannot wait for itself
            thread.join(max(0.0, deadline - time.monotonic()))
    return late_fleet_bookings() == 0


def _forget_late_after_fork() -> None:
    # The parent's threads do not run in a forked child: its bookings are the parent's.
    global _late_lock
    _late.clear()
    _late_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_late_after_fork)
_USAGE_SINK_FAILED = "usage_sink.record raised; suppressing to keep session alive"

#: Called with (limit kind, the error) whenever a limit is hit, enforced or not.
LimitListener = Callable[[str, Exception], None]
#: Called with (model, usage, cost) for usage booked from another instrumentation's span.
CostListener = Callable[[str, UsageSnapshot, float], None]


class FleetLevel(Protocol):
    """A shared level above the session roots (``FleetLimits`` is one)."""

    scope: str
    budget_usd: float | None

    def reserve(self, model: str, expected_usd: float) -> object: ...
    async def areserve(self, model: str, expected_usd: float) -> object: ...
    def settle(self, hold: object, actual_usd: float) -> None: ...
    def release(self, hold: object, *, ran: bool = True) -> None: ...


@dataclass(frozen=True, slots=True)
class FleetOver:
    """A fleet scope (or shared session) a call was seen to take over its budget."""

    fleet: FleetLevel
    #: The scope's spend once the call was booked, as this process saw it.
    spent: float


@dataclass(eq=False, slots=True)
class Claim:
    """One admitted model call's hold on every level of its ledger chain.

    ``ours`` is True for a call our core made (a turn); False for a model span
    of another instrumentation. ``absorbed`` marks that the one library span
    inside our turn that describes the same request has been seen; ``inner``
    that other calls were admitted inside this one (so its own result's usage
    is not booked again); ``library`` holds usage an absorbed library span
    reported before the turn ended.
    """

    leaf: Ledger
    model: str
    expected: float
    iteration: int
    ours: bool
    #: ``expected`` in nano-dollars, clamped (what the levels reserved).
    expected_nano: int = 0
    holds: tuple[tuple[FleetLevel, object], ...] = ()
    open: bool = True
    booked_usage: bool = False
    absorbed: bool = False
    inner: bool = False
    library: tuple[str, UsageSnapshot] | None = None
    #: Set when this call is its model's probe (see ``probe.py``).
    probe: Probe | None = None
    #: What the client guard saw of this call (request size, streamed text), as
    #: usage: booked if the call's own usage never arrives.
    estimated: UsageSnapshot | None = None
    #: Admitted locally; the fleet scopes are still to be asked (``areserve_fleet``).
    fleet_deferred: bool = False
    forced: bool = False
    #: The first enforced level of the chain over its budget once this call was
    #: booked (read under the lock that booked it): the turn raises for it.
    over: Ledger | FleetOver | None = None
    #: ``over`` had been crossed by an earlier booking, not by this call's.
    over_later: bool = False
    #: Why a call ended before its usage arrived, for the warning: ``"stream"``, a
    #: stream whose request asked for its usage, closed early, dropped unread or
    #: failed before its last chunk; ``"cancelled"`` or
    #: ``"timed out"``, a request that ended unanswered after it was sent
    #: (see ``unanswered.py``); ``"not read"`` or ``"read partly"``, a raw response
    #: whose body was closed before its end (``door._Body``); ``"stopped"``, in flight
    #: when SIGTERM ended the process's sessions (``membership.book_in_flight``);
    #: ``"usage="``, not early but the caller's usage callback gave no usage
    #: (``TurnCall.usage_unread``); ``"refused"``, refused by the client guard before
    #: it was sent, once its request named its model (``Ledger.admit_named``).
    ended_early: str = ""
    #: Attempts the SDK retried after they timed out reading their response: sent,
    #: so billed, each at its request's upper bound (``unanswered.retrying``); booked
    #: with the call, and how many.
    retried: UsageSnapshot | None = None
    retries: int = 0
    #: The user's line that made the call, for its booking's warnings when nothing
    #: of the user's is on the stack then: a stream dropped unread is booked when it
    #: is collected (a weak reference's callback), from wherever that happens.
    site: UserSite | None = None
    #: Admitted on an event loop at its provider's default output length, knowing
    #: nothing else (``processor._admit_on_loop``): a placeholder the client guard
    #: replaces with its request's own upper bound, lower or higher (``reserve_at``).
    default_cap: bool = False
    #: Its session breaker's admission, held until the call's outcome is told
    #: (``breaker_call_ended``): a call the client guard or another instrumentation's
    #: span admitted in a session with a breaker (our turns hold their own).
    permit: BreakerPermit | None = None


_ZERO = UsageSnapshot()

#: ``Claim.ended_early`` of a request that was sent and ended unanswered, or answered
#: with a body closed before its end (its usage comes last, never seen): billed by the
#: provider, so booked at its request's upper bound with or without a budget.
#: ``"stopped"`` too: a call in flight at SIGTERM has its request at the provider.
_SENT = frozenset({"cancelled", "timed out", "not read", "read partly", "stopped"})
#: How the warning says a raw response's body was left (``door._Body``).
_UNREAD = {
    "not read": "before any of it was read",
    "read partly": "after only part of it was read",
}


def plus_usage(a: UsageSnapshot, b: UsageSnapshot) -> UsageSnapshot:
    """The two calls' usage together."""
    return UsageSnapshot(
        a.input_tokens + b.input_tokens,
        a.output_tokens + b.output_tokens,
        a.cache_write_tokens + b.cache_write_tokens,
        a.cache_read_tokens + b.cache_read_tokens,
    )


def _retried_warning(retries: int, model: str) -> str:
    """The warning for attempts booked with their call, in the number's grammar."""
    if retries == 1:
        return (
            f"1 attempt of a call of model {model!r} timed out waiting for its response "
            "after it was sent, and the client retried it, under an enforced budget: the "
            "provider bills it, so it was booked with the call at its request's upper bound "
            "(max_tokens, or 4,096 output tokens)"
        )
    return (
        f"{retries} attempts of a call of model {model!r} timed out waiting for their "
        "response after they were sent, and the client retried them, under an enforced "
        "budget: the provider bills each, so they were booked with the call at their "
        "requests' upper bound (max_tokens, or 4,096 output tokens each)"
    )


def _learn(leaf: Ledger, model: str, cost: float) -> None:
    """Raise what ``model`` is known to cost to ``cost`` at every level (under the lock)."""
    for level in leaf._chain:
        learned = level.learned
        if cost > learned.get(model, -1.0) and (model in learned or len(learned) < _LEARNED_LIMIT):
            learned[model] = cost


def _costliest(learned: dict[str, float]) -> float | None:
    """The most expensive finished call of any model, for a call whose model is unnamed."""
    return max(learned.values()) if learned else None


#: Models whose cost a ledger learns (and warns about) at most: names come from
#: responses, and a process-wide root ledger lives as long as the process.
_LEARNED_LIMIT = 1024

#: Ledgers that have held a guard stream (``Ledger.streams``), weakly: a refusal
#: finds there the streams whose reservations it counts (``_open_streams``).
STREAMING: weakref.WeakSet[Ledger] = weakref.WeakSet()


def _open_streams(level: Ledger) -> tuple[int, int, frozenset[int]]:
    """The guard's streams still open (not read to their end, closed nor collected)
    whose reservations ``level`` counts: how many, what they reserve (nano-USD), and
    which (their calls' ids)."""
    count = nano = 0
    which: set[int] = set()
    for ledger in list(STREAMING):
        streams = ledger.streams
        if not streams:
            continue
        for claim in list(streams):
            if claim.open and level in claim.leaf._chain:
                count += 1
                nano += claim.expected_nano
                which.add(id(claim))
    return count, nano, frozenset(which)


#: The open streams each level's last collection left open (``Ledger.admit``): held by
#: their caller, so collecting again for the same ones would book nothing.
_SWEPT: weakref.WeakKeyDictionary[Ledger, frozenset[int]] = weakref.WeakKeyDictionary()


@dataclass(eq=False)
class Ledger:
    """Caps, budget and spend of one session, linked to its parent's ledger.

    ``iterations`` counts this session's own admitted calls; ``calls``,
    ``spent`` and ``reserved`` include every descendant session's calls, and
    the cap and budget of this level apply to those tree-wide totals.

    Example::

        parent = Ledger(UsageTracker(), budget_usd=1.0, enforce_budget=True)
        child = Ledger(UsageTracker(), parent=parent, max_iterations=3)
        claim = child.admit("gpt-4o", expected=0.2)   # reserves $0.20 at both levels
        child.settle(claim, "gpt-4o", UsageSnapshot(1000, 200))
        parent.spent                                   # the child's cost, tree-wide
    """

    tracker: UsageTracker
    budget_usd: float | None = None
    enforce_budget: bool = False
    max_iterations: int | None = None
    usage_sink: UsageSink | None = None
    on_limit: LimitListener | None = None
    on_unpriced_cost: CostListener | None = None
    parent: Ledger | None = None
    fleet: tuple[FleetLevel, ...] = ()
    #: Expected cost of a call when nothing better is known (see the module docstring).
    call_estimate_usd: float | None = None
    #: Accept calls of unpriced models at $0 under an enforced budget.
    allow_unpriced: bool = False
    #: The owning session's role and id, named by the limit errors ("" before it opens).
    role: str = ""
    session_id: str = ""
    #: How long a call waits for its model's first (probe) call to settle.
    probe_wait_s: float = DEFAULT_PROBE_WAIT_S
    iterations: int = 0
    calls: int = 0
    #: This session's model calls made outside its tool calls: the agent's turns. Loop
    #: detection counts repetition across them (``limits/loops.py``, ``same_step``).
    turns: int = 0
    #: Settled cost and reservations of calls in flight, in nano-dollars (exact sums).
    spent_nano: int = 0
    reserved_nano: int = 0
    calls_without_usage: int = 0
    calls_estimated: int = 0
    estimated_usd: float = 0.0
    unpriced_calls: int = 0
    #: Those calls by model (at most ``_LEARNED_LIMIT`` names): the session span lists
    #: them, so a report names the models of calls no span of their own carries.
    unpriced_models: dict[str, int] = field(default_factory=dict, repr=False)
    crossed: bool = False
    learned: dict[str, float] = field(default_factory=dict, repr=False)
    #: Models an enforced budget cannot price here: a call returned no usage and
    #: nothing could estimate it (refused from then on unless allow_unpriced).
    uncosted: set[str] = field(default_factory=set, repr=False)
    #: Probe calls in flight, by model (kept on the tree's root).
    probes: dict[str, Probe] = field(default_factory=dict, repr=False)
    #: Keys of this session's open spans, dropped with the session.
    open_keys: set[tuple[int, int]] = field(default_factory=set, repr=False)
    #: The session that owns this ledger, weakly (membership finds it from a span).
    session_ref: Callable[[], Any] | None = field(default=None, repr=False)
    #: The owning session's circuit breaker (None: none, the common case): the doors
    #: other than our turns admit their calls through it (``breaker_admit_call``).
    breaker: CircuitBreaker | AsyncCircuitBreaker | None = field(default=None, repr=False)
    #: Told of those calls' breaker news, (model, the refusal or None once a call ended):
    #: the session reports them as it does its turns' (``calls/breakers.py``).
    on_breaker: Callable[[str, CircuitOpenError | None], None] | None = field(
        default=None, repr=False
    )
    #: The thread the session opened on, and whether an escaped call was warned about.
    opened_on: int = field(default=0, repr=False)
    #: Called with this level after a call was admitted or booked anywhere below it
    #: (a session's wrap-up check); None: nothing to call, the common case. Set
    #: it with ``watch_use``, which tells the chains below that they must call it.
    on_use: Callable[[Ledger], None] | None = field(default=None, repr=False)
    #: A refusal for every call of this session until a tool call breaks the loop (a
    #: loop seen only in another instrumentation's tool spans; see limits/loops.py).
    pending_refusal: Exception | None = field(default=None, repr=False)
    #: Library calls admitted lately, (wall-clock ns, claim), kept by ``membership``.
    recent: deque[tuple[int, Claim]] | None = field(default=None, repr=False)
    #: The client guard's own calls whose streams are still to be read (made on
    #: first use; listed in ``STREAMING``; the values are unused): released with the
    #: session's other calls in flight when it closes (a web handler may hand a stream
    #: on, to be read after its session), booked when read, closed or collected.
    streams: dict[Claim, Callable[[], object] | None] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(init=False, repr=False)
    _chain: tuple[Ledger, ...] = field(init=False, repr=False)
    _fleet_chain: tuple[FleetLevel, ...] = field(init=False, repr=False)
    #: Levels of the chain that watch their usage (``on_use``): read on every call,
    #: so a chain with no wrap-up anywhere (the common case) skips ``_used`` at once.
    _watchers: tuple[Ledger, ...] = field(init=False, repr=False)
    _enforced: bool = field(init=False, repr=False)
    _local_enforced: bool = field(init=False, repr=False)
    _budgeted: bool = field(init=False, repr=False)
    #: ``budget_usd`` in nano-dollars (-1: no budget).
    _budget_nano: int = field(init=False, repr=False)
    _sink_failed: bool = field(default=False, repr=False)
    #: ``max_iterations`` is the default cap, not one the session was given.
    _default_cap: bool = field(default=False, init=False, repr=False)
    _warned: set[tuple[str, str]] = field(default_factory=set, repr=False)
    #: (limit kind, fleet scope) already reported here: one stop is one limit hit.
    _hits: set[tuple[str, str]] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        cap = self.max_iterations
        if type(cap) is DefaultCap:
            # A plain int for admission, whose comparison runs on every call; the error
            # gets the marked default back (``_cap_error``).
            self.max_iterations = int(cap)
            self._default_cap = True
        self.budget_usd = check_budget("budget_usd", self.budget_usd)
        self._budget_nano = -1 if self.budget_usd is None else to_nano(self.budget_usd)
        self._link(self.parent)

    @property
    def spent(self) -> float:
        """Settled cost in USD, tree-wide (read it; compare ``spent_nano``)."""
        return to_usd(self.spent_nano)

    @property
    def reserved(self) -> float:
        """USD reserved by calls in flight, tree-wide."""
        return to_usd(self.reserved_nano)

    def attach(self, parent: Ledger | None) -> None:
        """Make ``parent`` this ledger's parent (a session opening inside another).

        Only before the first admission: a tree never changes under calls in flight.
        """
        if parent is self.parent or self.calls or parent is None:
            return
        self.parent = parent
        self._link(parent)

    def add_fleet(self, fleet: tuple[FleetLevel, ...]) -> None:
        """Add fleet scopes to this level (before its first admission)."""
        if fleet and not self.calls:
            self.fleet = (*self.fleet, *fleet)
            self._link(self.parent)

    def _link(self, parent: Ledger | None) -> None:
        # One lock per tree: admission must see every level at once.
        self._lock = parent._lock if parent is not None else threading.Lock()
        self._chain = (self, *parent._chain) if parent is not None else (self,)
        fleets: list[FleetLevel] = []
        for level in self._chain:
            for fleet in level.fleet:
                if all(fleet is not seen for seen in fleets):
                    fleets.append(fleet)
        self._fleet_chain = tuple(fleets)
        # Read on every call: computed once per link (budgets are fixed at open).
        fleet_budget = any(fleet.budget_usd is not None for fleet in fleets)
        self._local_enforced = any(
            level.enforce_budget and level.budget_usd is not None for level in self._chain
        )
        self._enforced = fleet_budget or self._local_enforced
        self._budgeted = fleet_budget or any(level.budget_usd is not None for level in self._chain)
        self._watchers = tuple(level for level in self._chain if level.on_use is not None)

    def watch_use(self, listener: Callable[[Ledger], None]) -> None:
        """Call ``listener`` with this level after every admission or booking below it.

        Before the first admission, like ``attach``: sessions opened inside this
        one later link to a chain that already names it.
        """
        self.on_use = listener
        if self not in self._watchers:
            self._watchers = (self, *self._watchers)

    # -- reading --------------------------------------------------------------

    def session(self) -> Any:
        """The session object that owns this ledger, if it is still alive (else None)."""
        ref = self.session_ref
        return ref() if ref is not None else None

    def fleet_scopes(self) -> tuple[FleetLevel, ...]:
        """The fleet scopes this chain counts against (all levels)."""
        return self._fleet_chain

    def enforced(self) -> bool:
        """True when some level of the chain (or a fleet scope) enforces a budget."""
        return self._enforced

    def has_budget(self) -> bool:
        """True when some level of the chain has a budget, enforced or not (or a fleet one)."""
        return self._budgeted

    def set_iterations(self, value: int) -> None:
        """Overwrite this session's call count (the contract's ``_iteration_count``)."""
        with self._lock:
            delta = value - self.iterations
            self.iterations = value
            for level in self._chain:
                level.calls += delta

    def learned_cost(self, model: str) -> float | None:
        """The most expensive finished call of ``model`` in this chain, if one finished."""
        for level in self._chain:
            learned = level.learned.get(model)
            if learned is not None:
                return learned
        return None

    def expected_cost(self, model: str, upfront: float | None = None) -> float:
        """What a call of ``model`` is expected to cost (see the module docstring)."""
        if upfront is not None:
            return upfront
        for level in self._chain:
            learned = level.learned.get(model) if model else _costliest(level.learned)
            if learned is not None:
                return learned
        for level in self._chain:
            if level.call_estimate_usd is not None:
                return level.call_estimate_usd
        return 0.0

    # -- admission ------------------------------------------------------------

    def admit(
        self,
        model: str,
        expected: float,
        ours: bool = True,
        priced: bool = True,
        force: bool = False,
        defer_fleet: bool = False,
        probe: bool = False,
        lead: bool = False,
        *,
        _swept: bool = False,
    ) -> Claim:
        """Count and reserve one call at every level, or raise the refusal.

        ``priced=False`` says the model has no known price: under an enforced
        budget that refuses the call (``UnpricedModelError``) unless the
        session accepts unpriced models. ``defer_fleet`` stops after the local
        levels: the caller awaits ``areserve_fleet`` (coroutines do, so no
        fleet round trip runs on the event loop). ``probe`` lets a call whose
        cost nothing tells (``expected`` 0) run as its model's probe, or raises
        ``_ProbeWait`` (nothing counted) while another call of that model probes.
        ``lead``: a first call of its model, reserved at its request's estimate
        by a caller that can wait (the client guard's, on a thread or awaited):
        it runs as that model's lead (``_lead_locked``), or, refused only for
        what calls in flight reserve while its model's lead is in flight (no
        level refusing it outright), raises ``_ProbeWait`` instead: it waits for
        what the lead teaches.
        ``_swept``: the garbage collector already ran for this admission.
        """
        if DEFERRED:
            estimate_deferred()  # calls in flight first hold what their requests may cost
        refusal = self.pending_refusal
        if refusal is not None and not force:
            self._refuse(sc.LIMIT_LOOP, refusal, self)
        if model and not priced and not force and self.enforced():
            self._refuse_unpriced(model, no_usage=False)
        if self.uncosted and model in self.uncosted and not force:
            self._refuse_unpriced(model, no_usage=True)
        expected_nano = booking_nano(expected, "expected cost of {!r}", model)
        wait: Probe | None = None
        started: Probe | None = None
        # acquire / release rather than `with`: on every call, and `with` costs twice as
        # much (it calls __exit__ with three arguments).
        self._lock.acquire()
        try:
            # The first level that refuses one more call, as (kind, error, level).
            refused: tuple[str, Exception, Ledger] | None = None
            if not force:
                for level in self._chain:
                    cap = level.max_iterations
                    if cap is not None and level.calls >= cap:
                        stop: Exception = MaxIterationsExceededError(
                            DEFAULT_MAX_ITERATIONS if level._default_cap else cap,
                            site=self.site(level, ran=False),
                        )
                        refused = sc.LIMIT_ITERATIONS, stop, level
                        break
                    budget = level._budget_nano
                    if level.enforce_budget and budget >= 0:
                        # Spent and others' reservations have reached the budget (this
                        # call's own estimate does not count: the call that crosses runs).
                        committed = level.spent_nano + level.reserved_nano
                        if committed >= budget:
                            stop = self._budget_refusal(level, level.reserved_nano)
                            refused = sc.LIMIT_BUDGET, stop, level
                            if lead and level.spent_nano < budget and self._waits_for(model):
                                # Refused only for what calls in flight reserve: its
                                # model's lead or probe, read as the decision was made
                                # (it may settle before the refusal below is raised).
                                wait = self._lead_of(model)
                            break
            if refused is None:
                if probe and not expected_nano and (model or lead) and self._local_enforced:
                    # (A client instrumentation's span that names no model at its start,
                    # OpenLLMetry's on a thread, probes as "" until the guard reads its
                    # request (``admit_named``): admitted reserving nothing before the guard
                    # read any request, a burst of 20 ran 18 calls under five calls' budget.)
                    wait, started = self._probe_locked(model)
                elif lead and model and (self._local_enforced or (defer_fleet and self._enforced)):
                    # (Also under a fleet scope's budget alone, for a call that asks the
                    # fleet later, on an event loop: refused there only for what its
                    # model's lead reserves, it waits for it, ``areserve_fleet``.)
                    started = self._lead_locked(model)
                if wait is None:
                    for level in self._chain:
                        level.calls += 1
                        level.reserved_nano += expected_nano
                    self.iterations += 1
                    claim = Claim(self, model, expected, self.iterations, ours, expected_nano)
                    claim.probe = started
        finally:
            self._lock.release()
        if refused is not None:
            kind, stop, level = refused
            if (
                wait is not None
                and not wait.lost(self.probe_wait_s)
                and wait.owner != probe_strand()
            ):
                # Refused only for what calls in flight reserve while its model's first
                # calls run. A first burst each reserves its request's bound (4,096
                # output tokens unless the request says less): ten tiny calls refused
                # eight under 100 times their cost. It waits for the lead's cost instead
                # (at once if it settled meanwhile). Never for a lead of this very
                # thread or task: a stream it has not read yet would wait for itself.
                raise _ProbeWait(wait, self.probe_wait_s)
            if kind == sc.LIMIT_BUDGET and STREAMING and isinstance(stop, BudgetExceededError):
                streams, streams_nano, which = _open_streams(level)
                if streams and not _swept and _SWEPT.get(level) != which:
                    # A stream left after its first chunks and dropped sits in a
                    # reference cycle (its iterator's frame holds it): only the
                    # collector books it, and until then its reservation refuses this
                    # call. Collected now (only on this refusal, and not again for the
                    # same open streams: those the caller still holds stay open), those
                    # nobody holds are booked at what was seen of them, and the budget
                    # decides again on what they cost.
                    gc.collect()
                    _SWEPT[level] = _open_streams(level)[2]
                    return self.admit(
                        model, expected, ours, priced, force, defer_fleet, probe, lead, _swept=True
                    )
                if streams:
                    stop.left_open(streams, to_usd(streams_nano))
            self._refuse(kind, stop, level)
        if wait is not None:
            raise _ProbeWait(wait, self.probe_wait_s)
        if self._fleet_chain:
            if defer_fleet:
                claim.fleet_deferred = True
                claim.forced = force
            else:
                claim.holds = self._reserve_fleet(claim, force)
        if self._watchers:
            self._used()
        return claim

    def _probe_locked(self, model: str) -> tuple[Probe | None, Probe | None]:
        """(a probe to wait for, or the probe this call starts); both None: just admit."""
        root = self._chain[-1]
        running = root.probes.get(model)
        if running is not None and not running.ended and not running.lost(self.probe_wait_s):
            # Never for a probe of this very thread or task (a stream it has not read
            # yet): it would wait for itself. Admitted at once, as no probe.
            return (running, None) if running.owner != probe_strand() else (None, None)
        # (No model named yet: any cost learned in the chain tells, as expected_cost's.)
        if model:
            known = self.learned_cost(model) is not None
        else:
            known = any(level.learned for level in self._chain)
        if known or any(level.call_estimate_usd is not None for level in self._chain):
            return None, None
        started = Probe(model)
        if not self._fleet_chain:
            started.fleet_asked()  # (as a lead's, ``_lead_locked``)
        root.probes[model] = started
        return None, started

    def _waits_for(self, model: str) -> bool:
        """Whether a call refused for what calls in flight reserve may wait for its model's
        lead: never when a level refuses it outright, its cap reached or its budget
        spent (it could never run), nor without a lead in flight (``_lead_of``)."""
        for level in self._chain:
            cap = level.max_iterations
            if cap is not None and level.calls >= cap:
                return False
            if level.enforce_budget and 0 <= level._budget_nano <= level.spent_nano:
                return False
        return self._lead_of(model) is not None

    def _lead_of(self, model: str) -> Probe | None:
        """The first call in flight a call refused for what it reserves waits for: its
        model's lead or probe. A span that names no model at its start (OpenLLMetry's
        names it at its end) waits for any lead in flight: its request, read by the
        client guard before it is sent, says which model's (``door._begin_waiting``)."""
        probes = self._chain[-1].probes
        if model:
            return probes.get(model)
        return next((p for p in probes.values() if self._waitable(p)), None)

    def _waitable(self, probe: Probe) -> bool:
        """Whether a call may wait for ``probe``: in flight, not abandoned, and not the
        call of this very thread or task (a stream it has not read yet)."""
        return (
            not probe.ended and not probe.lost(self.probe_wait_s) and probe.owner != probe_strand()
        )

    def lead_in_flight(self, model: str) -> Probe | None:
        """The lead or probe of ``model`` in flight, if one is."""
        with self._lock:
            probe = self._chain[-1].probes.get(model)
        return probe if probe is not None and self._waitable(probe) else None

    def admit_named(
        self, claim: Claim, model: str, estimate: float, priced: bool, may_wait: bool
    ) -> Probe | None:
        """Decide again, as a call of ``model``, a call admitted before its model was known.

        A span that names no model at its start (OpenLLMetry's names it at its end)
        was admitted at what any call in the chain cost, or as the probe of such
        calls (""); the client guard reads its request before it is sent, and asks
        here. It is decided as a call naming the model at its start would have been:
        refused if the model has no price (``priced``) under an enforced budget; with
        nothing learned of the model and its first call in flight, it waits for that
        call (``may_wait``; returned here, the caller asks again once it settled);
        else it reserves what the model cost, or ``estimate`` (its request's) when
        it leads the model's first calls. A raise the budget refuses (spent and the
        other calls' reservations reach it) waits the same way for the model's first
        call in flight, or raises the refusal. Refused, the call is released and
        un-counted: nothing was sent. Admitted at what another model cost, a burst of
        first calls of a dearer one all ran (20 sent under five calls' budget).
        """
        if not priced and claim.open and self.enforced() and not self.accepts_unpriced():
            self._unadmit(claim)
            self._refuse_unpriced(model, no_usage=False)
        if DEFERRED:
            estimate_deferred()  # calls in flight first hold what their requests may cost
        unnamed: Probe | None = None
        wait: Probe | None = None
        refused: tuple[Ledger, int] | None = None
        with self._lock:
            if not claim.model:
                claim.model = model
            if claim.probe is not None and not claim.probe.model:
                # It probed as "" (a span on a thread, ``admit``): the calls waiting for
                # it, of any model, go on now, each decided by its own request.
                unnamed, claim.probe = claim.probe, None
                probes = self._chain[-1].probes
                if probes.get("") is unnamed:
                    del probes[""]
            running = self._chain[-1].probes.get(model)
            if running is claim.probe or running is None or not self._waitable(running):
                running = None
            learned = self.learned_cost(model)
            known = learned is not None
            expected = learned if learned is not None else estimate
            expected_nano = booking_nano(expected, "expected cost of {!r}", model)
            if claim.open and not known and may_wait and running is not None:
                wait = running  # as a first call of a named model on a thread waits
            elif claim.open:
                raised = expected_nano - claim.expected_nano
                for level in self._chain if raised > 0 else ():
                    budget = level._budget_nano
                    others = level.spent_nano + level.reserved_nano - claim.expected_nano
                    if level.enforce_budget and 0 <= budget <= others:
                        refused = level, others
                        if may_wait and level.spent_nano < budget:
                            wait = running
                        break
                if refused is None:
                    if raised > 0:
                        for level in self._chain:
                            level.reserved_nano += raised
                        claim.expected_nano = expected_nano
                        claim.expected = expected
                    if not known and claim.probe is None:
                        claim.probe = self._lead_locked(model)
        if unnamed is not None:
            unnamed.end()
        lead = claim.probe
        if lead is not None and not claim.fleet_deferred:
            lead.fleet_asked()  # (asked at its start: the calls of its burst need not wait)
        if wait is not None:
            return wait
        if refused is not None:
            level, others = refused
            stop = self._budget_refusal(level, others - level.spent_nano)
            self._unadmit(claim)
            self._refuse(sc.LIMIT_BUDGET, stop, level)
        return None

    def _budget_refusal(self, level: Ledger, reserved_nano: int) -> BudgetExceededError:
        """The refusal of a call by ``level``'s budget, which what it spent and what the
        other calls in flight reserve (``reserved_nano``) reach."""
        return BudgetExceededError(
            level.budget_usd or 0.0,
            to_usd(level.spent_nano + reserved_nano),
            site=self.site(level, ran=False),
            reserved_usd=to_usd(reserved_nano),
        )

    def _unadmit(self, claim: Claim) -> None:
        """A call refused before it was sent, once admitted: released and un-counted,
        and its span's end books nothing (``booking.book``)."""
        claim.ended_early = "refused"
        self.release(claim, uncount=True)

    def _lead_locked(self, model: str) -> Probe | None:
        """The probe a first call of ``model`` admitted at its request's estimate starts.

        Unlike a probe, a lead does not hold the other calls of its model: they go
        on at their own requests' estimates while the budget holds them all. Only a
        call the budget refuses for those reservations waits for it (``admit``).
        """
        root = self._chain[-1]
        running = root.probes.get(model)
        if running is not None and not running.ended and not running.lost(self.probe_wait_s):
            return None  # one more of the burst: the lead is in flight already
        started = Probe(model)
        if not self._fleet_chain:
            started.fleet_asked()  # no fleet to ask: a fleet call of its model need not wait
        root.probes[model] = started
        return started

    def end_probe(self, claim: Claim) -> None:
        """The probe call settled or failed: the calls waiting for it may go."""
        probe = claim.probe
        if probe is None:
            return
        claim.probe = None
        probes = claim.leaf._chain[-1].probes
        with claim.leaf._lock:
            if probes.get(probe.model) is probe:
                del probes[probe.model]
        probe.end()

    def estimate_missing(
        self, claim: Claim, model: str, provider: str = "", reserved: bool = False
    ) -> PricedCall | None:
        """The price of a call whose usage never arrived, where a budget needs one.

        In order: what the guard saw of it (its request and streamed text),
        else the model's learned cost, else ``call_estimate_usd``, else (with
        ``reserved``, for a call cut off in flight) what the call reserved;
        None when there is no budget in the chain or nothing to go on (booked
        at $0).

        A request that was sent and ended unanswered (cancelled or timed out on
        the wire, ``unanswered.py``), or a call with attempts the SDK retried
        after they timed out, is estimated without a budget too: the provider
        bills those requests whatever the session limits, as it bills the
        timed-out attempts of a call whose last attempt was answered (booked with
        its usage in ``settle``), so the session's cost includes them either way.
        """
        if not model:
            return None
        if not self._budgeted and not (claim.retries or claim.ended_early in _SENT):
            return None
        seen = claim.estimated
        if seen is not None:
            priced = price_call(model, seen, provider)
            if priced.known:
                return priced._replace(source=ESTIMATED)
        usd = self.learned_cost(model)
        if usd is None:
            usd = next(
                (lv.call_estimate_usd for lv in self._chain if lv.call_estimate_usd is not None),
                None,
            )
        if not usd and reserved:
            usd = claim.expected
        if not usd:
            return None
        # The current price table's version, so the tracker keeps the cost in its total.
        return price_call(model, _ZERO, provider)._replace(cost=usd, known=True, source=ESTIMATED)

    def top_up(self, claim: Claim, expected: float) -> None:
        """Raise an open call's reservation to ``expected`` (the guard read its request).

        For a call admitted with nothing known: later admissions then see it.
        Never refuses (the call is already running).
        """
        self.reserve_at(claim, expected, lower=False)

    def reserve_at(self, claim: Claim, expected: float, *, lower: bool = True) -> None:
        """Set an open call's reservation to ``expected`` at every level; never refuses.

        ``lower`` lets it fall: only for a bound of what the call may cost (its
        request's ``request_estimate_usd`` replacing the default-length placeholder
        it was admitted at), never for a guess. The fleet holds stay as they
        were reserved (a fleet scope holds at least what it must, and settles
        to the actual cost), as with a raise.
        """
        expected_nano = booking_nano(expected, "expected cost of {!r}", claim.model)
        leaf = claim.leaf
        with leaf._lock:
            delta = expected_nano - claim.expected_nano
            if not claim.open or not delta or (delta < 0 and not lower):
                return
            for level in leaf._chain:
                level.reserved_nano += delta
            claim.expected_nano = expected_nano
            claim.expected = expected

    def _used(self) -> None:
        """Tell the levels that watch their usage (wrap-up) that it changed. Never raises."""
        for level in self._watchers:
            listener = level.on_use
            if listener is not None:
                try:
                    listener(level)
                except Exception:
                    _orchestrator_log.exception("usage listener raised; suppressing")

    async def areserve_fleet(self, claim: Claim) -> None:
        """Ask the fleet scopes for a call admitted with ``defer_fleet`` (awaitable).

        A refusal releases what the other levels took and raises, as ``admit`` does.
        """
        if not claim.fleet_deferred:
            return
        claim.fleet_deferred = False
        own = claim.probe
        try:
            budgeted = any(fleet.budget_usd is not None for fleet in self._fleet_chain)
            if own is None and claim.model and budgeted:
                lead = self.lead_in_flight(claim.model)
                if lead is not None and not lead.asked:
                    # Its model's first call asks first: asked after one of its burst, that
                    # call was refused for the burst's reservation, and the burst for its.
                    try:
                        await lead.await_asked(self.probe_wait_s)
                    except BaseException as stop:  # cancelled while it waited: never sent
                        self._fleet_refused(claim, [], stop, self._fleet_chain[0])
                        raise
            await self._areserve_fleet(claim)
        finally:
            if own is not None:
                own.fleet_asked()

    async def _areserve_fleet(self, claim: Claim) -> None:
        holds: list[tuple[FleetLevel, object]] = []
        for fleet in self._fleet_chain:
            waited = False
            while True:
                try:
                    areserve = getattr(fleet, "areserve", None)
                    hold = (
                        await areserve(claim.model, claim.expected)
                        if areserve is not None
                        else fleet.reserve(claim.model, claim.expected)  # no async side
                    )
                    holds.append((fleet, hold))
                except BaseException as exc:
                    if claim.forced and isinstance(exc, Exception):
                        break
                    lead = None if waited else self._fleet_lead(claim, exc)
                    if lead is None:
                        self._fleet_refused(claim, holds, exc, fleet)
                        raise
                    # Refused only for what calls in flight reserve while its model's first
                    # call runs (each of a first burst holds its request's bound): it waits
                    # for that call, then asks again at what the call cost, as a local
                    # level's refusal does. 20 first calls under a fleet budget of five: 1
                    # ran, now 5.
                    waited = True
                    try:
                        await lead.await_end(self.probe_wait_s)
                    except BaseException as stop:  # cancelled while it waited: never sent
                        self._fleet_refused(claim, holds, stop, fleet)
                        raise
                    learned = self.learned_cost(claim.model)
                    if learned is not None:
                        self.reserve_at(claim, learned)
                    continue
                break
        claim.holds = tuple(holds)

    def _fleet_lead(self, claim: Claim, refusal: BaseException) -> Probe | None:
        """The first call of ``claim``'s model in flight that a fleet scope's refusal of
        ``claim`` may wait for: refused by its budget only for what calls in flight
        reserve (not spent), while nothing is learned of the model, by another call."""
        if (
            not isinstance(refusal, BudgetExceededError)
            or refusal.reserved_usd <= 0
            or refusal.current_cost_usd - refusal.reserved_usd >= refusal.budget_usd
            or claim.probe is not None
            or not claim.model
            or not claim.open
        ):
            return None
        return self.lead_in_flight(claim.model)

    def reserve_deferred(self, claim: Claim) -> None:
        """``areserve_fleet`` for a caller that cannot await (one bounded round trip per scope).

        The client guard's last resort for a call admitted with ``defer_fleet``
        that reached a request without passing an awaiting door: the fleet is
        still asked before anything is sent.
        """
        if not claim.fleet_deferred:
            return
        claim.fleet_deferred = False
        claim.holds = self._reserve_fleet(claim, claim.forced)

    def _fleet_unasked(self, claim: Claim, cost: float | None) -> None:
        """A call admitted with ``defer_fleet`` ended without any door asking the fleet.

        It ran, so the fleet must count it: it is reserved and settled (or
        released as a call that ran) on a short-lived thread, never on the
        caller's (an event loop). Too late to refuse it; logged once.
        """
        claim.fleet_deferred = False
        fleets = self._fleet_chain
        if not fleets:
            return
        _warn_unasked_once(claim.model)

        def book() -> None:
            for fleet in fleets:
                try:
                    hold = fleet.reserve(claim.model, 0.0)
                    if cost is None:
                        fleet.release(hold, ran=True)
                    else:
                        fleet.settle(hold, cost)
                except Exception:
                    _orchestrator_log.debug("late fleet booking refused or failed", exc_info=True)

        _run_late(book)

    def site(self, level: Ledger, *, ran: bool) -> LimitSite:
        """Where ``level``'s limit stopped a call made in this ledger's session."""
        if level is self:
            return LimitSite("own", ran, self.role, self.session_id)
        return LimitSite("parent", ran, level.role, level.session_id, self.role, self.session_id)

    def _reserve_fleet(self, claim: Claim, force: bool) -> tuple[tuple[FleetLevel, object], ...]:
        holds: list[tuple[FleetLevel, object]] = []
        for fleet in self._fleet_chain:
            try:
                holds.append((fleet, fleet.reserve(claim.model, claim.expected)))
            except BaseException as exc:
                if force and isinstance(exc, Exception):
                    continue  # it already happened: book it where the fleet lets us
                self._fleet_refused(claim, holds, exc, fleet)
                raise
        if claim.probe is not None:
            claim.probe.fleet_asked()  # (the calls of its burst ask after it: areserve_fleet)
        return tuple(holds)

    def _fleet_refused(
        self,
        claim: Claim,
        holds: list[tuple[FleetLevel, object]],
        exc: BaseException,
        fleet: FleetLevel,
    ) -> None:
        for taken, hold in holds:
            taken.release(hold, ran=False)  # it never ran: not counted anywhere
        # Un-counted, and booked by nothing when its span ends: it was never sent (a span
        # admitted before the fleet was asked ended with the refusal, and was booked at
        # an estimate, as a call that returned no usage).
        self._unadmit(claim)
        if isinstance(exc, MaxIterationsExceededError | BudgetExceededError):
            site, scope = self._fleet_site(fleet)
            exc.at(site)
            kind = (
                sc.LIMIT_FLEET_CALLS
                if isinstance(exc, MaxIterationsExceededError)
                else sc.LIMIT_FLEET_BUDGET
            )
            self._hit(kind, exc, scope)

    def _fleet_site(self, fleet: FleetLevel) -> tuple[LimitSite, str]:
        """Where a fleet scope's or a shared session's limit refused a call made here."""
        scope = str(getattr(fleet, "scope", ""))
        shared = getattr(fleet, "shared_role", None)
        role, session_id = self.role, self.session_id
        if shared is None:
            window_s = getattr(fleet, "window_s", None)
            return LimitSite(
                "fleet", False, "", "", role, session_id, scope, window_s=window_s
            ), scope
        if fleet in self.fleet and self.session_id:
            # The shared session's own call, in its own process. (A remote session's
            # root ledger in a child process holds the level too, but has no session.)
            return LimitSite("shared", False, role, session_id, scope=scope), scope
        return LimitSite("shared", False, str(shared), "", role, session_id, scope), scope

    def accepts_unpriced(self) -> bool:
        """Whether a call here may be booked at $0: every enforced budget over it accepts that.

        A session's ``allow_unpriced`` speaks for its own budget: a child's flag
        does not open its parent's budget, and a parent's flag does not need
        repeating in each child. A fleet scope's or a remote shared session's
        budget has no flag of its own: the session making the call speaks for it.
        """
        for level in self._chain:
            if level.enforce_budget and level.budget_usd is not None and not level.allow_unpriced:
                return False
        if any(fleet.budget_usd is not None for fleet in self._fleet_chain):
            return self.allow_unpriced
        return True

    def _refuse_unpriced(self, model: str, *, no_usage: bool) -> None:
        """Raise ``UnpricedModelError`` naming the enforced budget that cannot hold, if one.

        A session's own or a parent's whose ``allow_unpriced`` is off, else the fleet
        scope's or the shared session's (a process's calls outside any session have
        no local budget), unless the calling session accepts unpriced calls.
        """
        if self.accepts_unpriced():
            return
        zero = next((lv for lv in self._chain if lv.enforce_budget and lv._budget_nano == 0), None)
        if zero is not None:
            # A budget of $0 refuses every call, priced or not: "price it, or
            # allow_unpriced" would be advice that changes nothing. Refused as such.
            self._refuse(sc.LIMIT_BUDGET, self._budget_refusal(zero, zero.reserved_nano), zero)
        owner = next(
            (
                lv
                for lv in self._chain
                if lv.enforce_budget and lv.budget_usd is not None and not lv.allow_unpriced
            ),
            None,
        )
        if owner is not None:
            error = UnpricedModelError(
                model, owner.budget_usd or 0.0, site=self.site(owner, ran=False), no_usage=no_usage
            )
            self._refuse(sc.LIMIT_UNPRICED, error, owner)
        fleet = next((f for f in self._fleet_chain if f.budget_usd is not None), None)
        if fleet is None:  # (enforced() said some level enforces: not reached)
            error = UnpricedModelError(model, 0.0, no_usage=no_usage)
            self._refuse(sc.LIMIT_UNPRICED, error, self)
            return
        site, scope = self._fleet_site(fleet)
        error = UnpricedModelError(model, fleet.budget_usd or 0.0, site=site, no_usage=no_usage)
        error.scope = scope
        self._hit(sc.LIMIT_UNPRICED, error, scope)
        raise error

    def _refuse(self, kind: str, error: Exception, owner: Ledger) -> None:
        owner._hit(kind, error)
        raise error

    def _hit(self, kind: str, error: Exception, scope: str = "") -> None:
        """Report a limit hit on this level, once per limit: later refusals are the same stop.

        A level with no session (the process root of ``configure(fleet=...)``)
        reports every refusal: each is a call of its own that never ran.
        """
        key = (kind, scope)
        if self.role:
            if key in self._hits:
                return
            self._hits.add(key)
        self._notify(kind, error)

    # -- booking --------------------------------------------------------------

    def settle(
        self,
        claim: Claim,
        model: str,
        usage: UsageSnapshot | None,
        price: PricedTurn | None = None,
        provider: str = "",
        priced_by_core: bool = True,
        unpriced: bool | None = False,
    ) -> float:
        """Book a finished call: reservation out, actual cost in. Never raises.

        Works on a claim that was already released (usage that arrived after
        its turn ended, or after its session closed): it then only books.
        ``usage=None`` means the response carried no usage: booked as zero,
        counted, and warned about under an enforced budget. ``unpriced=None``:
        count the call as unpriced when ``model`` has no price at ``provider``.
        """
        leaf = claim.leaf
        if DEFERRED:
            DEFERRED.pop(claim, None)
        retried = claim.retried
        if retried is not None:
            # Attempts sent before the one that ended the call: booked with it, priced again.
            claim.retried = None
            price = None
            if usage is not None:
                usage = plus_usage(usage, retried)
            else:
                claim.estimated = (
                    retried if claim.estimated is None else plus_usage(claim.estimated, retried)
                )
        missing = usage is None
        snapshot = _ZERO if usage is None else usage
        if missing and price is None:
            price = leaf.estimate_missing(claim, model, provider)
        cost = 0.0
        cost_nano = 0
        if model:
            if price is None:
                # Priced once here: the price also says whether the model has one.
                price = price_call(model, snapshot, provider)
                if unpriced is None:
                    unpriced = not price.known
            elif unpriced is None:
                unpriced = not has_pricing(model, provider)
            cost = leaf.tracker.record_priced(model, snapshot, price)
            cost_nano = booking_nano(cost, "cost of a {!r} call", model)
            cost = to_usd(cost_nano)
        crossings: list[Ledger] | None = None
        over: Ledger | FleetOver | None = None
        # acquire / release rather than `with`: on every call, and `with` costs twice as
        # much (it calls __exit__ with three arguments).
        leaf._lock.acquire()
        try:
            held = claim.expected_nano if claim.open else 0
            for level in leaf._chain:
                level.reserved_nano -= held
                spent = level.spent_nano = level.spent_nano + cost_nano
                budget = level._budget_nano
                if 0 <= budget < spent:
                    if not level.crossed:
                        level.crossed = True
                        crossings = [level] if crossings is None else [*crossings, level]
                    if over is None and level.enforce_budget:
                        over = level
            claim.open = False
            claim.over = over
            if over is not None:
                claim.over_later = crossings is None or over not in crossings
            if usage is not None and (
                usage.input_tokens
                or usage.output_tokens
                or usage.cache_read_tokens
                or usage.cache_write_tokens
            ):
                claim.booked_usage = True
            if model and cost > leaf.learned.get(model, -1.0):
                # Learned tree-wide: a sibling session's calls wait on the same probe.
                # Every level above holds at least what the leaf learned (each booking
                # raises the whole chain), so a cost the leaf already reached changes
                # nothing anywhere: the usual call stops at the test above.
                _learn(leaf, model, cost)
            asked = claim.model
            if asked and asked != model and cost > leaf.learned.get(asked, -1.0):
                # Booked under the model its response named (a router's, a deployment's):
                # the next call asks for the same name, and is reserved by it.
                _learn(leaf, asked, cost)
            if missing:
                leaf.calls_without_usage += 1
                if cost and isinstance(price, PricedCall) and price.source == ESTIMATED:
                    leaf.calls_estimated += 1
                    leaf.estimated_usd += cost
            if unpriced and model:
                leaf.unpriced_calls += 1
                named = leaf.unpriced_models
                if model in named or len(named) < _LEARNED_LIMIT:
                    named[model] = named.get(model, 0) + 1
        finally:
            leaf._lock.release()
        if RAISED_FROM:
            # After the call closed under the lock: ``door._bound`` records one only while
            # it is open, under the same lock, so nothing is left here once it ended.
            RAISED_FROM.pop(claim, None)
        if unpriced and model and not leaf._budgeted:
            # No budget asked for prices: said once, at the user's line (under a soft
            # budget admission said it; an enforced one refuses the call). Never raised
            # from here (warnings turned into errors): the booking goes on below.
            try:
                leaf.warn_unpriced(model)
            except Exception:
                _orchestrator_log.warning(
                    "no pricing registered for model %r; its calls cost $0", model[:256]
                )
        if claim.holds:
            holds, claim.holds = claim.holds, ()
            for fleet, hold in holds:
                fleet.settle(hold, cost)
                if over is None and cost and fleet.budget_usd is not None:
                    self._fleet_crossed(claim, fleet, hold, cost_nano)
        elif claim.fleet_deferred:
            self._fleet_unasked(claim, cost)
        if claim.probe is not None:
            # After the fleet settled (or queued) it: the calls woken now ask the fleet
            # next, and must find what this call cost there, not what it reserved.
            self.end_probe(claim)
        if model:
            if leaf.usage_sink is not None:
                leaf._to_sink(model, snapshot, cost)
            if not priced_by_core and cost and leaf.on_unpriced_cost is not None:
                leaf.on_unpriced_cost(model, snapshot, cost)
        if missing and model and leaf._enforced and (claim.ended_early or retried is None):
            # (A call whose last attempt failed, booked at its earlier attempts that
            # timed out, is said below, as retried: it did not return without usage.)
            accepted = leaf.accepts_unpriced()
            if not cost and not accepted and len(leaf.uncosted) < _LEARNED_LIMIT:
                # No call is free under an enforced budget: the next one is refused.
                leaf.uncosted.add(model)
            if cost:
                booked = (
                    f"at an estimate (${usd_text(cost)}, counted as estimated on the spans, the "
                    "session span and the report)"
                )
            elif accepted:
                booked = "at $0 (nothing to estimate it from; allow_unpriced=True accepts that)"
            else:
                booked = (
                    "at $0 (nothing to estimate it from); further calls of this model in "
                    "this session are refused (UnpricedModelError) unless call_estimate_usd= "
                    "or allow_unpriced=True says what they cost"
                )
            if claim.ended_early == "cancelled":
                said = (
                    f"a call of model {model!r} was cancelled by its caller after its request "
                    f"was sent (a timeout or cancellation around an async call), under an "
                    f"enforced budget, so it was booked {booked}: the provider has the request "
                    f"and bills it"
                )
            elif claim.ended_early == "stopped":
                said = ""  # said for all of them at once (``membership.book_in_flight``)
            elif claim.ended_early == "background":
                said = (
                    f"a background response of model {model!r} was answered before it ran, "
                    f"without usage (its usage comes with the finished run), under an "
                    f"enforced budget, so it was booked {booked}: its request's upper bound "
                    f"(max_output_tokens sets it)"
                )
            elif claim.ended_early == "timed out":
                said = (
                    f"a call of model {model!r} timed out waiting for its response (the "
                    f"client's timeout=) after its request was sent, under an enforced budget, "
                    f"so it was booked {booked}: the provider has the request and bills it"
                )
            elif claim.ended_early == "usage=":
                said = (
                    f"the usage callback of a call of model {model!r} (usage= of "
                    "@agent_turn, estimate_usage= of run_turn) gave no token usage (the "
                    f"error raised with the call says why), so the call was booked {booked}; "
                    "make it return the call's usage so the budget holds exactly"
                )
            elif claim.ended_early in _UNREAD:
                said = (
                    f"the body of a response of model {model!r} (with_streaming_response) "
                    f"was closed {_UNREAD[claim.ended_early]}, so its usage, which comes with "
                    f"it, was never seen, under an enforced budget; it was booked {booked}: its "
                    "request's upper bound (max_tokens sets it); read the body to its end "
                    "(parse(), read(), or iterate it) so the budget holds exactly"
                )
            elif claim.ended_early:
                said = (
                    f"a stream of model {model!r} ended before its usage arrived (closed "
                    f"early, or failed; the usage comes last) under an enforced budget, so it "
                    f"was booked {booked}; read streams to their end so the budget holds exactly"
                )
            else:
                said = (
                    f"a call of model {model!r} returned no token usage under an enforced "
                    f"budget, so it was booked {booked}; pass usage= (or enable usage "
                    'reporting, e.g. stream_options={"include_usage": True}) so the budget '
                    "holds exactly"
                )
            if said:
                leaf._warn_once("usage", model, said, claim.site)
        if retried is not None and model and leaf._enforced:
            leaf._warn_once(
                "retried",
                model,
                _retried_warning(claim.retries, model),
                claim.site,
            )
        if crossings is not None:
            for level in crossings:
                error = BudgetExceededError(
                    level.budget_usd or 0.0, level.spent, site=leaf.site(level, ran=True)
                )
                level._hit(sc.LIMIT_BUDGET, error)
        if cost and leaf._watchers:
            leaf._used()
        return cost

    def release(self, claim: Claim, *, uncount: bool = False, keep_fleet: bool = False) -> None:
        """Drop a call's reservation without booking; ``uncount`` also un-counts it.

        ``keep_fleet`` leaves the fleet holds in place for a call that may still
        report usage (its session closed under it, or it timed out but runs on):
        a late ``settle`` then books it fleet-wide exactly once, and a call that
        never reports frees its fleet reservation when the lease ends.
        """
        if claim.retried is not None and claim.open and not uncount:
            # Its last attempt failed, but earlier ones timed out after they were sent
            # (``unanswered.retrying``): those are billed, so the call is booked at them.
            self.settle(claim, claim.model, None)
            return
        if DEFERRED:
            DEFERRED.pop(claim, None)
        leaf = claim.leaf
        with leaf._lock:
            if claim.open:
                claim.open = False
                for level in leaf._chain:
                    level.reserved_nano -= claim.expected_nano
                    if uncount:
                        level.calls -= 1
                if uncount:
                    leaf.iterations -= 1
        if RAISED_FROM:
            RAISED_FROM.pop(claim, None)  # (after the close: see ``settle``)
        if not keep_fleet:
            if claim.fleet_deferred and not uncount:
                self._fleet_unasked(claim, None)
            holds, claim.holds = claim.holds, ()
            for fleet, hold in holds:
                # A call that ran (and failed) stays counted fleet-wide; a refused one not.
                fleet.release(hold, ran=not uncount)
        if claim.probe is not None:
            # Failed: the next call of the model probes, once the fleet let go of this one.
            self.end_probe(claim)

    def over_budget(self) -> BudgetExceededError | None:
        """The error to raise after a call when an enforced level is over its budget."""
        if not self._enforced:
            return None
        for level in self._chain:
            if level.enforce_budget and 0 <= level._budget_nano < level.spent_nano:
                return self.over_error(level)
        return None

    def over_error(
        self, level: Ledger | FleetOver, *, streamed: bool = False, later: bool = False
    ) -> BudgetExceededError:
        """The error for a call of this session that ran and left ``level`` over its budget.

        ``streamed``: the call was a stream read to its end, whose chunks the caller has.
        ``later``: an earlier booking had crossed it already (``Claim.over_later``).
        """
        if isinstance(level, FleetOver):
            site = replace(
                self._fleet_site(level.fleet)[0], ran=True, streamed=streamed, later=later
            )
            error = BudgetExceededError(level.fleet.budget_usd or 0.0, level.spent, site=site)
            error.scope = site.scope
            return error
        site = self.site(level, ran=True)
        if streamed or later:
            site = replace(site, streamed=streamed, later=later)
        return BudgetExceededError(level.budget_usd or 0.0, level.spent, site=site)

    def _fleet_crossed(self, claim: Claim, fleet: FleetLevel, hold: object, cost: int) -> None:
        """Mark ``claim`` over a fleet scope's (or shared session's) budget, if it crossed it.

        Only as far as this process can see (``FleetLimits.crossed``); the crossing
        is reported once, and the turn or the guard raises it after the call.
        ``cost``: this call's, nano-USD: the spend before it tells whether this
        booking crossed the budget or an earlier one had.
        """
        crossed = getattr(fleet, "crossed", None)
        spent = crossed(hold) if crossed is not None else None
        if spent is None:
            return
        over = FleetOver(fleet, spent)
        claim.over = over
        claim.over_later = to_nano(spent) - cost > to_nano(fleet.budget_usd or 0.0)
        error = self.over_error(over)
        self._hit(sc.LIMIT_FLEET_BUDGET, error, error.scope or "")

    # -- listeners ------------------------------------------------------------

    def _to_sink(self, model: str, usage: UsageSnapshot, cost: float) -> None:
        if self.usage_sink is None:
            return
        try:
            self.usage_sink.record(model, usage, cost)
        except Exception:
            # Once per session at ERROR: a sink that is down fails on every turn.
            if self._sink_failed:
                _orchestrator_log.debug(_USAGE_SINK_FAILED, exc_info=True)
            else:
                self._sink_failed = True
                _orchestrator_log.exception(_USAGE_SINK_FAILED)

    def _notify(self, kind: str, error: Exception) -> None:
        listener = self.on_limit
        if listener is None:
            return
        try:
            listener(kind, error)
        except Exception:
            _orchestrator_log.exception("limit listener raised; suppressing")

    def _warn_once(self, what: str, model: str, message: str, site: UserSite | None = None) -> None:
        key = (what, model)
        if key in self._warned or len(self._warned) >= _LEARNED_LIMIT:
            return  # bounded: a process-wide root lives as long as the process
        self._warned.add(key)
        if site is None:
            # The user's line, whichever door (turn, processor, guard) booked it; a call
            # cancelled in a task of its own (asyncio.wait_for) is booked with only the
            # event loop's frames on the stack: the line awaiting that task.
            site = late_site()
        warn_site(site, message, RuntimeWarning)  # the call's line, noted when it was made

    def warn_unpriced(self, model: str) -> None:
        """An unpriced call is booked at $0 with a warning (once per model).

        Under a soft budget, when it is admitted; with no budget, when it is booked.
        """
        if self._budgeted:
            said = "this session's budget cannot count it"
        else:
            said = "its calls are booked at $0 and left out of the session's cost"
        # A name from a response may be any length: the message shows its first 256 characters.
        shown = model if len(model) <= 256 else model[:255] + "…"
        self._warn_once(
            "unpriced",
            model,
            f"model {shown!r} has no known price, so {said}; "
            "price it with register_pricing() or load_pricing_from_file()",
        )

    def detach(self) -> None:
        """Forget the session's listeners (its session closed; late bookings stay silent)."""
        self.on_limit = None
        self.on_unpriced_cost = None
        self.on_use = None


_unasked_warned = False


def _warn_unasked_once(model: str) -> None:
    global _unasked_warned
    if _unasked_warned:
        return
    _unasked_warned = True
    _orchestrator_log.warning(
        "a %r model call started on an event loop was sent by a client the guard does not "
        "wrap, so no door asked the fleet scopes before it ran: it is counted now, and could "
        "not be refused (see docs/fleet.md, async code)",
        model,
    )


def fleet_levels(fleet: object) -> tuple[FleetLevel, ...]:
    """``fleet=`` as a tuple: one fleet scope or a list of them; a bad value raises."""
    if fleet is None:
        return ()
    items = tuple(fleet) if isinstance(fleet, list | tuple) else (fleet,)
    levels: list[FleetLevel] = []
    for item in items:
        if not all(hasattr(item, name) for name in ("reserve", "settle", "release", "scope")):
            raise TypeError(
                f"fleet must be a FleetLimits or a list of them, got {type(item).__name__}: "
                f"{item!r}"
            )
        levels.append(item)
    return tuple(levels)


def describe(ledger: Ledger) -> dict[str, Any]:
    """The numbers a session span rolls up (own and tree-wide), and its fleet scopes."""
    rollup: dict[str, Any] = {
        sc.SESSION_ITERATION: ledger.iterations,
        sc.COST_TREE_USD: ledger.spent,
        sc.SESSION_CALLS_WITHOUT_USAGE: ledger.calls_without_usage,
        sc.SESSION_UNPRICED_CALLS: ledger.unpriced_calls,
    }
    if ledger.calls_estimated:
        rollup[sc.SESSION_CALLS_ESTIMATED] = ledger.calls_estimated
        rollup[sc.SESSION_ESTIMATED_USD] = ledger.estimated_usd
    if ledger._fleet_chain:
        rollup[sc.FLEET_SCOPES] = [str(fleet.scope) for fleet in ledger._fleet_chain]
    return rollup


# -- the session's circuit breaker, at every door ----------------------------------
#
# A session's breaker sees every model call of the session, whichever door admits it,
# through the functions below and nothing else: our turns (``run_turn``, ``arun_turn``,
# ``@agent_turn``: ``calls/turn.py``) hold their permit themselves; the client guard's
# own calls (a bare ``openai`` / ``anthropic`` client, or a tool calling one) and other
# instrumentations' model spans (the limits processor), both admitted by
# ``membership.admit_call``, carry theirs on the call (``Claim.permit``).
#
# One rule for all: the breaker admits a call before it is counted or anything is sent
# (refused: ``CircuitOpenError``, worded by the breaker); the call's outcome is told
# once: an answer is a success, a runtime refusal (``RUNTIME_REFUSALS``) says nothing
# about the provider, a cancellation only frees a half-open probe, and any other error
# (a connection error, a timeout, any error status, 4xx included) is a failure. An error
# raised while an answered response is read (a parse error) is no failure: the provider
# answered. The SDK's retries of one request are that one call; a call made while a
# call holding a permit of the same breaker runs (a request inside our turn, at any
# depth: in a tool, in a sub-session sharing the breaker) is that call's
# (``BREAKERS_HELD``). A session without a breaker pays a few attribute reads a call
# (``Ledger.breaker``, ``Claim.permit``, ``InRequest.claim``: all None).

#: Error types a span may name that are no failure of the provider: a refusal, or
#: the caller stopping (not an ``Exception``: it only frees a half-open probe).
_STOPPED = frozenset({"CancelledError", "KeyboardInterrupt", "SystemExit", "GeneratorExit"})

#: The OTel context key under which the permits of the calls running here travel (a
#: tuple, innermost last): set by our turns, so whatever runs inside one, however deep
#: (a tool, a sub-session, a thread carrying the context), finds its breaker held.
BREAKERS_HELD = otel_context.create_key("techrevati-breakers-held")


def breaker_held(
    held: tuple[BreakerPermit, ...] | None, breaker: CircuitBreaker | AsyncCircuitBreaker
) -> bool:
    """True when a call still running here holds a permit of ``breaker`` (``held``:
    the context's ``BREAKERS_HELD``): a call made now is that call's, not a new one."""
    if not held:
        return False
    return any(permit.breaker is breaker and permit.running for permit in held)


def holding(context: Context, permit: BreakerPermit) -> Context:
    """``context`` with ``permit`` added to the permits held by the calls running in it."""
    held = context.get(BREAKERS_HELD)
    if isinstance(held, tuple):
        # Only the running ones are kept: a context may be carried past a call's end.
        return Context({**context, BREAKERS_HELD: (*(p for p in held if p.running), permit)})
    return Context({**context, BREAKERS_HELD: (permit,)})


def breaker_admit(breaker: CircuitBreaker | AsyncCircuitBreaker) -> BreakerPermit:
    """The breaker's admission of one call, held until ``breaker_ended``.

    Raises ``CircuitOpenError`` (open, or half-open with every probe slot taken).
    """
    permit = BreakerPermit(breaker)
    permit.admit()
    return permit


def breaker_ended(permit: BreakerPermit, error: BaseException | None) -> None:
    """Tell the breaker how its call ended (``error`` None: answered). Once; never raises.

    Example::

        >>> breaker = CircuitBreaker("model-api", failure_threshold=1)
        >>> breaker_ended(breaker_admit(breaker), MaxIterationsExceededError(3))
        >>> breaker.state().value
        'closed'
        >>> breaker_ended(breaker_admit(breaker), ConnectionError("provider down"))
        >>> breaker.state().value
        'open'
    """
    if error is None:
        permit.succeeded()
    elif isinstance(error, RUNTIME_REFUSALS):
        permit.released()  # the provider did not fail: no breaker count
    else:
        permit.failed(error)  # an Exception counts; anything else frees the probe


def breaker_admit_call(ledger: Ledger, model: str) -> BreakerPermit | None:
    """The breaker's admission of a call another door admits in ``ledger``'s session.

    None when the session has no breaker. A refusal is told to the session
    (``Ledger.on_breaker``: the same refused span and gauge as a refused turn)
    and raised, before the call is counted or anything is sent.
    """
    breaker = ledger.breaker
    if breaker is None:
        return None
    try:
        return breaker_admit(breaker)
    except CircuitOpenError as refused:
        listener = ledger.on_breaker
        if listener is not None:
            listener(model, refused)
        raise


def breaker_call_ended(claim: Claim, error: BaseException | None) -> None:
    """Tell the breaker how the call of ``claim`` ended (``breaker_ended``), if it holds a permit.

    Once: whichever door learns it first tells it (the client guard, with the
    request's own error; else the model span's end); later tellings are no-ops.
    """
    permit = _take_permit(claim)
    if permit is not None:
        breaker_ended(permit, error)
        _told_breaker(claim)


def breaker_span_ended(claim: Claim, answered: bool, failed: bool, error_type: object) -> None:
    """``breaker_call_ended`` for a model span, which names its error only by its type.

    ``answered``: the span shows an answer (usage, a response read, a stream that
    began): a success, whatever error the span ended with after it. A span that
    shows none is a failure only when it failed with something else than a
    runtime refusal or the caller stopping (a cancellation); otherwise nothing is
    counted (a half-open probe is freed).
    """
    permit = _take_permit(claim)
    if permit is None:
        return
    if answered:
        permit.succeeded()
    elif not failed:
        permit.released()  # ended unanswered and unfailed (a cancellation some SDKs leave UNSET)
    else:
        # Its ``error.type``: a class name, or qualified ("openai.APIConnectionError").
        name = error_type.rpartition(".")[2] if isinstance(error_type, str) else ""
        if name in _STOPPED or name in _refusal_names():
            permit.released()
        else:
            permit.failed(_SpanFailure(name or "error"))
    _told_breaker(claim)


def breaker_abandoned(claim: Claim) -> None:
    """A call that will never tell its outcome (its session closed under it): its
    half-open probe, if it was one, is freed; nothing is counted."""
    permit = _take_permit(claim)
    if permit is not None:
        permit.released()


def _take_permit(claim: Claim) -> BreakerPermit | None:
    permit = claim.permit
    if permit is not None:
        claim.permit = None
    return permit


def _told_breaker(claim: Claim) -> None:
    """The breaker's state after a call's end, to the session (its gauge)."""
    listener = claim.leaf.on_breaker
    if listener is not None:
        listener(claim.model, None)


class _SpanFailure(Exception):
    """A model span's failure, known only by its error type."""

    def __init__(self, error_type: str) -> None:
        super().__init__(error_type)
        #: How the breaker's refusal names it (not by this class's name).
        self.shown_as = f"{error_type} (the error type on its span)"


def _refusal_names() -> set[str]:
    """The class names of the runtime refusals and their subclasses (asked on failures only)."""
    seen: set[type] = set()
    stack: list[type] = list(RUNTIME_REFUSALS)
    while stack:
        kind = stack.pop()
        if kind not in seen:
            seen.add(kind)
            stack.extend(kind.__subclasses__())
    return {kind.__name__ for kind in seen}


# The old name, kept for code that imported it.
SessionLedger = Ledger
