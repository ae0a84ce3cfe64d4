"""The Redis session store: shared sessions as fleet scopes keyed by an unguessable id.

A shared session is a :class:`~.limits.FleetLimits` scope with one unending
window and the session's own cap and budget, so every process reserves,
settles and releases through the same atomic scripts (and leases) as fleet
limits. The scope's name is a hash of the session id, so errors, logs and spans
that name the scope never reveal the id that grants access to it; metric labels
name the parent's role only (one series per role, not per session).

Beside the scope, one small hash (``<prefix>:{<scope>}:meta``) holds what a child
process needs to rebuild the level (cap, budget, failure mode) and to name its
parent (role, conversation id), and a counter of the remote sessions opened
under it. Both expire at close + ``lease_s``, as the scope's keys do.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import threading
import time
from typing import Any, cast

from ..telemetry import semconv as sc
from ..telemetry.calls.metrics import fleet_scopes, instruments_for
from ..telemetry.limits.errors import FleetUnavailableError
from ..telemetry.limits.ledger import FleetLevel
from ..telemetry.limits.money import NANO
from ..telemetry.limits.remote import RemoteParent, SharedTotals, is_session_id
from .checks import text
from .limits import FleetLimits, OnStoreError

_log = logging.getLogger("techrevati.runtime.fleet")

#: How long a child process trusts what it looked up about a remote session.
LOOKUP_TTL_S = 5.0
#: How long a lookup the store failed is answered from that failure: every span of
#: a request (a server's, a database's) looks its session up, and each would wait
#: ``timeout_s`` for a frozen store again.
FAILED_LOOKUP_TTL_S = 1.0
#: How long a closed session's mark outlives its lease: sessions still open under it
#: (in any process) learn it closed at their next admission within that time.
CLOSED_MARK_MS = 86_400_000
#: How many shared sessions above one a lookup follows (a record names its nearest).
_ANCESTORS_MAX = 8
_LOOKUPS_MAX = 4096
_UNKNOWN_WARNED_MAX = 1024
#: A shared session's keys outlive a parent that never closes (killed) by this much.
OPEN_TTL_S = 7 * 86_400


def scope_of(session_id: str) -> str:
    """The store scope of a session id: a hash, so naming it reveals nothing usable."""
    return "s-" + hashlib.sha256(session_id.encode()).hexdigest()[:32]


class _SessionLevel(FleetLimits):
    """A fleet scope whose metric labels name the parent's role, not the (per-session) scope."""

    def __init__(self, client: Any, *, label: str, role: str, **options: Any) -> None:
        super().__init__(client, **options)
        #: The role of the session this level is (named by its refusals).
        self.shared_role = role
        # Not a fleet scope for the burn-rate gauges: one per session, with no window,
        # would add a series and a store read per export for every shared session.
        fleet_scopes.forget(self)
        self.label = label
        # One series per role: a scope per session would grow the metric series forever.
        self._attrs = {sc.FLEET_SCOPE: label}
        self._refusal_attrs = {
            kind: {sc.FLEET_SCOPE: label, sc.LIMIT_KIND: kind}
            for kind in (sc.LIMIT_FLEET_BUDGET, sc.LIMIT_FLEET_CALLS)
        }

    def shared_totals(self, fresh: bool = False) -> tuple[int | None, int, float | None, float]:
        """(max calls, calls, budget USD, spent USD) of the session's whole tree.

        As this process last saw them (at its last admission or booking), or,
        with ``fresh``, read from the store: one round trip, bounded by
        ``timeout_s``, and none while the store is known to be down (what was
        last seen then). Read in an agent's loop (``wrapping_up``), so it never
        waits for this process's settlements still queued for the store: those
        are in what was last seen, and the larger of the two counts.
        """
        calls, spent_nano, _ = self._seen
        if fresh and not self._health.known_down(self._loop_retry_s):
            try:
                _, _, stored_calls, stored_spent, _, _ = self._store.peek(
                    window_ms=self._window_ms, lease_ms=self._lease_ms
                )
            except self._store_errors as exc:
                self._health.failed(exc, "shared session totals")
            else:
                self._health.ok()
                calls, spent_nano = max(calls, stored_calls), max(spent_nano, stored_spent)
        return self.max_calls, calls, self.budget_usd, spent_nano / NANO


