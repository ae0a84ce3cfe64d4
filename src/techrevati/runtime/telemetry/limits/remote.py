"""Shared sessions across processes: the session id in W3C baggage, and the level it names.

A session opened with ``shared=True`` gets one more level in its ledger chain,
kept in the session store that ``configure(session_store=...)`` installed, and
its 128-bit random id travels in W3C baggage under :data:`BAGGAGE_KEY` while it
is current. OpenTelemetry's HTTP, gRPC and Celery instrumentations (and
``opentelemetry.propagate.inject``) carry that baggage to other services.

In another process, a model call or a new session with no session of its own
whose OpenTelemetry context carries the baggage is a child of the remote
session: it reserves at that level, so the remote session's cap and budget
admit it, and its spend rolls up into it. Only the id travels; limits and spend
stay in the store, and an id the store does not know is ignored.

This module holds what the call path needs: the store protocol, reading the
baggage, and one root ledger per remote session. The Redis store itself is
``techrevati.runtime.fleet.sessions``.
"""

from __future__ import annotations

import collections
import re
import secrets
import threading
from dataclasses import dataclass
from typing import Protocol

from opentelemetry import baggage, propagate
from opentelemetry.context import Context

from ...caller import warn_user
from ...usage_tracking import UsageTracker
from .errors import FleetUnavailableError
from .ledger import FleetLevel, Ledger, LimitListener

#: The W3C baggage entry that carries a shared session's id.
BAGGAGE_KEY = "techrevati.session"

_ID = re.compile(r"[0-9a-f]{32}")
_ROOTS_MAX = 1024


@dataclass(frozen=True, slots=True)
class RemoteParent:
    """A shared session of another process, as a child process sees it."""

    #: The store's level for the session (its cap and budget, kept in the store).
    level: FleetLevel
    #: The parent's role and ``gen_ai.conversation.id``, for the child's span.
    role: str
    conversation_id: str
    #: Its id, and the levels of the shared sessions it was opened under, nearest
    #: first: a call counts against every one of them.
    session_id: str = ""
    ancestors: tuple[FleetLevel, ...] = ()


@dataclass(frozen=True, slots=True)
class SharedTotals:
    """What a shared session's tree spent and how many remote sessions it had, at close."""

    spent_usd: float
    remote_children: int


class SessionStore(Protocol):
    """Where shared sessions live (``techrevati.runtime.fleet.sessions.RedisSessionStore``)."""

    accept_remote: bool

    def open_shared(
        self,
        session_id: str,
        *,
        role: str,
        conversation_id: str,
        budget_usd: float | None,
        max_calls: int | None,
        parent: str = "",
    ) -> FleetLevel | None: ...

    def lookup(self, session_id: str) -> RemoteParent | None: ...

    def child_opened(self, parent: RemoteParent) -> None: ...

    def close_shared(self, session_id: str, level: FleetLevel) -> SharedTotals | None: ...


_store: list[SessionStore] = []
#: Told of every refusal a remote session's root ledger makes (no local session
#: span carries it): ``configure`` gives it a span of its own.
_on_limit: list[LimitListener] = []
_roots: collections.OrderedDict[int, tuple[RemoteParent, Ledger]] = collections.OrderedDict()
_roots_lock = threading.Lock()


def install_store(store: SessionStore | None, on_limit: LimitListener | None = None) -> None:
    """Install (or remove, with None) the process's session store.

    ``on_limit`` is called with each refusal of a call made outside every local
    session under a remote one (``Ledger.on_limit``).
    """
    _store.clear()
    _on_limit.clear()
    with _roots_lock:
        _roots.clear()
    if store is not None:
        _store.append(store)
        if on_limit is not None:
            _on_limit.append(on_limit)


def session_store() -> SessionStore | None:
    """The installed session store, if any."""
    return _store[0] if _store else None


def is_session_id(value: str) -> bool:
    """True for what :func:`new_session_id` makes (32 lowercase hex digits)."""
    return _ID.fullmatch(value) is not None


def new_session_id() -> str:
    """128 random bits, hex: unguessable, so a forged id charges nothing."""
    return secrets.token_hex(16)


def with_session(context: Context, session_id: str) -> Context:
    """``context`` carrying ``session_id`` in its W3C baggage."""
    return baggage.set_baggage(BAGGAGE_KEY, session_id, context)


#: The global propagators already checked, each looked at once (held: a few objects
#: for the process's life, so that no later one is taken for one of them by its id).
_checked_propagators: list[object] = []


