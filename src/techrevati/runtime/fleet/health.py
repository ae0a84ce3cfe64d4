"""Whether a scope's store answers: one log line per outage, a metric per failure.

Shared by a ``FleetLimits`` and its outbox (which may outlive it), so the
"unreachable" and "reachable again" lines come once per outage whoever sees it.
"""

from __future__ import annotations

import logging
import threading

from ..telemetry import semconv as sc
from ..telemetry.calls.metrics import instruments_for
from .checks import reason

_log = logging.getLogger("techrevati.runtime.fleet")


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

    def failed(self, exc: BaseException, doing: str) -> None:
        """A call of the agent's failed on the store: counted, and logged once per outage."""
        try:
            instruments_for(None).fleet_store_errors.add(1, self.attrs)
        except Exception:  # telemetry never breaks the agent
            _log.debug("fleet store-error metric failed", exc_info=True)
        self.retry_failed(exc, doing)

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
