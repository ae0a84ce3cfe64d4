"""FleetLimits: one budget and one call cap shared by every process, kept in Redis.

A fleet scope is one more level of the ledger chain, above the session ledgers:
``reserve`` admits a call (counts it, reserves its expected cost), ``settle``
replaces the reservation with the actual cost, ``release`` drops it. Each is a
single Lua script, so one round trip, atomic across every process.

Coroutines use ``areserve``: its round trips run on a few I/O threads and its
probe wait is awaited, so the event loop never waits on Redis. ``settle`` and
``release`` called on an event loop, or while earlier finishes still wait, go
to the scope's outbox and a background thread delivers them (``outbox.py``).
"""

from __future__ import annotations

import atexit
import functools
import logging
import secrets
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Literal

from ..telemetry import semconv as sc
from ..telemetry.calls.metrics import fleet_scopes, instruments_for
from ..telemetry.limits.errors import FleetUnavailableError, MaxIterationsExceededError
from ..telemetry.limits.ledger import wait_late_fleet_bookings
from ..telemetry.limits.money import NANO, booking_nano, check_budget, to_nano
from ..telemetry.limits.probe import DEFAULT_PROBE_WAIT_S
from ..usage_tracking import BudgetExceededError, LimitSite
from . import checks
from .beats import BEATS_MISSED, ProbeBeats, beat_period
from .health import StoreHealth
from .hold import FleetHold, FleetUsage
from .offloop import ProbeWaiters, on_event_loop, run_off_loop
from .outbox import Finish, Outbox

if TYPE_CHECKING:
    from .store import RedisStore

_log = logging.getLogger("techrevati.runtime.fleet")

#: Learned per-model costs outlive windows (a new day starts knowing yesterday's prices).
_LEARNED_TTL_MS = 30 * 86_400 * 1000
_PROBE_POLL_MIN_S = 0.005
_PROBE_POLL_MAX_S = 0.25

#: On an event loop, calls skip a store known down for at least this long after a
#: failed round trip (else 2 x timeout_s): the loop is blocked once per interval.
LOOP_RETRY_MIN_S = 1.0

OnStoreError = Literal["refuse", "allow"]
#: What one admission round trip came to: a hold, or the ms left on a probe's lease.
_Step = FleetHold | float
#: Holds in flight tracked per scope before stale ones (lease ended) are dropped.
_IN_FLIGHT_MAX = 4096
#: Every scope of the process, weakly: a process stopped by SIGTERM books their holds.
_SCOPES: weakref.WeakSet[FleetLimits] = weakref.WeakSet()


def settle_in_flight_at_exit() -> int:
    """Book the holds in flight of every scope of this process (``settle_in_flight``).

    Called by the SIGTERM handler, and at normal exit (``atexit``, registered after
    the outbox's flush, so it runs first): the non-daemon threads have been joined
    by then, and a hold still in flight belongs to a call that will never report.
    """
    try:
        return sum(scope.settle_in_flight() for scope in list(_SCOPES))
    except Exception:  # never break an exit
        _log.debug("fleet: booking holds in flight at exit failed", exc_info=True)
        return 0


atexit.register(settle_in_flight_at_exit)


