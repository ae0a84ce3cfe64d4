"""Renewing this process's probes, so other processes can tell a slow probe from a lost one.

A model's first call whose cost nothing tells runs alone (its probe); the other
calls of that model, in every process, wait for it to settle. While the probe's
call runs, a thread of the process that runs it renews the probe's liveness in
Redis every ``period_s`` (the ``BEAT`` script): a probe renewed recently is alive,
however long its call takes, and is waited for; one not renewed for ``alive_ms``
(its process crashed or was killed) is lost, and the next call probes instead.

One thread per scope object, started when a probe is admitted and ended when this
process has none left in flight; it holds the store, never the scope.

Example::

    beats = ProbeBeats(store, period_s=5.0, alive_ms=15_000, store_errors=(OSError,))
    beats.add(hold)       # admitted as its model's probe
    beats.discard(hold.hold_id)   # settled or released
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .hold import FleetHold
    from .store import RedisStore

_log = logging.getLogger("techrevati.runtime.fleet")

#: How often a probe's process renews it, at most (s); a shorter ``probe_wait_s``
#: renews more often, so a lost probe is told within it.
BEAT_PERIOD_S = 5.0
#: Never more often than this (s): one round trip per probe in flight each time.
BEAT_PERIOD_MIN_S = 0.5
#: Renewals a probe may miss before it counts as lost: a busy process or a slow
#: round trip is late now and then, a dead one never renews again.
BEATS_MISSED = 3


def beat_period(probe_wait_s: float) -> float:
    """The renewal period for a scope whose calls wait ``probe_wait_s`` before warning."""
    return min(BEAT_PERIOD_S, max(BEAT_PERIOD_MIN_S, probe_wait_s / (2 * BEATS_MISSED)))


class ProbeBeats:
    """The probes this process runs in one scope, renewed by one thread while any is in flight."""

    def __init__(
        self,
        store: RedisStore,
        *,
        period_s: float,
        alive_ms: int,
        store_errors: tuple[type[BaseException], ...],
    ) -> None:
        self._store = store
        self.period_s = period_s
        self.alive_ms = alive_ms
        self._store_errors = store_errors
        self._lock = threading.Lock()
        self._holds: dict[str, int] = {}  # hold id -> window
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def add(self, hold: FleetHold) -> None:
        """Renew ``hold`` (admitted as its model's probe) until it is discarded."""
        if self._pid != os.getpid():
            # A forked child: the parent's probes are the parent's to renew, and its lock
            # may have been held by the parent's renewal thread at the fork (copied
            # locked, with no thread to release it): a new one, before taking it.
            self._lock = threading.Lock()
            self._holds = {}
            self._thread = None
            self._pid = os.getpid()
        with self._lock:
            self._holds[hold.hold_id] = hold.window
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="techrevati-fleet-probe-beat", daemon=True
                )
                self._thread.start()

    def discard(self, hold_id: str) -> None:
        """The hold settled or was released: stop renewing it."""
        with self._lock:
            self._holds.pop(hold_id, None)

    def __contains__(self, hold_id: object) -> bool:
        with self._lock:
            return hold_id in self._holds

    def _run(self) -> None:
        me = threading.current_thread()
        stop = threading.Event()
        while True:
            stop.wait(self.period_s)
            with self._lock:
                if self._thread is not me:
                    return
                if not self._holds:
                    self._thread = None
                    return
                holds = list(self._holds.items())
            for hold_id, window in holds:
                try:
                    alive = self._store.beat(window=window, hold_id=hold_id, alive_ms=self.alive_ms)
                except self._store_errors:
                    # Missed once: the next period tries again (BEATS_MISSED allows for it).
                    _log.debug("fleet: renewing probe %s failed", hold_id, exc_info=True)
                    continue
                except Exception:
                    _log.exception("fleet: renewing probe %s failed", hold_id)
                    continue
                if not alive:
                    self.discard(hold_id)  # settled, released or expired meanwhile
