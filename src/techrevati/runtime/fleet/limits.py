"""FleetLimits: one budget and one call cap shared by every process, kept in Redis.

A fleet scope is one more level of the ledger chain, above the session ledgers:
``reserve`` admits a call (counts it, reserves its expected cost), ``settle``
replaces the reservation with the actual cost, ``release`` drops it. Each is a
single Lua script, so one round trip, atomic across every process.
"""

from __future__ import annotations

import collections
import logging
import math
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any, Literal

from ..telemetry import semconv as sc
from ..telemetry.calls.metrics import fleet_scopes, instruments_for
from ..telemetry.limits.errors import FleetUnavailableError, MaxIterationsExceededError
from ..telemetry.limits.money import NANO, booking_nano, check_budget, to_nano
from ..usage_tracking import BudgetExceededError
from .hold import FleetHold, FleetUsage

if TYPE_CHECKING:
    from .store import RedisStore

_log = logging.getLogger("techrevati.runtime.fleet")

_NANO = NANO
#: The longest window, lease or probe wait a scope accepts (ten years, in seconds):
#: far beyond any real use, and every deadline in ms stays exact in Redis' Lua doubles.
_MAX_SECONDS = 10 * 366 * 86_400.0
#: The longest bound on one Redis call.
_MAX_TIMEOUT_S = 3_600.0
#: The largest call cap: counts stay exact in Redis' Lua doubles.
_MAX_CALLS = 2**53
#: Learned per-model costs outlive windows (a new day starts knowing yesterday's prices).
_LEARNED_TTL_MS = 30 * 86_400 * 1000
#: Settlements that failed while the store was down, retried once it answers again.
_PENDING_MAX = 10_000
_PROBE_POLL_MIN_S = 0.005
_PROBE_POLL_MAX_S = 0.25

OnStoreError = Literal["refuse", "allow"]


def _number(
    name: str,
    value: object,
    *,
    positive: bool,
    optional: bool = True,
    most: float | None = None,
) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"FleetLimits {name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        need = "a finite number > 0" if positive else "a finite number >= 0"
        raise ValueError(f"FleetLimits {name} must be {need}, got {value!r}")
    if most is not None and value > most:
        raise ValueError(f"FleetLimits {name} must be at most {most:g}, got {value!r}")
    return float(value)