class FleetLimits:
    """A budget and a call cap shared by every process that names the same scope.

    Every process (worker, replica) that builds a ``FleetLimits`` with the same
    Redis and ``scope`` shares one USD budget and one call cap, counted per
    fixed window (aligned to multiples of ``window_s`` since the epoch, UTC, on
    the Redis server's clock). Pass it to ``agent_session(..., fleet=...)``,
    ``Orchestrator(..., fleet=...)`` or ``configure(fleet=[...])``.

    Args:
        url_or_redis_client: a ``redis://`` URL, or a ``redis.Redis`` client (whose
            own timeouts then apply; give it ``socket_timeout``).
        scope: the name every process shares, e.g. ``"tenant-42"``.
        budget_usd: USD per window; a call is refused once spent + reserved by
            calls in flight has reached it (the call that crosses still runs).
        max_calls: calls per window; exact across processes.
        window_s: window length in seconds; None = one window that never ends.
        lease_s: a reservation not settled within this many seconds (its worker
            was killed) frees itself; set it above your longest model call.
        on_store_error: ``"refuse"`` fails closed (``FleetUnavailableError``
            before the call), ``"allow"`` fails open (the call runs on local
            limits only). Either way it is logged once per outage and counted.
            Settlements that cannot be written are kept and delivered by a
            background thread once Redis answers (see docs/fleet.md).
        timeout_s: bound on every Redis call (connect and reply each).
        probe_wait_s: under a budget, a model whose cost the scope has not seen
            yet and the caller cannot estimate runs one call first (its probe);
            others of that model, in every process, wait for it to settle, then
            reserve the cost it taught. The process running the probe renews it
            while its call runs: a probe not renewed for a few periods (its
            process crashed or was killed) is taken over by the next call, which
            probes instead; a probe still running after ``probe_wait_s`` (None:
            30 s, ``DEFAULT_PROBE_WAIT_S``) is slow and is still waited for (at
            most until its lease ends): a call never runs unreserved beside it.
            Both logged at WARNING. The renewal period is ``probe_wait_s`` / 6,
            between 0.5 and 5 s. 0: calls never wait, they run unreserved.
        key_prefix: prefix of every Redis key of the scope.
        max_connections: connections this scope object opens at most (from a
            URL); callers beyond it wait for a free one instead of failing.

    Example::

        tenant = FleetLimits("redis://127.0.0.1:6379/0", scope="tenant-42",
                             budget_usd=50.0, max_calls=10_000, window_s=86_400)
        hold = tenant.reserve("gpt-4o-mini", expected_usd=0.002)
        tenant.settle(hold, 0.0017)
        print(tenant.usage().spent_usd)
    """

    def __init__(
        self,
        url_or_redis_client: Any,
        *,
        scope: str,
        budget_usd: float | None = None,
        max_calls: int | None = None,
        window_s: float | None = None,
        lease_s: float = 600.0,
        on_store_error: OnStoreError = "refuse",
        timeout_s: float = 0.5,
        probe_wait_s: float | None = None,
        key_prefix: str = "techrevati:fleet",
        max_connections: int = 128,
    ) -> None:
        self.scope = checks.scope_name(scope)
        if not isinstance(key_prefix, str) or not key_prefix:
            raise ValueError(
                f"FleetLimits key_prefix must be a non-empty string, got {key_prefix!r}"
            )
        if on_store_error not in ("refuse", "allow"):
            raise ValueError(
                f"FleetLimits on_store_error must be 'refuse' or 'allow', got {on_store_error!r}"
            )
        if (
            isinstance(max_connections, bool)
            or not isinstance(max_connections, int)
            or not 1 <= max_connections <= 10_000
        ):
            raise ValueError(
                f"FleetLimits max_connections must be an int in [1, 10000], got {max_connections!r}"
            )
        self.budget_usd = check_budget("FleetLimits budget_usd", budget_usd)
        self.max_calls = checks.calls_cap(max_calls)
        self.window_s = None if window_s is None else checks.seconds("window_s", window_s)
        self.lease_s = checks.seconds("lease_s", lease_s)
        self.timeout_s = checks.seconds("timeout_s", timeout_s, most=checks.MAX_TIMEOUT_S)
        self.probe_wait_s = checks.number(
            "probe_wait_s", probe_wait_s, positive=False, most=checks.MAX_SECONDS
        )
        #: After how long a call waiting for its model's probe warns that it is slow.
        #: A probe is waited for while its process renews it (a slow probe is no lost
        #: one: runs let through unreserved beside it spent $10 of a $5 budget), and
        #: only that long is a dead one waited for (its whole 600 s lease, before).
        self._probe_wait: float = (
            DEFAULT_PROBE_WAIT_S if self.probe_wait_s is None else self.probe_wait_s
        )
        #: When each model's slow or lost probe was last warned about (once per wait).
        self._probe_warned: dict[str, float] = {}
        self.on_store_error: OnStoreError = on_store_error
        self.key_prefix = key_prefix
        self.max_connections = max_connections
        self._window_ms = 0 if self.window_s is None else max(1, round(self.window_s * 1000))
        self._lease_ms = max(1, round(self.lease_s * 1000))
        self._budget_nano = -1 if self.budget_usd is None else to_nano(self.budget_usd)
        self._max_calls = -1 if self.max_calls is None else self.max_calls
        #: On an event loop, how long after a failed round trip calls skip the store.
        self._loop_retry_s = max(LOOP_RETRY_MIN_S, 2 * self.timeout_s)
        self._url = url_or_redis_client if isinstance(url_or_redis_client, str) else None

        try:
            from . import store as store_module
        except ImportError as exc:
            raise ImportError(
                "FleetLimits needs the Redis client: `pip install redis` "
                "(or `pip install '.[redis]'` from a checkout of techrevati-runtime)"
            ) from exc
        if isinstance(url_or_redis_client, str):
            client = store_module.connect(url_or_redis_client, self.timeout_s, max_connections)
        elif callable(getattr(url_or_redis_client, "register_script", None)):
            client = url_or_redis_client
        else:
            raise TypeError(
                "FleetLimits needs a redis:// URL or a redis.Redis client, "
                f"got {type(url_or_redis_client).__name__}"
            )
        store: RedisStore = store_module.RedisStore(client, f"{key_prefix}:{{{self.scope}}}")
        self._store = store
        self._store_errors = store_module.STORE_ERRORS
        period = beat_period(self._probe_wait)
        #: This process's probes in flight, renewed while their calls run.
        self._beats = ProbeBeats(
            store,
            period_s=period,
            alive_ms=max(1, round(BEATS_MISSED * period * 1000)),
            store_errors=self._store_errors,
        )
        self._health = StoreHealth(self.scope, on_store_error)
        self._refusal_attrs = {
            sc.LIMIT_FLEET_BUDGET: {
                sc.FLEET_SCOPE: self.scope,
                sc.LIMIT_KIND: sc.LIMIT_FLEET_BUDGET,
            },
            sc.LIMIT_FLEET_CALLS: {sc.FLEET_SCOPE: self.scope, sc.LIMIT_KIND: sc.LIMIT_FLEET_CALLS},
        }
        self._lock = threading.Lock()
        self._waiters = ProbeWaiters()
        self._last_window: int | None = None
        #: The scope's calls, spent and reserved (nano-USD) as the last admission
        #: or refusal this process read them: what a shared session's wrap-up and
        #: ``remaining()`` see without a round trip of their own.
        self._seen: tuple[int, int, int] = (0, 0, 0)
        #: The window ``_seen`` was read in; None when a refusal read it in a window
        #: that may be a later one (its reply names none).
        self._seen_window: int | None = None
        #: Until when (``time.monotonic()``) that window lasts, as the admission that
        #: read it computed from the server's clock: a refusal before then read it too.
        self._seen_until = float("-inf")
        #: Holds this process reserved and has not settled or released yet, by id: a
        #: process stopped with calls in flight books them at exit (settle_in_flight).
        self._in_flight: dict[str, FleetHold] = {}
        self._health.window_ms, self._health.lease_s = self._window_ms, self.lease_s
        # The outbox and its callbacks hold the store, the health and the waiters,
        # never this object: pending settlements outlive a scope dropped early.
        health, waiters = self._health, self._waiters

        def deliver(finish: Finish) -> bool:
            done = store.finish(
                window=finish.window,
                hold_id=finish.hold_id,
                actual_nano=finish.actual_nano,
                model=finish.model,
                mode=finish.mode,
                ttl_ms=_LEARNED_TTL_MS,
            )
            if done < 0 and finish.mode != "release":
                health.window_gone(finish.window, finish.mode)
            return done == 1

        def delivered(finish: Finish, booked: bool) -> None:
            health.ok()
            waiters.wake(finish.model)
            if booked:
                _count_cost(finish, health.attrs)

        self._outbox = Outbox(
            self.scope,
            deliver,
            store_errors=self._store_errors,
            on_delivered=delivered,
            on_store_error=health.retry_failed,
        )
        # Budget, window and spend as gauges per scope, for the burn-rate alerts.
        fleet_scopes.track(self)
        _SCOPES.add(self)

    @property
    def _attrs(self) -> dict[str, str]:
        # The metric labels of this scope (a subclass may relabel, e.g. per role).
        return self._health.attrs

    @_attrs.setter
    def _attrs(self, value: dict[str, str]) -> None:
        self._health.attrs = value

    # --- the ledger level -----------------------------------------------------

    def reserve(self, model: str, expected_usd: float = 0.0) -> FleetHold:
        """Admit one model call: count it, reserve its expected cost, or refuse.

        Reserves ``max(expected_usd, the scope's learned cost for model)``.
        Refuses when the calls of this window reached ``max_calls``
        (``MaxIterationsExceededError``) or when spent + reserved by calls in
        flight reached ``budget_usd`` (``BudgetExceededError``), both with
        ``scope`` set. When the store fails: ``FleetUnavailableError`` under
        ``on_store_error="refuse"``, an unbacked hold under ``"allow"``. Each
        Redis call is bounded by ``timeout_s``; the only wait longer than that
        is the documented one for a model's first (probe) call, see
        ``probe_wait_s``, and it never happens on an event loop thread (a call
        there runs unreserved instead; coroutines should use ``areserve``).

        Example::

            hold = tenant.reserve("gpt-4o-mini", 0.002)
        """
        model, expected_nano = self._checked(model, expected_usd)
        hold_id = secrets.token_hex(8)
        if self._closed:
            return self._unbacked(model, hold_id)
        force = False
        on_loop = on_event_loop()
        if on_loop and self._health.known_down(self._loop_retry_s):
            # Every round trip here blocks the loop up to timeout_s: while the store
            # is known down, one call per interval tries it, the others fail fast.
            return self._unreachable(model, hold_id)
        waited_since: float | None = None
        poll = _PROBE_POLL_MIN_S
        while True:
            seen = self._last_window  # before sending: see _step
            try:
                reply = self._admit(model, expected_nano, hold_id, force)
            except self._store_errors as exc:
                return self._admit_failed(exc, model, hold_id)
            step = self._step(reply, model, hold_id, seen)
            if isinstance(step, FleetHold):
                if len(reply) > 9 and int(reply[9]):
                    self._probe_lost(model, int(reply[9]), waited_since)
                return step
            if on_loop or self._probe_wait <= 0:
                # Never wait on a loop (the probe may be a task on it), nor when told not to.
                force = True
                continue
            now = time.monotonic()
            waited_since = now if waited_since is None else waited_since
            if now - waited_since >= self._probe_wait:
                self._probe_slow(model, reply, now - waited_since)
            self._waiters.wait(model, min(poll, step))
            poll = min(poll * 2, _PROBE_POLL_MAX_S)

    async def areserve(self, model: str, expected_usd: float = 0.0) -> FleetHold:
        """``reserve`` for coroutines: never blocks the event loop.

        Round trips run on a small shared pool of I/O threads (bounded, so a
        frozen Redis ties up those threads, not the loop); the wait for a
        model's probe call is awaited and ends as soon as a call of that model
        settles in this process (else at the next poll, at most 0.25 s later).

        Example::

            hold = await tenant.areserve("gpt-4o-mini", 0.002)
        """
        model, expected_nano = self._checked(model, expected_usd)
        hold_id = secrets.token_hex(8)
        if self._closed:
            return self._unbacked(model, hold_id)
        force = False
        waited_since: float | None = None
        poll = _PROBE_POLL_MIN_S
        while True:
            seen = self._last_window
            try:
                reply = await run_off_loop(
                    functools.partial(self._admit, model, expected_nano, hold_id, force)
                )
            except self._store_errors as exc:
                return self._admit_failed(exc, model, hold_id)
            step = self._step(reply, model, hold_id, seen)
            if isinstance(step, FleetHold):
                if len(reply) > 9 and int(reply[9]):
                    self._probe_lost(model, int(reply[9]), waited_since)
                return step
            if self._probe_wait <= 0:
                force = True  # told never to wait
                continue
            now = time.monotonic()
            waited_since = now if waited_since is None else waited_since
            if now - waited_since >= self._probe_wait:
                self._probe_slow(model, reply, now - waited_since)
            await self._waiters.await_(model, min(poll, step))
            poll = min(poll * 2, _PROBE_POLL_MAX_S)

    def settle(self, hold: FleetHold, actual_usd: float) -> None:
        """Replace the hold's reservation with the call's actual cost, exactly once.

        Books into the window the call was admitted in, even after its lease ran
        out (the reservation was freed then; the cost is booked now, once). A
        second settle or release of the same hold does nothing. Never raises on
        a store failure, and never waits on an event loop: the settlement is
        then kept and delivered by a background thread (idempotently, so it
        books at most once) as soon as the store answers.

        Example::

            tenant.settle(hold, 0.0017)
        """
        actual = checks.number("actual_usd", actual_usd, positive=False, optional=False)
        nano = self._claim_settled(hold, actual or 0.0)
        if nano is not None:
            self._finish(hold, "settle", nano)

    def crossed(self, hold: FleetHold) -> float | None:
        """The scope's spend, if the settled ``hold`` is seen to have taken it over its budget.

        Read from what this process knows without a round trip: the scope's spend
        as its last admission read it, plus what it booked since. So the call that
        crosses raises, as a session's own does, when this process can see it; a
        crossing only others' calls made visible is refused at the next admission.
        Only for the window that reading was taken in (an older hold's window, or a
        reading a refusal gave, which names no window, says nothing of it).
        """
        budget = self._budget_nano
        if budget < 0 or hold.window != self._seen_window:
            return None
        # This hold's own booking's (settle): a later one's would make every call
        # settled together look like the one that crossed, at the latest total.
        spent = hold.spent_nano if hold.spent_nano >= 0 else self._seen[1]
        return spent / NANO if spent > budget else None

    def release(self, hold: FleetHold, *, ran: bool = True) -> None:
        """Drop the hold's reservation without booking a cost. Never raises.

        ``ran=True`` (the default: the call started and failed with no cost to
        book) keeps it counted against ``max_calls``, so failing calls cannot
        run past the cap. ``ran=False`` (the call never started, e.g. another
        level refused it) un-counts it.

        Example::

            tenant.release(hold, ran=False)     # refused by another level, never ran
        """
        if self._claim(hold):
            self._finish(hold, "abandon" if ran else "release", 0)

    # --- reading ---------------------------------------------------------------

    def usage(self) -> FleetUsage:
        """The current window's calls, spend, reservations and calls in flight.

        Delivers this scope's pending settlements first (bounded by a few
        ``timeout_s``), so what it reads includes them when the store answers.
        Raises ``FleetUnavailableError`` when the store cannot be read.

        Example::

            u = tenant.usage()
            print(u.calls, u.spent_usd, u.reserved_usd, u.in_flight)
        """
        # Always: a settlement the flusher is delivering right now is waited for.
        self._outbox.drain(time.monotonic() + 4 * self.timeout_s)
        try:
            _window, start, calls, spent, reserved, in_flight = self._store.peek(
                window_ms=self._window_ms, lease_ms=self._lease_ms
            )
        except self._store_errors as exc:
            self._health.failed(exc, "usage")
            raise FleetUnavailableError(self.scope, checks.reason(exc), "usage()") from None
        self._health.ok()
        return FleetUsage(
            scope=self.scope,
            calls=calls,
            spent_usd=spent / NANO,
            reserved_usd=reserved / NANO,
            in_flight=in_flight,
            window_start=start / 1000,
            window_s=self.window_s,
            budget_usd=self.budget_usd,
            max_calls=self.max_calls,
        )

    def learned_cost(self, model: str) -> float | None:
        """The largest cost one call of ``model`` has settled at in this scope, or None.

        Example::

            tenant.learned_cost("gpt-4o-mini")
        """
        try:
            nano = self._store.learned(checks.model_key(model))
        except self._store_errors as exc:
            self._health.failed(exc, "learned_cost")
            raise FleetUnavailableError(self.scope, checks.reason(exc), "learned_cost()") from None
        return None if nano is None else nano / NANO

    @property
    def pending_settlements(self) -> int:
        """Settlements, releases and clean-ups waiting to be delivered to the store."""
        return len(self._outbox)

    @property
    def dropped_settlements(self) -> int:
        """Settlements dropped undelivered (a full outbox, or rejected by the store)."""
        return self._outbox.dropped["settlement"]

    def flush(self, timeout_s: float | None = None) -> bool:
        """Deliver pending settlements now, within ``timeout_s`` (default: 4 × ``timeout_s``).

        Late bookings (calls that ran without a door asking the fleet, counted
        when they end) are waited for too. Returns True when nothing is left
        waiting. Normal exit and the SIGTERM handler do the same for every
        scope (``fleet.outbox.flush_all``).

        Example::

            tenant.flush(1.0)
        """
        bound = 4 * self.timeout_s if timeout_s is None else max(0.0, timeout_s)
        deadline = time.monotonic() + bound
        # A call that ran without any door asking the fleet is booked late, on a
        # thread of its own (Ledger._fleet_unasked): wait for those too.
        late_done = wait_late_fleet_bookings(deadline)
        return self._outbox.drain(deadline) and late_done

    def close(self) -> None:
        """Deliver what is pending (bounded), close the Redis connections opened here,
        and stop reporting this scope's gauges."""
        fleet_scopes.forget(self)
        self.flush()
        self._store.close()

    def __repr__(self) -> str:
        return (
            f"FleetLimits(scope={self.scope!r}, budget_usd={self.budget_usd!r}, "
            f"max_calls={self.max_calls!r}, window_s={self.window_s!r}, "
            f"on_store_error={self.on_store_error!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Lets a spawned worker (multiprocessing "spawn") rebuild the scope from its URL.
        if self._url is None:
            raise TypeError(
                "a FleetLimits built from a Redis client cannot be pickled; build it from a URL"
            )
        options = {
            "scope": self.scope,
            "budget_usd": self.budget_usd,
            "max_calls": self.max_calls,
            "window_s": self.window_s,
            "lease_s": self.lease_s,
            "on_store_error": self.on_store_error,
            "timeout_s": self.timeout_s,
            "probe_wait_s": self.probe_wait_s,
            "key_prefix": self.key_prefix,
            "max_connections": self.max_connections,
        }
        return (_rebuild, (self._url, options))

    # --- internals -----------------------------------------------------------------

    def _checked(self, model: object, expected_usd: float) -> tuple[str, int]:
        if not isinstance(model, str):
            raise TypeError(f"reserve() model must be a str, got {model!r}")
        expected = checks.number("expected_usd", expected_usd, positive=False, optional=False)
        model = checks.model_key(model)
        return model, booking_nano(expected or 0.0, "fleet reservation of {!r}", model)

    #: The shared session closed (its store's close mark, ``RedisStore.gate``): its
    #: calls run on their local limits, unbacked. A fleet scope never closes.
    _closed = False

    def _admit(self, model: str, expected_nano: int, hold_id: str, force: bool) -> list[Any]:
        if len(self._outbox) and not self._health.down and not on_event_loop():
            # This process's settlements still waiting (one made on an event loop is
            # delivered by a background thread) are delivered first, so the admission
            # reads what those calls cost, not what they reserved: a first burst's calls,
            # woken when their model's first call settled here, were refused by its
            # reservation (its request's bound) still held in the store: 1 of 20 ran
            # where five fit. Off the loop only (an admission there already blocks it),
            # and not while the store is down (each admission would wait twice).
            self._outbox.drain(time.monotonic() + self.timeout_s)
        return self._store.admit(
            window_ms=self._window_ms,
            lease_ms=self._lease_ms,
            max_calls=self._max_calls,
            budget_nano=self._budget_nano,
            expected_nano=expected_nano,
            model=model,
            hold_id=hold_id,
            force=force,
            probe_alive_ms=self._beats.alive_ms,
        )

    def _step(self, reply: list[Any], model: str, hold_id: str, seen: int | None) -> _Step:
        """A hold, the refusal raised, or (status 2) the seconds left on the probe's lease.

        ``seen``: the window of the last reply read before this request was sent.
        Keys the script found missing (``reply[5]``) in a window a reply had already
        shown before we sent are keys that vanished; concurrent first requests of a
        window each find them missing or made, in any order, and say nothing.
        """
        self._health.ok()
        status = int(reply[0])
        if status == 3:
            # The shared session closed (its record is gone): nothing was counted or
            # created, and this level's calls run on their local limits from now on.
            if not self._closed:
                self._closed = True
                _log.info(
                    "fleet scope %r: its shared session closed; calls under it run on "
                    "their local limits",
                    self.scope,
                )
            return self._unbacked(model, hold_id)
        if status == 1:
            window = int(reply[1])
            if len(reply) > 5 and int(reply[5]) and window == seen:
                self._health.vanished(window, "its keys were gone at the next admission")
            self._last_window = window
            if len(reply) > 8:
                self._seen = (int(reply[6]), int(reply[7]), int(reply[8]))
                self._seen_window = window
                if self._window_ms:
                    # The server's now is its lease's end less the lease (reply[4]).
                    left_ms = int(reply[2]) + self._window_ms - (int(reply[4]) - self._lease_ms)
                    self._seen_until = time.monotonic() + max(left_ms, 0) / 1000
                else:
                    self._seen_until = float("inf")  # one window for the scope's life
            hold = FleetHold(
                scope=self.scope,
                model=model,
                hold_id=hold_id,
                reserved_usd=int(reply[3]) / NANO,
                window_start=int(reply[2]) / 1000,
                lease_until=int(reply[4]) / 1000,
                window=window,
            )
            self._note_in_flight(hold)
            if len(reply) > 10 and int(reply[10]):
                self._beats.add(hold)  # this call is its model's probe: say it is alive
            return hold
        if status == 0:
            kind, current = checks.text(reply[1]), int(reply[2])
            reserved = int(reply[3]) if len(reply) > 3 else 0
            calls, spent, _ = self._seen
            if time.monotonic() >= self._seen_until:
                self._seen_window = None  # maybe a later window than the holds here
            if kind == "calls":
                self._seen = (current, spent, self._seen[2])
            else:
                self._seen = (calls, current - reserved, reserved)
            raise self._refusal(kind, current, reserved)
        return int(reply[1]) / 1000

    def _warn_once(self, model: str) -> bool:
        """True for the first warning about ``model``'s probe in ``probe_wait_s``."""
        now = time.monotonic()
        last = self._probe_warned.get(model)
        if last is not None and now - last < self._probe_wait:
            return False  # the calls waiting for the same probe: said once
        if len(self._probe_warned) > 4096:
            self._probe_warned.clear()  # bounded: one entry per model recently warned of
        self._probe_warned[model] = now
        return True

    def _probe_lost(self, model: str, age_ms: int, since: float | None) -> None:
        """Warn that this call took over a probe whose process stopped renewing it."""
        if not self._warn_once(model):
            return
        waited = 0.0 if since is None else time.monotonic() - since
        _log.warning(
            "fleet scope %r: the probe of model %r (the first call of a model whose cost "
            "the scope has not learned; its other calls wait for it to settle) did not "
            "settle within %.1f s: its process stopped renewing it (crashed or killed). "
            "This call waited %.1f s and runs as the model's probe in its place; the lost "
            "call stays counted.",
            self.scope,
            model,
            age_ms / 1000,
            waited,
        )

    def _probe_slow(self, model: str, reply: list[Any], waited: float) -> None:
        """Warn that a model's probe is still running after ``probe_wait_s``: once per wait."""
        if not self._warn_once(model):
            return
        age_ms = int(reply[2]) if len(reply) > 2 else -1
        if age_ms >= 0:
            state = (
                f"is still running after {age_ms / 1000:.1f} s (slow): its process is "
                "alive and renews it"
            )
        else:
            state = (
                f"is still running after this call's {waited:.1f} s wait; its process does "
                "not renew it (an older version), so it is waited for until its lease ends"
            )
        _log.warning(
            "fleet scope %r: the probe of model %r (the first call of a model whose cost "
            "the scope has not learned; its other calls wait for it to settle) %s. This "
            "call has waited %.1f s and keeps waiting for it, so that it reserves what the "
            "probe costs instead of running unreserved beside it (at most until the "
            "probe's lease ends). If the model's calls are this slow, set probe_wait_s "
            "above the longest (%.1f s now) to silence this.",
            self.scope,
            model,
            state,
            waited,
            self._probe_wait,
        )

    def _admit_failed(self, exc: BaseException, model: str, hold_id: str) -> FleetHold:
        self._health.failed(exc, "reserve")
        self._compensate(hold_id, model)
        if self.on_store_error == "refuse":
            raise FleetUnavailableError(self.scope, checks.reason(exc)) from None
        return self._unbacked(model, hold_id)

    def _unreachable(self, model: str, hold_id: str) -> FleetHold:
        """The store is known down (nothing was sent): the on_store_error policy, at once."""
        self._health.skipped()
        if self.on_store_error == "refuse":
            raise FleetUnavailableError(self.scope, self._health.last_reason or "store down")
        return self._unbacked(model, hold_id)

    def _unbacked(self, model: str, hold_id: str) -> FleetHold:
        return FleetHold(
            scope=self.scope,
            model=model,
            hold_id=hold_id,
            reserved_usd=0.0,
            window_start=0.0,
            lease_until=time.time() + self.lease_s,
            backed=False,
        )

    def _refusal(self, kind: str, current: int, reserved: int = 0) -> Exception:
        error: Exception
        # A refusal before the call ran, said so even to a direct reserve() caller (a
        # session's ledger tells it again with the session it was made for).
        site = LimitSite("fleet", False, scope=self.scope, window_s=self.window_s)
        if kind == "calls":
            limit_kind = sc.LIMIT_FLEET_CALLS
            error = MaxIterationsExceededError(self._max_calls, scope=self.scope, site=site)
        else:
            limit_kind = sc.LIMIT_FLEET_BUDGET
            error = BudgetExceededError(
                self.budget_usd or 0.0,
                current / NANO,
                scope=self.scope,
                site=site,
                reserved_usd=reserved / NANO,
            )
        try:
            instruments_for(None).fleet_refusals.add(1, self._refusal_attrs[limit_kind])
        except Exception:  # telemetry never breaks the agent
            _log.debug("fleet refusal metric failed", exc_info=True)
        return error

    def _claim(self, hold: FleetHold) -> bool:
        self._check_hold(hold)
        with self._lock:
            if hold.done:
                return False
            hold.done = True
        self._in_flight.pop(hold.hold_id, None)
        self._beats.discard(hold.hold_id)
        return hold.backed

    def _claim_settled(self, hold: FleetHold, actual: float) -> int | None:
        """``_claim`` for a settlement: its cost in nano-USD to book, None if nothing is.

        Counted in ``_seen`` under the claim's lock: calls settled together each see
        the total with their own cost (``crossed``), not a later one's or a lost update.
        """
        self._check_hold(hold)
        with self._lock:
            if hold.done:
                return None
            hold.done = True
            nano = None
            if hold.backed:
                nano = booking_nano(actual, "cost of {!r}", hold.model)
                calls, spent, reserved = self._seen
                # What this process booked, seen at once (others' spend at the next admission).
                held = round(hold.reserved_usd * NANO)
                self._seen = (calls, spent + nano, max(reserved - held, 0))
                hold.spent_nano = spent + nano
        self._in_flight.pop(hold.hold_id, None)
        self._beats.discard(hold.hold_id)
        return nano

    def _check_hold(self, hold: FleetHold) -> None:
        if not isinstance(hold, FleetHold):
            raise TypeError(f"expected a FleetHold from reserve(), got {hold!r}")
        if hold.scope != self.scope:
            raise ValueError(f"hold of scope {hold.scope!r} given to scope {self.scope!r}")

    def _note_in_flight(self, hold: FleetHold) -> None:
        in_flight = self._in_flight
        if len(in_flight) >= _IN_FLIGHT_MAX:
            # Holds a program never settled: their leases have freed them in Redis.
            now = time.time()
            for stale in [h for h in in_flight.values() if h.lease_until < now]:
                in_flight.pop(stale.hold_id, None)
        in_flight[hold.hold_id] = hold

    def settle_in_flight(self) -> int:
        """Book every hold this process still has in flight at what it reserved; how many.

        For a process being stopped (SIGTERM) with calls in flight: they were
        sent and will never report a cost here, and their holds would otherwise
        keep their reservations in the scope until their leases end
        (``lease_s``, 10 minutes by default). Booking what each call reserved is
        what a call whose usage never arrives is booked at elsewhere.

        Example::

            tenant.settle_in_flight()   # at shutdown, before tenant.flush()
        """
        held = list(self._in_flight.values())
        for hold in held:
            if self._claim(hold):
                # Queued, not sent: the exit flush delivers every scope's within its one
                # bound, where a round trip each could time out scope after scope.
                nano = booking_nano(hold.reserved_usd, "reservation of {!r}", hold.model)
                self._finish(hold, "settle", nano, queue=True)
        return len(held)

    def _finish(self, hold: FleetHold, mode: str, actual_nano: int, queue: bool = False) -> None:
        finish = Finish(hold.window, hold.hold_id, hold.model, mode, actual_nano)
        if queue or len(self._outbox) or on_event_loop():
            # An event loop never waits on Redis, and while earlier finishes wait
            # (the store is likely down) this one joins them instead of timing out.
            self._outbox.put(finish)
            return
        try:
            done = self._store.finish(
                window=finish.window,
                hold_id=finish.hold_id,
                actual_nano=actual_nano,
                model=finish.model,
                mode=mode,
                ttl_ms=_LEARNED_TTL_MS,
            )
        except self._store_errors as exc:
            self._health.failed(exc, mode)
            self._outbox.put(finish)
            return
        except Exception:
            _log.exception("fleet scope %r: %s failed; the lease frees the hold", self.scope, mode)
            return
        self._health.ok()
        if done < 0 and mode != "release":
            self._health.window_gone(finish.window, mode)
        self._waiters.wake(finish.model)
        if done == 1:
            _count_cost(finish, self._attrs)

    def _compensate(self, hold_id: str, model: str) -> None:
        """Queue a release of an admission whose reply never came.

        A timed-out script may still run once a stalled Redis wakes up; releasing
        its hold id afterwards un-counts it (a no-op if it never ran). The window
        is the server's, so the neighbours of this clock's window are released too.
        Clean-ups have their own bound in the outbox: they never push out settlements.
        """
        if self._window_ms:
            now_w = int(time.time() * 1000) // self._window_ms
            windows = [now_w - 1, now_w, now_w + 1]
        else:
            windows = [0]
        for window in windows:
            self._outbox.put(Finish(window, hold_id, model, "release", 0), cleanup=True)


def _count_cost(finish: Finish, attrs: dict[str, str]) -> None:
    if finish.mode != "settle" or finish.actual_nano <= 0:
        return
    try:
        instruments_for(None).fleet_cost.add(finish.actual_nano / NANO, attrs)
    except Exception:  # telemetry never breaks the agent
        _log.debug("fleet cost metric failed", exc_info=True)


def _rebuild(url: str, options: dict[str, Any]) -> FleetLimits:
    return FleetLimits(url, **options)