def check_propagator(what: str) -> None:
    """Warn once when the global propagator does not carry baggage between processes.

    A shared session's id travels only in baggage: with ``OTEL_PROPAGATORS``
    set to ``tracecontext`` or ``b3`` alone, say, nothing carries it between
    services, and the calls of the services it calls are silently outside its
    limits. Tried for real, once per propagator: an id put in the baggage of a
    context is injected into headers and extracted back (W3C ``baggage``,
    Jaeger's ``uberctx-*`` and the like all pass). ``what`` names the side that
    found it out.
    """
    textmap = propagate.get_global_textmap()
    if any(seen is textmap for seen in _checked_propagators):
        return
    _checked_propagators.append(textmap)
    probe = "0" * 32
    try:
        headers: dict[str, str] = {}
        textmap.inject(headers, context=baggage.set_baggage(BAGGAGE_KEY, probe))
        carried = baggage.get_baggage(BAGGAGE_KEY, textmap.extract(headers)) == probe
    except Exception:
        return  # a propagator that fails on its own: not ours to judge
    if carried:
        return
    warn_user(
        f"{what} needs its id to travel between services in OpenTelemetry baggage, and "
        f"the global propagator ({type(textmap).__name__}, fields "
        f"{sorted(textmap.fields)}) does not carry baggage: calls made by the services "
        "it reaches are not counted against its limits. Add 'baggage' to "
        "OTEL_PROPAGATORS (its default is 'tracecontext,baggage')",
        RuntimeWarning,
    )


def remote_parent(context: Context | None) -> RemoteParent | None:
    """The remote shared session ``context``'s baggage names, when the store knows it."""
    if not _store:
        if _no_store_warned or baggage.get_baggage(BAGGAGE_KEY, context) is None:
            return None
        _warn_no_store()
        return None
    store = _store[0]
    if not store.accept_remote:
        return None
    value = baggage.get_baggage(BAGGAGE_KEY, context)
    if value is None:
        return None
    # Baggage comes from the network: the store refuses anything but an id of ours.
    # A W3C baggage member may carry properties after the value (``id;p=1``).
    return store.lookup(str(value).partition(";")[0].strip()[:64])


_no_store_warned = False


def _warn_no_store() -> None:
    """A call names a shared session but this process has no store to find it in: say so once."""
    global _no_store_warned
    _no_store_warned = True
    warn_user(
        "this call's context names a shared session of another process (baggage "
        f"{BAGGAGE_KEY!r}), but this process has no session store: the call is not "
        "counted against that session's limits. Call configure(session_store=...) in "
        "every process the shared session's work reaches",
        RuntimeWarning,
    )


def remote_root(context: Context | None, above: Ledger | None) -> Ledger | None:
    """The root ledger for calls outside any local session under a remote session."""
    parent = remote_parent(context)
    if parent is None:
        return None
    return root_for(parent, above)


@dataclass(slots=True)
class Unreachable:
    """The level of a remote session its store could not look up when a session opened.

    The session opens all the same (a request that makes no model call must not
    fail for it); each model call under it is refused, as the store's level
    itself refuses a call it cannot count (``on_store_error="refuse"``).
    """

    scope: str
    reason: str
    budget_usd: float | None = None

    def reserve(self, model: str, expected_usd: float) -> object:
        raise FleetUnavailableError(self.scope, self.reason)

    async def areserve(self, model: str, expected_usd: float) -> object:
        raise FleetUnavailableError(self.scope, self.reason)

    def settle(self, hold: object, actual_usd: float) -> None:
        return None

    def release(self, hold: object, *, ran: bool = True) -> None:
        return None


def unreachable_root(error: FleetUnavailableError, above: Ledger | None) -> Ledger:
    """The root ledger of a session opened under a remote one its store did not answer for."""
    ledger = Ledger(UsageTracker(retain_turns=0), fleet=(Unreachable(error.scope, error.reason),))
    ledger.attach(above)
    return ledger


def root_for(parent: RemoteParent, above: Ledger | None) -> Ledger:
    """One ledger per remote session (bounded): its store level, under ``above`` (the
    process root of ``configure(fleet=...)``, if any)."""
    key = id(parent.level)
    with _roots_lock:
        found = _roots.get(key)
        if found is not None and found[0].level is parent.level:
            _roots.move_to_end(key)
            return found[1]
        ledger = Ledger(UsageTracker(retain_turns=0), fleet=(parent.level, *parent.ancestors))
        ledger.on_limit = _on_limit[0] if _on_limit else None
        ledger.attach(above)
        _roots[key] = (parent, ledger)
        while len(_roots) > _ROOTS_MAX:
            _roots.popitem(last=False)
        return ledger


__all__ = [
    "BAGGAGE_KEY",
    "RemoteParent",
    "SessionStore",
    "SharedTotals",
    "install_store",
    "is_session_id",
    "new_session_id",
    "remote_parent",
    "remote_root",
    "root_for",
    "session_store",
    "unreachable_root",
    "with_session",
]
