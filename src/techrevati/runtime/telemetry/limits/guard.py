"""The client guard: a door at the ``openai`` / ``anthropic`` clients' request path.

It is on by default wherever limits exist (a session with a cap or a budget, a
fleet scope): :func:`ensure_guard` patches the clients already imported and an
import hook patches the others when they are imported, whatever the order;
never twice; ``configure(guard=False)`` opts out. It does two jobs.

**A full door** (``door.py``): every model request is a call. If a model span
of this request is already open on this thread or task (our turn, or another
instrumentation's span), the request is that call; otherwise the guard admits
it itself against the same ledger chain and books the usage it reads from the
response, so a bare client, or a tool calling a client directly, is capped,
budgeted and priced, and goes through its session's circuit breaker (told how
the request ended when the SDK's request method returns or raises, all its
attempts one call). A refused request raises before any byte is sent.

**A relay for refusals that producers swallow.** The limits processor refuses
a model call by raising in ``on_start``; most instrumentations let that reach
the caller. The Anthropic SDK's own tracing starts its span inside the
client's ``request`` method and swallows any exception from span start, and
the OpenAI Agents SDK calls its trace processors (through which OpenInference
starts spans) inside a ``try/except``. So the processor also hands the refusal
to :func:`note_refusal`, and the guard raises it before the request is sent.

Where: ``BaseClient._build_request``, the first step of every attempt of the
sync and async clients, outside the ``try`` that turns send errors into
``APIConnectionError`` (an httpx hook would lose our error to that), and after
any span an SDK or instrumentation started around ``request`` (patching
``request`` itself would miss both the Anthropic SDK's span, started inside it,
and OpenInference's wrapper of ``OpenAI.request`` on the subclass). Responses
are read at ``_process_response`` (streams: their chunks, as the caller reads
them).

**The fleet's door for coroutines.** A model span of another instrumentation
that starts on an event loop is admitted at the local levels only: asking the
fleet scopes is a Redis round trip, which must not run on the loop. The async
client's ``request`` (and, where the SDK has one, ``_attempt_request``, inside
which the Anthropic SDK's own span starts) awaits that reservation first, its
I/O on the fleet's threads, so a refusal still stops the request before it is
sent and a frozen Redis stalls only the coroutines that need it
(:func:`awaits_fleet` tells the processor when a guarded client will do so).
A request the guard admits itself in an async client (no span announced it)
is admitted at the local levels when it is built, and the client's
``_prepare_request`` (awaited right after, before sending; the one the client
class really runs, wrapped at its first request) awaits its fleet scopes.

Which request a relayed refusal belongs to: the one made by an SDK call that
was already running when the refusal was noted. ``note_refusal`` keeps the SDK
frames (``openai``, ``anthropic``, ``agents`` modules) on the stack at that
moment; the guard raises only if one of those frames is still on the stack of
the request being sent. A refusal that reached its caller normally has
unwound those frames, so it can never hit a later, unrelated request; and a
refusal is raised at most once. The pending refusal lives in a context
variable, so threads and asyncio tasks never see each other's.

Example::

    from techrevati.runtime.telemetry.limits.guard import install_guard

    install_guard()   # only to guard clients outside any limits; limits install it
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.abc
import importlib.machinery
import inspect
import logging
import re
import sys
import threading
import types
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from types import FrameType
from typing import Any

from . import door, membership, unanswered
from .door import _IN_FLIGHT, IN_REQUEST, InRequest

__all__ = [
    "GUARDED_PACKAGES",
    "awaits_fleet",
    "disable_guard",
    "enable_guard",
    "ensure_guard",
    "install_guard",
    "is_installed",
    "note_refusal",
    "uninstall_guard",
]

#: Client packages whose request method the guard patches.
GUARDED_PACKAGES = ("openai", "anthropic")
# Packages whose frames mark "an SDK call under way" (the Agents SDK calls the openai client;
# a LangChain chat model's invoke/generate frames enclose its callbacks, where LangChain
# instrumentations start their spans and LangChain swallows the refusal, and its request).
_SDK_ROOTS = frozenset({"openai", "anthropic", "agents", "langchain_core"})
# Deep enough for any real call stack; bounds the walk on pathological recursion.
_MAX_DEPTH = 400
_MARK = "__techrevati_guard__"
# Every attempt of both clients (sync and async, each retry) builds its HTTP
# request here first, outside the try that turns send errors into
# APIConnectionError, and after any span the SDK or an instrumentation started
# around ``request`` (the Anthropic SDK starts its own inside ``request``;
# OpenInference wraps ``OpenAI.request`` on the subclass).
_METHOD = "_build_request"
# Where both clients turn an HTTP response into the result (or a stream): read for usage.
_PROCESS = "_process_response"
# Where both clients wait before retrying an attempt (inside the except for its error).
_RETRY = "_sleep_for_retry"
# The async clients' request path, entered after an instrumentation's span (openai's
# ``request``) or per attempt after the SDK's own span (anthropic's ``_attempt_request``):
# where a span's deferred fleet reservation is awaited, before anything is sent.
_ASYNC_DOORS = ("request", "_attempt_request")
#: Packages whose async request path awaits deferred fleet reservations right now (kept
#: in ``membership``, which asks it too and sits below this module).
_AWAITING = membership.GUARDED_CLIENTS
# Awaited by the async clients right after ``_build_request``, before sending: where
# the fleet reservation of a request the guard admitted itself is awaited.
_PREPARE = "_prepare_request"
#: Client classes whose ``_prepare_request`` the guard wrapped (found at first use).
_PREPARED: list[type] = []
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


def _guard_build(
    method: Callable[..., Any], provider: str, asyn: type | None = None
) -> Callable[..., Any]:
    @functools.wraps(method)
    def guarded(self: Any, options: Any, *args: Any, **kwargs: Any) -> Any:
        if _PENDING.get() is not None:  # (asked inline: a refusal is rarely noted)
            check_pending(sys._getframe())
        # An async client whose _prepare_request awaits the fleet: a call admitted
        # here (on the loop) leaves its Redis round trip to that await.
        awaits = (
            asyn is not None
            and isinstance(self, asyn)
            and hasattr(getattr(type(self), _PREPARE, None), _MARK)
        )
        call = door.begin(options, provider, awaits)  # may raise the refusal: nothing is sent
        try:
            request = method(self, options, *args, **kwargs)
        except BaseException:
            if call is not None:
                door.fail(call)
            raise
        if call is not None:
            door.watch(request, call)
        return request

    setattr(guarded, _MARK, method)
    return guarded


def _guard_process(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        # (None asked inline: an instrumented call's request is usually not kept.)
        call = None if _IN_FLIGHT.get() is None else door.take(kwargs.get("options"))
        try:
            result = method(self, *args, **kwargs)
        except BaseException:
            if call is not None:
                door.fail(call, answered=True)  # a response came: reading it failed
            raise
        return result if call is None else door.answered(call, result)

    setattr(guarded, _MARK, method)
    return guarded


def _guard_aprocess(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = door.take(kwargs.get("options"))
        try:
            result = await method(self, *args, **kwargs)
        except BaseException:
            if call is not None:
                door.fail(call, answered=True)  # a response came: reading it failed
            raise
        return result if call is None else door.answered(call, result)

    setattr(guarded, _MARK, method)
    return guarded


def _guard_request(method: Callable[..., Any]) -> Callable[..., Any]:
    # A sync client's whole request (every attempt): where it ends answered or not.
    @functools.wraps(method)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        # ``unanswered.RequestRun`` written out: a context manager's object and its two
        # calls cost several microseconds a call where the client's code leaves ours cold.
        run = InRequest()
        token = IN_REQUEST.set(run)
        try:
            result = method(self, *args, **kwargs)
        except BaseException as error:
            unanswered.run_ended(_request_options(args, kwargs), error, run, token)
            raise
        unanswered.run_ended(_request_options(args, kwargs), None, run, token)
        return result

    setattr(guarded, _MARK, method)
    return guarded


def _request_options(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The request options of ``SyncAPIClient.request(cast_to, options, ...)``."""
    return args[1] if len(args) > 1 else kwargs.get("options")