def _seconds(name: str, value: object, *, optional: bool, most: float = _MAX_SECONDS) -> float:
    return float(_number(name, value, positive=True, optional=optional, most=most) or 0.0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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
        timeout_s: bound on every Redis call (connect and reply each).
        probe_wait_s: under a budget, a model whose cost the scope has not seen
            yet and the caller cannot estimate runs one call first; others of
            that model wait for it up to this long (None: until it settles or
            its lease ends), then run unreserved.
        key_prefix: prefix of every Redis key of the scope.

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
    ) -> None:
        if not isinstance(scope, str) or not scope.strip():
            raise ValueError(f"FleetLimits scope must be a non-empty string, got {scope!r}")
        if "{" in scope or "}" in scope:
            raise ValueError(f"FleetLimits scope must not contain braces, got {scope!r}")
        if not isinstance(key_prefix, str) or not key_prefix:
            raise ValueError(
                f"FleetLimits key_prefix must be a non-empty string, got {key_prefix!r}"
            )
        if max_calls is not None and (
            isinstance(max_calls, bool) or not isinstance(max_calls, int)
        ):
            raise TypeError(f"FleetLimits max_calls must be an int, got {max_calls!r}")
        if max_calls is not None and not 0 <= max_calls <= _MAX_CALLS:
            raise ValueError(f"FleetLimits max_calls must be in [0, 2**53], got {max_calls!r}")
        if on_store_error not in ("refuse", "allow"):
            raise ValueError(
                f"FleetLimits on_store_error must be 'refuse' or 'allow', got {on_store_error!r}"
            )
        self.scope = scope
        self.budget_usd = check_budget("FleetLimits budget_usd", budget_usd)
        self.max_calls = max_calls
        self.window_s = None if window_s is None else _seconds("window_s", window_s, optional=False)
        self.lease_s = _seconds("lease_s", lease_s, optional=False)
        self.timeout_s = _seconds("timeout_s", timeout_s, optional=False, most=_MAX_TIMEOUT_S)
        self.probe_wait_s = _number("probe_wait_s", probe_wait_s, positive=False, most=_MAX_SECONDS)
        self.on_store_error: OnStoreError = on_store_error
        self.key_prefix = key_prefix
        self._window_ms = 0 if self.window_s is None else max(1, round(self.window_s * 1000))
        self._lease_ms = max(1, round(self.lease_s * 1000))
        self._budget_nano = -1 if self.budget_usd is None else to_nano(self.budget_usd)
        self._max_calls = -1 if max_calls is None else max_calls
        self._url = url_or_redis_client if isinstance(url_or_redis_client, str) else None

        try:
            from . import store as store_module
        except ImportError as exc:
            raise ImportError(
                "FleetLimits needs the Redis client: pip install redis (or, from a clone "
                "of this project, pip install '.[redis]'; not 'techrevati-runtime[redis]', "
                "which installs an unrelated package of that name from PyPI)"
            ) from exc
        if isinstance(url_or_redis_client, str):
            client = store_module.connect(url_or_redis_client, self.timeout_s)
        elif callable(getattr(url_or_redis_client, "register_script", None)):
            client = url_or_redis_client
        else:
            raise TypeError(
                "FleetLimits needs a redis:// URL or a redis.Redis client, "
                f"got {url_or_redis_client!r}"
            )
        self._store: RedisStore = store_module.RedisStore(client, f"{key_prefix}:{{{scope}}}")
        self._store_errors = store_module.STORE_ERRORS
        self._attrs = {sc.FLEET_SCOPE: scope}
        self._refusal_attrs = {
            sc.LIMIT_FLEET_BUDGET: {sc.FLEET_SCOPE: scope, sc.LIMIT_KIND: sc.LIMIT_FLEET_BUDGET},
            sc.LIMIT_FLEET_CALLS: {sc.FLEET_SCOPE: scope, sc.LIMIT_KIND: sc.LIMIT_FLEET_CALLS},
        }
        self._lock = threading.Lock()
        self._down = False
        self._pending: collections.deque[tuple[FleetHold, str, int]] = collections.deque(
            maxlen=_PENDING_MAX
        )
        # Budget, window and spend as gauges per scope, for the burn-rate alerts.
        fleet_scopes.track(self)

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
        ``probe_wait_s``.

        Example::

            hold = tenant.reserve("gpt-4o-mini", 0.002)
        """
        if not isinstance(model, str):
            raise TypeError(f"reserve() model must be a str, got {model!r}")
        expected = _number("expected_usd", expected_usd, positive=False, optional=False)
        expected_nano = booking_nano(expected or 0.0, f"fleet reservation of {model!r}")
        hold_id = secrets.token_hex(8)
        force = False
        waited_since: float | None = None
        poll = _PROBE_POLL_MIN_S
        while True:
            try:
                reply = self._store.admit(
                    window_ms=self._window_ms,
                    lease_ms=self._lease_ms,
                    max_calls=self._max_calls,
                    budget_nano=self._budget_nano,
                    expected_nano=expected_nano,
                    model=model,
                    hold_id=hold_id,
                    force=force,
                )
            except self._store_errors as exc:
                self._store_failed(exc, "reserve")
                self._compensate(hold_id, model)
                if self.on_store_error == "refuse":
                    raise FleetUnavailableError(self.scope, _reason(exc)) from None
                now = time.time()
                return FleetHold(
                    scope=self.scope,
                    model=model,
                    hold_id=hold_id,
                    reserved_usd=0.0,
                    window_start=0.0,
                    lease_until=now + self.lease_s,
                    backed=False,
                )
            self._store_ok()
            status = int(reply[0])
            if status == 1:
                return FleetHold(
                    scope=self.scope,
                    model=model,
                    hold_id=hold_id,
                    reserved_usd=int(reply[3]) / _NANO,
                    window_start=int(reply[2]) / 1000,
                    lease_until=int(reply[4]) / 1000,
                    window=int(reply[1]),
                )
            if status == 0:
                raise self._refusal(_text(reply[1]), int(reply[2]))
            # status 2: this model's first call in the scope is still in flight.
            now = time.monotonic()
            if waited_since is None:
                waited_since = now
            left = int(reply[1]) / 1000
            if self.probe_wait_s is not None:
                left = min(left, self.probe_wait_s - (now - waited_since))
            if left <= 0:
                force = True
                continue
            time.sleep(min(poll, left))
            poll = min(poll * 2, _PROBE_POLL_MAX_S)

    def settle(self, hold: FleetHold, actual_usd: float) -> None:
        """Replace the hold's reservation with the call's actual cost, exactly once.

        Books into the window the call was admitted in, even after its lease ran
        out (the reservation was freed then; the cost is booked now, once). A
        second settle or release of the same hold does nothing. Never raises on
        a store failure: it is logged once per outage, counted, and retried
        (idempotently) after the store answers again.

        Example::

            tenant.settle(hold, 0.0017)
        """
        actual = _number("actual_usd", actual_usd, positive=False, optional=False)
        if self._claim(hold):
            self._finish(hold, "settle", booking_nano(actual or 0.0, f"cost of {hold.model!r}"))

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

        Raises ``FleetUnavailableError`` when the store cannot be read.

        Example::

            print(tenant.usage().spent_usd)
        """
        if self._pending:
            self._flush_pending()
        try:
            _window, start, calls, spent, reserved, in_flight = self._store.peek(
                window_ms=self._window_ms, lease_ms=self._lease_ms
            )
        except self._store_errors as exc:
            self._store_failed(exc, "usage")
            raise FleetUnavailableError(self.scope, _reason(exc)) from None
        self._store_ok()
        return FleetUsage(
            scope=self.scope,
            calls=calls,
            spent_usd=spent / _NANO,
            reserved_usd=reserved / _NANO,
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
            nano = self._store.learned(model)
        except self._store_errors as exc:
            self._store_failed(exc, "learned_cost")
            raise FleetUnavailableError(self.scope, _reason(exc)) from None
        return None if nano is None else nano / _NANO

    @property
    def pending_settlements(self) -> int:
        """Settlements and releases that failed on the store and wait for a retry."""
        return len(self._pending)

    def close(self) -> None:
        """Close the Redis connections this scope opened (and stop reporting its gauges)."""
        fleet_scopes.forget(self)
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
        }
        return (_rebuild, (self._url, options))

    # --- internals -----------------------------------------------------------------

    def _refusal(self, kind: str, current: int) -> Exception:
        error: Exception
        if kind == "calls":
            limit_kind = sc.LIMIT_FLEET_CALLS
            error = MaxIterationsExceededError(self._max_calls, scope=self.scope)
        else:
            limit_kind = sc.LIMIT_FLEET_BUDGET
            error = BudgetExceededError(self.budget_usd or 0.0, current / _NANO, scope=self.scope)
        try:
            instruments_for(None).fleet_refusals.add(1, self._refusal_attrs[limit_kind])
        except Exception:  # telemetry never breaks the agent
            _log.debug("fleet refusal metric failed", exc_info=True)
        return error

    def _claim(self, hold: FleetHold) -> bool:
        if not isinstance(hold, FleetHold):
            raise TypeError(f"expected a FleetHold from reserve(), got {hold!r}")
        if hold.scope != self.scope:
            raise ValueError(f"hold of scope {hold.scope!r} given to scope {self.scope!r}")
        with self._lock:
            if hold.done:
                return False
            hold.done = True
        return hold.backed

    def _finish(self, hold: FleetHold, mode: str, actual_nano: int) -> None:
        try:
            booked = self._store.finish(
                window=hold.window,
                hold_id=hold.hold_id,
                actual_nano=actual_nano,
                model=hold.model,
                mode=mode,
                ttl_ms=_LEARNED_TTL_MS,
            )
        except self._store_errors as exc:
            self._store_failed(exc, mode)
            self._pending.append((hold, mode, actual_nano))
            return
        except Exception:
            _log.exception("fleet scope %r: %s failed; the lease frees the hold", self.scope, mode)
            return
        self._store_ok()
        if booked:
            self._booked(mode, actual_nano)
        if self._pending:
            self._flush_pending()

    def _compensate(self, hold_id: str, model: str) -> None:
        """Queue a release of an admission whose reply never came.

        A timed-out script may still run once a stalled Redis wakes up; releasing
        its hold id afterwards un-counts it (a no-op if it never ran). The window
        is the server's, so the neighbours of this clock's window are released too.
        """
        if self._window_ms:
            now_w = int(time.time() * 1000) // self._window_ms
            windows = [now_w - 1, now_w, now_w + 1]
        else:
            windows = [0]
        for window in windows:
            ghost = FleetHold(
                scope=self.scope,
                model=model,
                hold_id=hold_id,
                reserved_usd=0.0,
                window_start=0.0,
                lease_until=0.0,
                window=window,
                done=True,
            )
            self._pending.append((ghost, "release", 0))

    def _booked(self, mode: str, actual_nano: int) -> None:
        if mode != "settle" or actual_nano <= 0:
            return
        try:
            instruments_for(None).fleet_cost.add(actual_nano / _NANO, self._attrs)
        except Exception:  # telemetry never breaks the agent
            _log.debug("fleet cost metric failed", exc_info=True)

    def _flush_pending(self) -> None:
        """Retry settlements that failed during an outage (each books at most once)."""
        while True:
            try:
                hold, mode, actual_nano = self._pending.popleft()
            except IndexError:
                return
            try:
                booked = self._store.finish(
                    window=hold.window,
                    hold_id=hold.hold_id,
                    actual_nano=actual_nano,
                    model=hold.model,
                    mode=mode,
                    ttl_ms=_LEARNED_TTL_MS,
                )
            except self._store_errors as exc:
                self._pending.appendleft((hold, mode, actual_nano))
                self._store_failed(exc, mode)
                return
            except Exception:
                _log.exception("fleet scope %r: retried %s failed; dropped", self.scope, mode)
                continue
            if booked:
                self._booked(mode, actual_nano)

    def _store_failed(self, exc: BaseException, doing: str) -> None:
        try:
            instruments_for(None).fleet_store_errors.add(1, self._attrs)
        except Exception:  # telemetry never breaks the agent
            _log.debug("fleet store-error metric failed", exc_info=True)
        with self._lock:
            first, self._down = not self._down, True
        if first:
            action = (
                "refusing model calls"
                if self.on_store_error == "refuse"
                else "letting model calls run on local limits only"
            )
            _log.warning(
                "fleet scope %r: store unreachable during %s (%s); %s until it answers again",
                self.scope,
                doing,
                _reason(exc),
                action,
            )
        else:
            _log.debug("fleet scope %r: store still unreachable (%s)", self.scope, _reason(exc))

    def _store_ok(self) -> None:
        if self._down:
            with self._lock:
                was, self._down = self._down, False
            if was:
                _log.warning("fleet scope %r: store reachable again", self.scope)


def _rebuild(url: str, options: dict[str, Any]) -> FleetLimits:
    return FleetLimits(url, **options)
