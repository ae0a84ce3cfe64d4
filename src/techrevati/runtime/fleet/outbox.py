"""Finishes that still have to reach Redis, and the one thread that delivers them.

A settlement (or release) that cannot be written now (Redis is down, or the
caller is an event loop that must not wait) goes into its scope's ``Outbox``.
One background thread per process (``Flusher``) delivers every outbox while
Redis answers again, with a growing pause between attempts while it does not;
``flush_all`` delivers what it can at normal exit (``atexit``) and from the
SIGTERM handler, bounded by a deadline.

Two bounds, so an outage's refusals can never push out money: settlements
(``SETTLEMENTS_MAX`` per scope) and clean-ups of admissions whose reply was
lost (``CLEANUPS_MAX``). Every finish is idempotent per hold id in Redis, so a
retry books at most once. What a full outbox drops is logged once per scope
and kind and counted (``techrevati.fleet.dropped``).

An outbox holds the store, never the ``FleetLimits`` object, so a scope built
per request and dropped at once still has its settlements delivered.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..telemetry.calls.metrics import instruments_for
from ..telemetry.limits.ledger import late_fleet_bookings, wait_late_fleet_bookings
from ..telemetry.semconv import FLEET_FINISH, FLEET_SCOPE

_log = logging.getLogger("techrevati.runtime.fleet")

#: Settlements waiting per scope: at $0.001 a call, $100 of bookings.
SETTLEMENTS_MAX = 100_000
#: Clean-ups (releases of admissions whose reply never came) waiting per scope.
CLEANUPS_MAX = 10_000
#: Pause between delivery attempts while Redis does not answer (grows to the max).
RETRY_MIN_S = 0.05
RETRY_MAX_S = 2.0
#: How long normal exit waits for pending settlements, at most.
EXIT_FLUSH_S = 2.0

KIND_SETTLEMENT = "settlement"
KIND_CLEANUP = "cleanup"


@dataclass(slots=True)
class Finish:
    """One settle / release / abandon of a hold, as the FINISH script takes it."""

    window: int
    hold_id: str
    model: str
    mode: str
    actual_nano: int


#: Delivers one finish; returns True when it booked (False: already finished),
#: raises a store error when Redis cannot be reached.
Deliver = Callable[[Finish], bool]


class Outbox:
    """One scope's undelivered finishes, in two bounded queues.

    Example::

        box = Outbox("tenant-42", deliver, store_errors=(OSError,))
        box.put(Finish(0, "ab12", "gpt-4o", "settle", 1_700_000))
        box.drain(time.monotonic() + 1.0)
    """

    def __init__(
        self,
        scope: str,
        deliver: Deliver,
        *,
        store_errors: tuple[type[BaseException], ...],
        on_delivered: Callable[[Finish, bool], None] | None = None,
        on_store_error: Callable[[BaseException, str], None] | None = None,
    ) -> None:
        self.scope = scope
        self._deliver = deliver
        self._store_errors = store_errors
        self._on_delivered = on_delivered
        self._on_store_error = on_store_error
        self._lock = threading.Lock()
        self._settlements: collections.deque[Finish] = collections.deque()
        self._cleanups: collections.deque[Finish] = collections.deque()
        self._dropped_logged: set[str] = set()
        self.dropped = {KIND_SETTLEMENT: 0, KIND_CLEANUP: 0}
        #: Held while one thread delivers: finishes of one scope go out one at a time.
        self._delivering = threading.Lock()
        #: The finish out of its queue while it is being delivered (still pending), and
        #: whether it is a settlement.
        self._sending: Finish | None = None
        self._sending_settlement = False

    def __len__(self) -> int:
        return len(self._settlements) + len(self._cleanups) + (self._sending is not None)

    @property
    def settlements(self) -> int:
        """Settlements (and releases of holds) waiting, the one being delivered included."""
        with self._lock:
            return len(self._settlements) + self._sending_settlement

    @property
    def cleanups(self) -> int:
        """Clean-ups of lost admissions waiting."""
        return len(self._cleanups)

    def put(self, finish: Finish, *, cleanup: bool = False) -> None:
        """Queue ``finish`` and wake the flusher; a full queue drops its oldest entry."""
        queue, bound, kind = (
            (self._cleanups, CLEANUPS_MAX, KIND_CLEANUP)
            if cleanup
            else (self._settlements, SETTLEMENTS_MAX, KIND_SETTLEMENT)
        )
        dropped: Finish | None = None
        with self._lock:
            if len(queue) >= bound:
                dropped = queue.popleft()
            queue.append(finish)
        if dropped is not None:
            self._dropped(kind, dropped, "the queue is full")
        FLUSHER.wake(self)

    def drain(self, deadline: float) -> bool:
        """Deliver until empty (True), the store fails, or ``deadline`` (monotonic) passes."""
        if not self._delivering.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return False
        try:
            while time.monotonic() < deadline:
                with self._lock:
                    if self._settlements:
                        queue = self._settlements
                    elif self._cleanups:
                        queue = self._cleanups
                    else:
                        return True
                    finish = queue.popleft()
                    self._sending = finish
                    self._sending_settlement = queue is self._settlements
                try:
                    booked = self._deliver(finish)
                except self._store_errors as exc:
                    with self._lock:
                        queue.appendleft(finish)
                        self._sending, self._sending_settlement = None, False
                    if self._on_store_error is not None:
                        self._on_store_error(exc, finish.mode)
                    return False
                except Exception:
                    self._sending, self._sending_settlement = None, False
                    kind = KIND_CLEANUP if queue is self._cleanups else KIND_SETTLEMENT
                    _log.debug("fleet %s failed", kind, exc_info=True)
                    self._dropped(kind, finish, "the store rejected it")
                    continue
                self._sending, self._sending_settlement = None, False
                if self._on_delivered is not None:
                    self._on_delivered(finish, booked)
            return not self
        finally:
            self._delivering.release()

    def _dropped(self, kind: str, finish: Finish, why: str) -> None:
        self.dropped[kind] += 1
        try:
            instruments_for(None).fleet_dropped.add(
                1, {FLEET_SCOPE: self.scope, FLEET_FINISH: kind}
            )
        except Exception:  # telemetry never breaks the agent
            _log.debug("fleet dropped metric failed", exc_info=True)
        if kind in self._dropped_logged:
            _log.debug("fleet scope %r: dropped a %s (%s)", self.scope, kind, why)
            return
        self._dropped_logged.add(kind)
        lost = (
            f"${finish.actual_nano / 1e9:.6f} of spend is not booked fleet-wide"
            if kind == KIND_SETTLEMENT
            else "an admission whose reply was lost stays counted until its lease ends"
        )
        _log.error(
            "fleet scope %r: dropped a pending %s (%s): %s; "
            "further drops are counted in techrevati.fleet.dropped",
            self.scope,
            kind,
            why,
            lost,
        )


class Flusher:
    """The one background thread that delivers every outbox with work waiting.

    It holds outboxes strongly only while they have work, so nothing else is kept
    alive. Example::

        FLUSHER.wake(box)      # deliver soon
        flush_all(2.0)         # at exit: deliver what answers within 2 s
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._waiting: dict[int, Outbox] = {}
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def wake(self, box: Outbox) -> None:
        with self._lock:
            self._waiting[id(box)] = box
            if self._thread is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._run, name="techrevati-fleet-flusher", daemon=True
                )
                self._thread.start()
        self._event.set()

    def pending(self) -> list[Outbox]:
        with self._lock:
            return list(self._waiting.values())

    def _run(self) -> None:
        pause = RETRY_MIN_S
        failed = False
        while True:
            if failed:
                # Redis did not answer: new work does not shorten the pause (an
                # outage's refusals would otherwise retry on every call).
                time.sleep(pause)
            else:
                self._event.wait(None if not self.pending() else pause)
            self._event.clear()
            failed = False
            for box in self.pending():
                # Each drain is bounded: one slow scope cannot hold the others for long.
                if box.drain(time.monotonic() + 1.0):
                    with self._lock:
                        if not box:
                            self._waiting.pop(id(box), None)
                else:
                    failed = True
            pause = min(pause * 2, RETRY_MAX_S) if failed else RETRY_MIN_S

    def flush_all(self, timeout_s: float) -> bool:
        """Deliver every waiting finish within ``timeout_s``; True when all went out."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        # Late bookings first: what they cannot deliver lands in an outbox below.
        done = wait_late_fleet_bookings(deadline)
        for box in self.pending():
            if box.drain(deadline):
                with self._lock:
                    if not box:
                        self._waiting.pop(id(box), None)
            else:
                done = False
        return done


FLUSHER = Flusher()


def flush_all(timeout_s: float = EXIT_FLUSH_S) -> bool:
    """Deliver every scope's pending settlements, bounded by ``timeout_s``.

    Runs at normal exit and from the SIGTERM handler; safe to call any time.
    Returns True when nothing is left waiting.

    Example::

        from techrevati.runtime.fleet.outbox import flush_all
        flush_all(1.0)
    """
    try:
        done = FLUSHER.flush_all(timeout_s)
    except Exception:  # never break an exit
        _log.debug("fleet flush failed", exc_info=True)
        return False
    if not done:
        left = sum(box.settlements for box in FLUSHER.pending())
        if left:
            _log.error(
                "fleet: %d settlement(s) could not reach Redis within %.1f s and are not booked",
                left,
                timeout_s,
            )
    return done


def _flush_at_exit() -> None:
    if FLUSHER.pending() or late_fleet_bookings():
        flush_all(EXIT_FLUSH_S)


atexit.register(_flush_at_exit)


def _reset_after_fork() -> None:
    # A forked child must not deliver its parent's finishes a second time (they
    # are idempotent, but the parent owns them), nor share its thread state.
    global FLUSHER
    FLUSHER = Flusher()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
