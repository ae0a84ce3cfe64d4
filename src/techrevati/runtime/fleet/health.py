"""Whether a scope's store answers: one log line per outage, a metric per failure.

Shared by a ``FleetLimits`` and its outbox (which may outlive it), so the
"unreachable" and "reachable again" lines come once per outage whoever sees it.
"""

from __future__ import annotations

import logging
import threading
import time

from ..telemetry import semconv as sc
from ..telemetry.calls.metrics import instruments_for
from .checks import reason

_log = logging.getLogger("techrevati.runtime.fleet")
#: Clock difference tolerated between this host and Redis when telling an
#: evicted window from one that simply ended.
_CLOCK_SLACK_S = 5.0


class StoreHealth:
    """Up/down state of one scope's store, with the outage logged once.

    Example::

        health = StoreHealth("tenant-42", "refuse")
        health.failed(TimeoutError("timed out"), "reserve")   # logs once
        health.ok()                                           # "reachable again"
    """

    def __init__(self, scope: str, on_store_error: str) -> None:
        self.scope = scope
        self.on_store_error = on_store_error
        self.attrs = {sc.FLEET_SCOPE: scope}
        self._lock = threading.Lock()
        self.down = False
        #: The scope's window and lease, to tell an evicted window from one that ended.
        self.window_ms = 0
        self.lease_s = 0.0
        self._evicted_window: int | None = None
        #: When the last call failed on the store, and why (``time.monotonic``).
        self.failed_at = 0.0
        self.last_reason = ""

    def failed(self, exc: BaseException, doing: str) -> None:
        """A call of the agent's failed on the store: counted, and logged once per outage."""
        try:
            instruments_for(None).fleet_store_errors.add(1, self.attrs)
        except Exception:  # telemetry never breaks the agent
            _log.debug("fleet store-error metric failed", exc_info=True)
        self.failed_at = time.monotonic()
        self.last_reason = reason(exc)
        self.retry_failed(exc, doing)

    def known_down(self, within_s: float) -> bool:
        """True while the store is down and a call failed on it less than ``within_s`` ago.

        An event loop's caller then skips the round trip it would block the loop
        for (see ``FleetLimits.reserve``): one timed-out call per interval finds
        out whether the store answers again, the rest fail fast.
        """
        return self.down and time.monotonic() - self.failed_at < within_s

    def skipped(self) -> None:
        """A call skipped its round trip (``known_down``): counted like a failed one."""
        try:
            instruments_for(None).fleet_store_errors.add(1, self.attrs)
        except Exception:  # telemetry never breaks the agent
            _log.debug("fleet store-error metric failed", exc_info=True)

    def retry_failed(self, exc: BaseException, doing: str) -> None:
        """A background delivery failed: logged once per outage, not counted again
        (the store-error count is of the agent's calls, not of the flusher's retries)."""
        with self._lock:
            first, self.down = not self.down, True
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
                reason(exc),
                action,
            )
        else:
            _log.debug("fleet scope %r: store still unreachable (%s)", self.scope, reason(exc))

    def ok(self) -> None:
        if self.down:
            with self._lock:
                was, self.down = self.down, False
            if was:
                _log.warning("fleet scope %r: store reachable again", self.scope)

    def window_gone(self, window: int, doing: str) -> None:
        """A settlement found its window's keys gone: evicted, unless the window ended."""
        if self.window_ms:
            ends = (window + 1) * self.window_ms / 1000 + self.lease_s
            if time.time() > ends - _CLOCK_SLACK_S:
                return  # the window and its lease are over: its keys expired on time
        self.vanished(window, f"a {doing} found none")

    def vanished(self, window: int, how: str) -> None:
        """A window's keys vanished mid-window: counted, and logged once per window."""
        try:
            instruments_for(None).fleet_evictions.add(1, self.attrs)
        except Exception:  # telemetry never breaks the agent
            _log.debug("fleet eviction metric failed", exc_info=True)
        first = self._evicted_window != window
        self._evicted_window = window
        (_log.error if first else _log.debug)(
            "fleet scope %r: the keys of window %d vanished from Redis mid-window (%s): "
            "its spend and call count restarted from zero. Redis evicted them "
            "(maxmemory-policy must be noeviction) or restarted without persistence "
            "(use appendonly yes); see docs/fleet.md",
            self.scope,
            window,
            how,
        )
