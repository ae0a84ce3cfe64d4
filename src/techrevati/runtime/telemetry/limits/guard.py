"""The second enforcement point: a refused call never leaves the client.

The limits processor refuses a model call by raising in ``on_start``. Most
instrumentations let that exception reach the caller, so the request is never
sent. Two popular producers do not: the Anthropic SDK's own tracing starts its
span inside the client's ``request`` method and swallows any exception from
span start, and the OpenAI Agents SDK calls its trace processors (through
which OpenInference starts spans) inside a ``try/except``. Either way the
refusal is logged and lost, and the request goes out.

So the processor also hands the refusal to :func:`note_refusal`, and the
guard, patched into the ``openai`` and ``anthropic`` clients' request path
(``BaseClient._build_request``, the first step of every attempt of the sync
and async clients), raises it before any byte is sent. An httpx transport or
event hook would not do: both clients catch exceptions from their HTTP send,
retry, and raise ``APIConnectionError`` instead. Patching ``request`` itself
would not do either: the Anthropic SDK starts its span inside ``request``,
and OpenInference wraps ``OpenAI.request`` on the subclass, around the
original.

Which request a refusal belongs to: the one made by an SDK call that was
already running when the refusal was noted. ``note_refusal`` keeps the SDK
frames (``openai``, ``anthropic``, ``agents`` modules) on the stack at that
moment; the guard raises only if one of those frames is still on the stack of
the request being sent. A refusal that reached its caller normally has
unwound those frames, so it can never hit a later, unrelated request; and a
refusal is raised at most once. The pending refusal lives in a context
variable, so threads and asyncio tasks never see each other's.

Example::

    from techrevati.runtime.telemetry.limits.guard import install_guard

    install_guard()          # or configure(instrument=["openai", "anthropic"])
"""

from __future__ import annotations

import functools
import importlib
import logging
import sys
import threading
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from types import FrameType
from typing import Any

__all__ = ["GUARDED_PACKAGES", "install_guard", "is_installed", "note_refusal", "uninstall_guard"]

#: Client packages whose request method the guard patches.
GUARDED_PACKAGES = ("openai", "anthropic")
# Packages whose frames mark "an SDK call under way" (the Agents SDK calls the openai client).
_SDK_ROOTS = frozenset({"openai", "anthropic", "agents"})
# Deep enough for any real call stack; bounds the walk on pathological recursion.
_MAX_DEPTH = 400
_MARK = "__techrevati_guard__"
# Every attempt of both clients (sync and async, each retry) builds its HTTP
# request here first, outside the try that turns send errors into
# APIConnectionError, and after any span the SDK or an instrumentation started
# around ``request`` (the Anthropic SDK starts its own inside ``request``;
# OpenInference wraps ``OpenAI.request`` on the subclass).
_METHOD = "_build_request"
_log = logging.getLogger("techrevati.runtime.telemetry")


@dataclass(slots=True)
class _Pending:
    error: BaseException
    # Strong references: while held, no other frame can reuse their ids.
    frames: tuple[FrameType, ...]


_PENDING: ContextVar[_Pending | None] = ContextVar("techrevati_pending_refusal", default=None)


def _sdk_frames(frame: FrameType | None) -> tuple[FrameType, ...]:
    found: list[FrameType] = []
    depth = 0
    while frame is not None and depth < _MAX_DEPTH:
        module = frame.f_globals.get("__name__")
        if isinstance(module, str) and module.partition(".")[0] in _SDK_ROOTS:
            found.append(frame)
        frame = frame.f_back
        depth += 1
    return tuple(found)


def note_refusal(error: BaseException) -> None:
    """Remember a refusal the limits processor is about to raise in ``on_start``.

    The processor calls this right before raising. If an SDK call is under way
    and swallows the exception, the guard raises ``error`` when that call
    sends its request. Outside any SDK call it records nothing.

    Example::

        >>> note_refusal(RuntimeError("over budget"))   # no SDK call on the stack
        >>> _PENDING.get() is None
        True
    """
    if not isinstance(error, BaseException):
        raise TypeError(f"note_refusal() needs an exception, got {error!r}")
    frames = _sdk_frames(sys._getframe(1))
    _PENDING.set(_Pending(error, frames) if frames else None)


def check_pending(frame: FrameType | None = None) -> None:
    """Raise the refusal noted for the SDK call that ``frame`` runs in, if any.

    Called by the patched request methods; a refusal is raised once, and one
    whose SDK call has ended is dropped.
    """
    pending = _PENDING.get()
    if pending is None:
        return
    _PENDING.set(None)
    held = {id(f) for f in pending.frames}
    current: FrameType | None = frame if frame is not None else sys._getframe(1)
    depth = 0
    while current is not None and depth < _MAX_DEPTH:
        if id(current) in held:
            raise pending.error
        current = current.f_back
        depth += 1


def _guard(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        check_pending(sys._getframe())
        return method(*args, **kwargs)

    setattr(guarded, _MARK, method)
    return guarded


def _target(package: str) -> type | None:
    """The client base class whose request builder the guard patches, if installed."""
    try:
        module = importlib.import_module(f"{package}._base_client")
    except ImportError:
        return None
    cls = getattr(module, "BaseClient", None)
    if isinstance(cls, type) and callable(cls.__dict__.get(_METHOD)):
        return cls
    _log.warning(
        "%s is installed but has no BaseClient.%s: its requests are not guarded", package, _METHOD
    )
    return None


_install_lock = threading.Lock()


def install_guard(packages: Iterable[str] = GUARDED_PACKAGES) -> tuple[str, ...]:
    """Patch the request method of the installed ``openai``/``anthropic`` clients.

    Idempotent. Returns the packages that are guarded after the call (a
    package that is not installed is skipped).

    Example::

        install_guard()             # openai and anthropic, whichever is installed
        install_guard(["openai"])   # just one
    """
    names = tuple(packages)
    for name in names:
        if name not in GUARDED_PACKAGES:
            raise ValueError(
                f"install_guard(): unknown client package {name!r}; choose from {GUARDED_PACKAGES}"
            )
    guarded: list[str] = []
    with _install_lock:
        for name in names:
            cls = _target(name)
            if cls is None:
                continue
            method = cls.__dict__[_METHOD]
            if not hasattr(method, _MARK):
                setattr(cls, _METHOD, _guard(method))
            guarded.append(name)
    return tuple(guarded)


def is_installed(package: str) -> bool:
    """True if the guard is patched into ``package``'s clients."""
    cls = _target(package)
    return cls is not None and hasattr(cls.__dict__[_METHOD], _MARK)


def uninstall_guard() -> None:
    """Undo :func:`install_guard` (for tests and clean shutdowns)."""
    with _install_lock:
        for name in GUARDED_PACKAGES:
            cls = _target(name)
            if cls is None:
                continue
            original = getattr(cls.__dict__[_METHOD], _MARK, None)
            if original is not None:
                setattr(cls, _METHOD, original)
    _PENDING.set(None)