class RedisSessionStore:
    """Shared sessions kept in Redis; ``configure(session_store=...)`` builds one.

    Args:
        url_or_redis_client: a ``redis://`` URL or a ``redis.Redis`` client.
        lease_s: a reservation not settled within this long frees itself (a
            child killed mid-call); a closed session's keys expire this long
            after close, so late bookings still land once.
        timeout_s: bound on every Redis call.
        on_store_error: ``"refuse"`` (default) fails closed, ``"allow"`` runs
            calls on local limits, while the store does not answer.
        accept_remote: False for edge services: baggage from the network is
            then never trusted to name a session.

    Example::

        store = RedisSessionStore("redis://127.0.0.1:6379/0")
        configure(session_store=store)
    """

    def __init__(
        self,
        url_or_redis_client: Any,
        *,
        lease_s: float = 600.0,
        timeout_s: float = 0.5,
        on_store_error: OnStoreError = "refuse",
        accept_remote: bool = True,
        key_prefix: str = "techrevati:session",
    ) -> None:
        from . import store as store_module

        if on_store_error not in ("refuse", "allow"):
            raise ValueError(
                f"session store on_store_error must be 'refuse' or 'allow', got {on_store_error!r}"
            )
        if not isinstance(accept_remote, bool):
            # bool("no") is True: an edge service would go on trusting inbound baggage.
            raise TypeError(
                f"session store accept_remote must be True or False, got {accept_remote!r}"
            )
        if isinstance(url_or_redis_client, str):
            self._client = store_module.connect(url_or_redis_client, timeout_s)
        elif callable(getattr(url_or_redis_client, "register_script", None)):
            self._client = url_or_redis_client
        else:
            raise TypeError(
                "session_store needs a redis:// URL, a redis.Redis client or a "
                f"RedisSessionStore, got {type(url_or_redis_client).__name__}: "
                f"{url_or_redis_client!r}"
            )
        self._errors = store_module.STORE_ERRORS
        self.lease_s = float(lease_s)
        self.timeout_s = float(timeout_s)
        self.on_store_error: OnStoreError = on_store_error
        self.accept_remote = accept_remote
        self.key_prefix = key_prefix
        self._lock = threading.Lock()
        self._lookups: collections.OrderedDict[str, tuple[float, RemoteParent | None]] = (
            collections.OrderedDict()
        )
        #: The store's last failure to look a session up: (until, what it said).
        self._failed: tuple[float, str] | None = None
        self._warned: collections.OrderedDict[str, None] = collections.OrderedDict()

    # --- keys --------------------------------------------------------------------

    def _base(self, session_id: str) -> str:
        return f"{self.key_prefix}:{{{scope_of(session_id)}}}"

    def _level(
        self,
        session_id: str,
        *,
        role: str,
        budget_usd: float | None,
        max_calls: int | None,
        on_store_error: OnStoreError,
        lease_s: float | None = None,
    ) -> _SessionLevel:
        level = _SessionLevel(
            self._client,
            label=f"shared-session:{role}"[:128],
            role=role,
            scope=scope_of(session_id),
            budget_usd=budget_usd,
            max_calls=max_calls,
            window_s=None,
            lease_s=self.lease_s if lease_s is None else lease_s,
            on_store_error=on_store_error,
            timeout_s=self.timeout_s,
            key_prefix=self.key_prefix,
        )
        # Its admissions find the session closed (its mark, set at close), and then count
        # nothing and create no keys (which would outlive the session, with a fresh cap);
        # no write after the close creates one either. Its keys, with no window to end
        # them, live OPEN_TTL_S past their last use (a killed parent never closes).
        level._store.gate = self._base(session_id) + ":closed"
        level._store.keep_ms = OPEN_TTL_S * 1000
        return level

    # --- the parent's side -------------------------------------------------------

    def open_shared(
        self,
        session_id: str,
        *,
        role: str,
        conversation_id: str,
        budget_usd: float | None,
        max_calls: int | None,
        parent: str = "",
    ) -> FleetLevel | None:
        """Create the session's scope and the record children read; returns its level.

        ``parent`` is the id of the shared session it was opened under (in this
        process or another): a child's calls count against that one's limits too.
        """
        level = self._level(
            session_id,
            role=role,
            budget_usd=budget_usd,
            max_calls=max_calls,
            on_store_error=self.on_store_error,
        )
        meta = {
            "role": role[:256],
            "conversation_id": conversation_id[:64],
            "budget_usd": "" if budget_usd is None else repr(float(budget_usd)),
            "max_calls": "" if max_calls is None else str(int(max_calls)),
            "on_store_error": self.on_store_error,
            "lease_s": repr(self.lease_s),
            "parent": parent if is_session_id(parent) else "",
        }
        key = self._base(session_id) + ":meta"
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.hset(key, mapping=cast(Any, meta))
            pipe.expire(key, OPEN_TTL_S)
            pipe.execute()
        except self._errors as exc:
            if self.on_store_error == "refuse":
                raise FleetUnavailableError(level.scope, f"{type(exc).__name__}: {exc}") from None
            _log.warning(
                "shared session %s: store unreachable (%s); it runs on local limits only",
                role,
                type(exc).__name__,
            )
            return None
        return cast(FleetLevel, level)

    def close_shared(self, session_id: str, level: FleetLevel) -> SharedTotals | None:
        """The tree's spend and remote sessions at close; the keys expire after the lease."""
        base = self._base(session_id)
        lease_ms = max(1, round(self.lease_s * 1000))
        try:
            spent = level.usage().spent_usd if isinstance(level, FleetLimits) else 0.0
            pipe = self._client.pipeline(transaction=False)
            pipe.get(base + ":children")
            pipe.delete(base + ":meta")  # new lookups now find an unknown id
            for suffix in (":children", ":0", ":0:live", ":0:exp", ":learned"):
                pipe.pexpire(base + suffix, lease_ms)
            # Sessions still open under it find it closed at their next admission, and
            # count nothing and create nothing there (a record lost to a restart or an
            # eviction is no close: its counters are recreated, and that is reported).
            pipe.set(base + ":closed", "1", px=lease_ms + CLOSED_MARK_MS)
            children = pipe.execute()[0]
        except self._errors as exc:
            _log.warning("shared session: store unreachable at close (%s)", type(exc).__name__)
            return None
        return SharedTotals(spent, int(children or 0))

    # --- a child's side ----------------------------------------------------------

    def lookup(self, session_id: str, _depth: int = 0) -> RemoteParent | None:
        """The remote session ``session_id`` names, cached for LOOKUP_TTL_S; None if unknown.

        With the shared sessions it was opened under (``ancestors``), looked up
        the same way: a record names its nearest one (bounded depth).
        """
        if not is_session_id(session_id):
            self._unknown(session_id)
            return None
        now = time.monotonic()
        with self._lock:
            cached = self._lookups.get(session_id)
            if cached is not None and cached[0] > now:
                return cached[1]
            failed = self._failed
        if failed is not None and failed[0] > now:
            self._unreachable(session_id, failed[1])
            return None
        try:
            meta = self._client.hgetall(self._base(session_id) + ":meta")
        except self._errors as exc:
            said = f"{type(exc).__name__}: {exc}"
            self._failed = (time.monotonic() + FAILED_LOOKUP_TTL_S, said)
            if self.on_store_error != "refuse":
                _log.warning(
                    "shared session lookup: store unreachable (%s); running on local limits",
                    type(exc).__name__,
                )
            self._unreachable(session_id, said)
            return None
        self._failed = None
        found = self._parent(session_id, meta) if meta else None
        if found is not None:
            found = self._with_ancestors(found, meta, _depth)
        if found is None:
            self._unknown(session_id)
        with self._lock:
            self._lookups[session_id] = (now + LOOKUP_TTL_S, found)
            self._lookups.move_to_end(session_id)
            while len(self._lookups) > _LOOKUPS_MAX:
                self._lookups.popitem(last=False)
        return found

    def _with_ancestors(self, found: RemoteParent, raw: dict[Any, Any], depth: int) -> RemoteParent:
        """``found`` with the levels of the shared sessions it was opened under."""
        above_id = text(raw.get(b"parent", raw.get("parent", b"")))
        if not above_id or depth >= _ANCESTORS_MAX or above_id == found.session_id:
            return found
        above = self.lookup(above_id, depth + 1)  # (None once that one closed)
        if above is None:
            return found
        return dataclasses.replace(found, ancestors=(above.level, *above.ancestors))

    def _unreachable(self, session_id: str, said: str) -> None:
        """A lookup the store could not answer: refused unless ``on_store_error="allow"``."""
        if self.on_store_error == "refuse":
            raise FleetUnavailableError(scope_of(session_id), said)

    def _parent(self, session_id: str, raw: dict[Any, Any]) -> RemoteParent | None:
        meta = {text(k): text(v) for k, v in raw.items()}
        try:
            budget = float(meta["budget_usd"]) if meta.get("budget_usd") else None
            max_calls = int(meta["max_calls"]) if meta.get("max_calls") else None
            mode: OnStoreError = "allow" if meta.get("on_store_error") == "allow" else "refuse"
            role = meta.get("role", "")
            # The parent decides how long a dead child's reservation may hold its budget.
            lease = float(meta["lease_s"]) if meta.get("lease_s") else self.lease_s
            level = self._level(
                session_id,
                role=role,
                budget_usd=budget,
                max_calls=max_calls,
                on_store_error=mode,
                lease_s=lease,
            )
        except (KeyError, ValueError, TypeError):
            _log.warning("shared session record is malformed; ignoring it")
            return None
        return RemoteParent(
            cast(FleetLevel, level), role, meta.get("conversation_id", ""), session_id
        )

    def _unknown(self, session_id: str) -> None:
        instruments_for(None).remote_unknown.add(1)
        with self._lock:
            if session_id in self._warned:
                return
            self._warned[session_id] = None
            while len(self._warned) > _UNKNOWN_WARNED_MAX:
                self._warned.popitem(last=False)
        _log.warning(
            "a request named a shared session this store does not know (closed, expired or "
            "forged); its calls run on local limits and nothing is charged to it. The usual "
            "cause: the session that sent it closed before this request or task ran (a "
            "Celery task queued with .delay() inside `with agent_session(..., shared=True)`, "
            "whose block exited without waiting for it). Keep the shared session open until "
            "its work is done: wait for the tasks' results (or the responses) inside its block"
        )

    def child_opened(self, parent: RemoteParent) -> None:
        """Count a session opened in this process under the remote one (best effort)."""
        level = parent.level
        scope = getattr(level, "scope", "")
        try:
            pipe = self._client.pipeline(transaction=False)
            key = f"{self.key_prefix}:{{{scope}}}:children"
            pipe.incr(key)
            pipe.expire(key, OPEN_TTL_S)
            pipe.execute()
        except self._errors:
            _log.debug("shared session: could not count a remote child", exc_info=True)

    def __repr__(self) -> str:
        return f"RedisSessionStore(accept_remote={self.accept_remote}, lease_s={self.lease_s})"


__all__ = ["LOOKUP_TTL_S", "RedisSessionStore", "scope_of"]