def _guard_retry(method: Callable[..., Any]) -> Callable[..., Any]:
    # The SDK's backoff before a retry, inside its except for the failed attempt.
    @functools.wraps(method)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        unanswered.retrying(kwargs.get("options"), type(self).__module__.partition(".")[0])
        return method(self, *args, **kwargs)

    setattr(guarded, _MARK, method)
    return guarded


def _guard_aretry(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        unanswered.retrying(kwargs.get("options"), type(self).__module__.partition(".")[0])
        return await method(self, *args, **kwargs)

    setattr(guarded, _MARK, method)
    return guarded


def _guard_arequest(method: Callable[..., Any], outer: bool, provider: str) -> Callable[..., Any]:
    # outer: the SDK's whole request (every attempt), where it ends answered or not:
    # request(cast_to, options, ...); else _attempt_request(options, ...).
    at = 1 if outer else 0

    @functools.wraps(method)
    async def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        cls = type(self)
        if not hasattr(getattr(cls, _PREPARE, None), _MARK):
            _guard_prepare_of(cls)
        options = args[at] if len(args) > at else kwargs.get("options")
        await door.afleet(options, provider)  # may raise the fleet's refusal: nothing is sent
        if not outer:
            return await method(self, *args, **kwargs)
        with unanswered.RequestRun(options, provider):
            return await method(self, *args, **kwargs)

    setattr(guarded, _MARK, method)
    return guarded


def _guard_aprepare(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        request = args[0] if args else kwargs.get("request")
        await door.arequest_fleet(request)  # may raise the fleet's refusal: nothing is sent
        prepared = await method(self, *args, **kwargs)
        unanswered.sending(request, type(self).__module__.partition(".")[0])
        return prepared

    setattr(guarded, _MARK, method)
    return guarded


def _guard_prepare_of(cls: type) -> None:
    """Wrap the ``_prepare_request`` an async client class resolves to, once.

    Clients override it (``AsyncOpenAI`` signs requests there) without calling
    the base, so the one an instance really runs is wrapped, found when the
    class first sends a request; ``uninstall_guard`` restores it.
    """
    with _install_lock:
        owner = next((k for k in cls.__mro__ if _PREPARE in k.__dict__), None)
        if owner is None:
            return
        method = owner.__dict__[_PREPARE]
        if hasattr(method, _MARK) or not inspect.iscoroutinefunction(method):
            return
        setattr(owner, _PREPARE, _guard_aprepare(method))
        _PREPARED.append(owner)


def awaits_fleet(provider: str) -> bool:
    """True when a model call of ``provider`` goes through a client whose async request
    path the guard wraps, so it awaits the call's fleet reservation before sending.

    Example::

        >>> awaits_fleet("cohere")
        False
    """
    if not _AWAITING:
        return False
    name = provider.lower()
    return any(package in name for package in _AWAITING)


#: Instrumentation scopes of a client's own request (one span per request the guard
#: sees, inside the client's request method): the official GenAI instrumentations,
#: OpenLLMetry's and OpenInference's of a guarded package, and the Anthropic SDK's own.
#: Not a framework's (the Agents SDK, LangChain, pydantic-ai), whose spans wrap more
#: than one request, nor a client's the guard does not wrap. (OpenInference's spans
#: name no provider at their start: the request they start in names it.)
_CLIENT_SCOPE = re.compile(
    r"(?:opentelemetry|openinference)\.instrumentation\.(?:genai\.)?"
    r"(?P<package>openai|anthropic)(?:_v2|\.v\d+)?"
)
_OWN_SCOPES = {"com.anthropic.sdk.python": "anthropic"}


def awaits_request(producer: str, provider: str) -> bool:
    """True when a model span of ``producer`` describes one request of a client whose
    async request path the guard wraps: the guard sees that request, and awaits
    before it is sent, so the span's admission may wait for it (``membership.WAITING``).

    Example::

        >>> awaits_request("some.framework", "openai")
        False
    """
    if not reads_request(producer):
        return False
    # (A span naming no provider at its start, OpenLLMetry's: its scope names the client.)
    return not provider or awaits_fleet(provider)


def reads_request(producer: str) -> bool:
    """True when a model span of ``producer`` describes one request of a client the guard
    wraps (``_CLIENT_SCOPE``): the guard reads that request before it is sent, so the
    span's call learns from it what its span may not say at its start, its model.

    Example::

        >>> reads_request("some.framework")
        False
    """
    if not _AWAITING:
        return False
    match = _CLIENT_SCOPE.fullmatch(producer)
    package = match.group("package") if match is not None else _OWN_SCOPES.get(producer)
    return package is not None and package in _AWAITING


def _targets(package: str) -> list[tuple[type, str, Callable[..., Any]]]:
    """(class, method name, patch) for each request-path method of an imported client package."""
    module = sys.modules.get(f"{package}._base_client")
    if module is None:
        try:
            module = importlib.import_module(f"{package}._base_client")
        except ImportError:
            return []
    base = getattr(module, "BaseClient", None)
    sync = getattr(module, "SyncAPIClient", None)
    asyn = getattr(module, "AsyncAPIClient", None)
    found: list[tuple[type, str, Callable[..., Any]]] = []
    if isinstance(base, type) and callable(base.__dict__.get(_METHOD)):
        klass = asyn if isinstance(asyn, type) else None
        found.append((base, _METHOD, lambda m: _guard_build(m, package, klass)))
    else:
        _log.warning(
            "%s is installed but has no BaseClient.%s: its requests are not guarded",
            package,
            _METHOD,
        )
        return []
    # Reading responses (a bare client is then priced); optional across SDK versions.
    for cls, wrap in ((sync, _guard_process), (asyn, _guard_aprocess)):
        if isinstance(cls, type) and callable(cls.__dict__.get(_PROCESS)):
            found.append((cls, _PROCESS, wrap))
    if isinstance(sync, type) and callable(sync.__dict__.get("request")):
        found.append((sync, "request", _guard_request))
    # The backoff before a retry: an attempt that timed out reading was sent, and billed.
    for cls, wrap in ((sync, _guard_retry), (asyn, _guard_aretry)):
        if isinstance(cls, type) and callable(cls.__dict__.get(_RETRY)):
            found.append((cls, _RETRY, wrap))
    if isinstance(asyn, type):
        for name in _ASYNC_DOORS:
            if inspect.iscoroutinefunction(asyn.__dict__.get(name)):
                outer = name == "request"
                found.append(
                    (asyn, name, functools.partial(_guard_arequest, outer=outer, provider=package))
                )
    # A client class with a ``request`` of its own, over the base class's: another
    # instrumentation's wrapper set on it (OpenInference's, on ``OpenAI.request`` and
    # ``AsyncOpenAI.request``, around the method as it found it). Set before the guard,
    # it shadowed the guarded base method: those clients' requests skipped the guard's
    # request door (no request bound before the first await, no fleet await, no probe
    # wait; 20 first AsyncOpenAI calls under five calls' budget all ran). Guarded too.
    awaited = functools.partial(_guard_arequest, outer=True, provider=package)
    roots: tuple[tuple[object, Callable[[Callable[..., Any]], Callable[..., Any]]], ...] = (
        (sync, _guard_request),
        (asyn, awaited),
    )
    for root, own_patch in roots:
        if isinstance(root, type):
            found.extend(
                (cls, "request", own_patch)
                for cls in _subclasses(root)
                if _shadows(cls.__dict__.get("request"), root is asyn)
            )
    return found


def _shadows(own: object, awaited: bool) -> bool:
    """Whether a client subclass's own ``request`` is another library's wrapper of the
    base method (it has ``__wrapped__``; a coroutine function for an async client):
    guarded as the base is. A subclass's own override calling ``super().request``
    is not: it runs inside the guarded base method already."""
    inner = getattr(own, "__wrapped__", None)
    if inner is None or not callable(own):
        return False
    return not awaited or inspect.iscoroutinefunction(inner)


def _subclasses(root: type) -> list[type]:
    """Every subclass of ``root`` imported now, at any depth."""
    found: list[type] = []
    todo: list[type] = list(root.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls not in found:
            found.append(cls)
            todo.extend(cls.__subclasses__())
    return found


_install_lock = threading.RLock()
#: ``configure(guard=False)`` was asked: the guard is not installed by default.
_disabled = False
#: ``ensure_guard`` ran (the guard is installed, or will be when a client is imported).
_ensured = False


def install_guard(packages: Iterable[str] = GUARDED_PACKAGES) -> tuple[str, ...]:
    """Patch the request path of the installed ``openai``/``anthropic`` clients.

    Idempotent (never patches twice). Returns the packages that are guarded
    after the call (a package that is not installed is skipped). The guard is
    installed by default whenever limits exist (see :func:`ensure_guard`); call
    this to guard clients outside any limits too.

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
            targets = _targets(name)
            if not targets:
                continue
            for cls, method_name, wrap in targets:
                method = cls.__dict__[method_name]
                if not hasattr(method, _MARK):
                    setattr(cls, method_name, wrap(method))
            if any(method_name == "request" for _, method_name, _ in targets):
                _AWAITING.add(name)
            guarded.append(name)
    return tuple(guarded)


def is_installed(package: str) -> bool:
    """True if the guard is patched into ``package``'s clients."""
    if f"{package}._base_client" not in sys.modules:
        return False
    targets = _targets(package)
    return bool(targets) and all(hasattr(cls.__dict__[name], _MARK) for cls, name, _ in targets)


def uninstall_guard() -> None:
    """Undo :func:`install_guard` (for tests and clean shutdowns).

    Clients imported later are guarded again when limits exist, unless
    ``configure(guard=False)`` (:func:`disable_guard`) said otherwise.
    """
    global _ensured
    with _install_lock:
        _ensured = False
        _AWAITING.clear()
        _remove_finder()
        for owner in _PREPARED:
            original = getattr(owner.__dict__.get(_PREPARE), _MARK, None)
            if original is not None:
                setattr(owner, _PREPARE, original)
        _PREPARED.clear()
        for name in GUARDED_PACKAGES:
            if f"{name}._base_client" not in sys.modules:
                continue
            for cls, method_name, _ in _targets(name):
                patched = cls.__dict__[method_name]
                # Ours only: a plain function of ours. Another library's wrapper around
                # one of ours answers for _MARK too, and for isinstance, through its
                # proxy (wrapt's): it stays.
                if type(patched) is types.FunctionType and _MARK in patched.__dict__:
                    setattr(cls, method_name, patched.__dict__[_MARK])
    _PENDING.set(None)


def ensure_guard() -> None:
    """Guard the clients now or when they are imported, once; nothing after ``disable_guard``.

    Called where limits come into being (a session with a cap or budget opens,
    ``configure(fleet=...)``): clients already imported are patched at once, and
    an import hook patches the others when their request module is imported,
    whatever the import order. Cheap after the first call.

    Example::

        ensure_guard()
        import openai        # guarded as it is imported
    """
    global _ensured
    if _ensured or _disabled:
        return
    with _install_lock:
        if _ensured or _disabled:
            return
        _ensured = True
        waiting = []
        for name in GUARDED_PACKAGES:
            if f"{name}._base_client" in sys.modules:
                install_guard([name])
            else:
                waiting.append(name)
        if waiting:
            _add_finder(waiting)


def disable_guard() -> bool:
    """Opt out of the guard by default (``configure(guard=False)``); undoes it if installed.

    Returns True when it was installed (limits already relied on it).
    """
    global _disabled
    with _install_lock:
        was = _ensured and not _disabled
        _disabled = True
        uninstall_guard()
    return was


def is_disabled() -> bool:
    """True after ``configure(guard=False)``: no patch of third-party code by default."""
    return _disabled


def enable_guard() -> None:
    """Undo :func:`disable_guard`: the guard is installed by default again where limits exist."""
    global _disabled
    with _install_lock:
        _disabled = False


class PatchOnImport(importlib.abc.MetaPathFinder):
    """Runs a patch right after one of the named modules is first imported, whatever the order.

    ``patches`` maps a module's full name to what patches it (called once the
    module's code ran). Used by the client guard and by the framework tool
    doors (``techrevati.runtime.frameworks``); each keeps one such finder first
    on ``sys.meta_path`` while it waits for modules not imported yet.
    """

    def __init__(self, patches: dict[str, Callable[[], None]]) -> None:
        self.patches = patches
        self._busy = threading.local()

    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        patch = self.patches.get(fullname)
        if patch is None or getattr(self._busy, "on", False):
            return None
        self._busy.on = True
        try:
            spec = None
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
        finally:
            self._busy.on = False
        loader = spec.loader if spec is not None else None
        if spec is None or loader is None or not hasattr(loader, "exec_module"):
            return spec
        original = loader.exec_module

        def exec_module(module: Any) -> None:
            original(module)
            try:
                patch()
            except Exception:
                _log.exception("could not patch %s as it was imported; it is not guarded", fullname)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec

    def add(self) -> None:
        """Put this finder first on ``sys.meta_path`` (once)."""
        if self not in sys.meta_path:
            sys.meta_path.insert(0, self)

    def remove(self) -> None:
        """Take this finder off ``sys.meta_path``."""
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)


def _patch_imported(package: str) -> None:
    if not _disabled and _ensured:
        install_guard([package])


_finder: PatchOnImport | None = None


def _add_finder(packages: list[str]) -> None:
    global _finder
    if _finder is None:
        _finder = PatchOnImport(
            {f"{name}._base_client": functools.partial(_patch_imported, name) for name in packages}
        )
        _finder.add()


def _remove_finder() -> None:
    global _finder
    if _finder is not None:
        _finder.remove()
        _finder = None
