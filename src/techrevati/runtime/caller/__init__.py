"""Where the user's code is: warnings we emit point at the line that caused them.

A warning's ``stacklevel`` counts frames up from ``warnings.warn``; a fixed
number breaks as soon as the same warning is reached through another path (a
decorator, a session method, a span processor). :func:`user_stacklevel`
counts instead to the first frame outside this package (and the wrapping
libraries we call through), so ``python -W error``, warning filters by module
and the printed ``file:line`` all name the user's code. A warning given later,
where no user frame is on the stack (a weak reference's callback, the garbage
collector), names a line :func:`user_site` noted earlier, through :func:`warn_at`.

It is a primitive (plain Python, no OpenTelemetry), so every room may use it.

Example::

    def check(value: int) -> None:  # in techrevati.runtime: the warning names
        if value < 0:                 # the line that called check(), not this one
            warn_user(f"negative value {value}", RuntimeWarning)
"""

from __future__ import annotations

import asyncio
import logging
import sys
import sysconfig
import warnings
from dataclasses import dataclass
from types import FrameType
from typing import Any

__all__ = [
    "UserSite",
    "app_site",
    "late_site",
    "log_once",
    "user_frame",
    "user_site",
    "user_stacklevel",
    "warn_aside",
    "warn_at",
    "warn_site",
    "warn_user",
]

# Frames of these packages are never "the user's code": ours, and the plumbing a
# call passes through on its way to us: wrapt's proxies, contextlib's
# __enter__/__exit__ around our context managers, the OpenTelemetry SDK and
# instrumentations (a span ending runs our processor), and the model clients
# whose request methods our guard wraps.
_PLUMBING = (
    "techrevati.runtime",
    "wrapt",
    "contextlib",
    "opentelemetry",
    "openai",
    "anthropic",
    "httpx",
    "httpcore",
)
_PREFIXES = tuple(f"{name}." for name in _PLUMBING)


#: What ``_is_plumbing`` found, by module name: ``user_site`` walks the stack for every
#: stream under an enforced budget. Bounded (names of exec-ed code are unbounded).
_SEEN: dict[str, bool] = {}


def _is_plumbing(module: object) -> bool:
    if not isinstance(module, str):
        return False
    found = _SEEN.get(module)
    if found is None:
        found = module in _PLUMBING or module.startswith(_PREFIXES)
        if len(_SEEN) < 4096:
            _SEEN[module] = found
    return found


def user_stacklevel(skip: int = 0) -> int:
    """The ``stacklevel`` for a ``warnings.warn`` made by the caller, pointing at user code.

    ``skip`` extra frames are passed over first (for a helper that warns on
    its caller's behalf). With no user frame at all (a thread running only our
    code) it is 1: the warning then names our own line.

    Example::

        >>> user_stacklevel() >= 1
        True
    """
    frame = sys._getframe(1 + skip)
    level = 1
    while frame is not None:
        if not _is_plumbing(frame.f_globals.get("__name__", "")):
            return level
        next_frame = frame.f_back
        if next_frame is None:
            return 1
        frame = next_frame
        level += 1
    return 1


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message, category)`` attributed to the first frame of user code.

    Example::

        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_user("role 'x' has no config", UserWarning)
        >>> str(caught[0].message)
        "role 'x' has no config"
    """
    frame = sys._getframe(1)
    site = user_site(skip=1) or UserSite(frame.f_code.co_filename, frame.f_lineno, frame.f_globals)
    warn_at(site, message, category)


_telemetry_log = logging.getLogger("techrevati.runtime.telemetry")
#: What ``log_once`` has said, by key.
_LOGGED: set[str] = set()


def log_once(
    key: str, message: str, *args: object, level: int = logging.WARNING, exc_info: bool = False
) -> None:
    """Log a telemetry failure the agent goes on after, once per process for ``key``.

    A failure in our own telemetry never breaks the user's call; it is said on
    the ``techrevati.runtime.telemetry`` logger, once, so a failure repeated on
    every call does not flood the log. ``exc_info``: with the exception being
    handled (from an ``except`` block).

    Example::

        >>> log_once("example", "could not read %s; continuing", "a response")
    """
    if key in _LOGGED:
        return
    _LOGGED.add(key)
    _telemetry_log.log(level, message, *args, exc_info=exc_info)


@dataclass(frozen=True, slots=True)
class UserSite:
    """A line of user code, noted to name it in a warning given later (no frame is kept)."""

    filename: str
    lineno: int
    #: Its module's globals: its name and warning registry are read from them.
    module_globals: dict[str, Any]


def user_site(skip: int = 0) -> UserSite | None:
    """The caller's first frame of user code, as a :class:`UserSite`; None without one.

    The same frame :func:`user_stacklevel` counts to, for a warning that may be
    given only later, when that code is no longer on the stack (see :func:`warn_at`).

    Example::

        >>> site = user_site()
        >>> site is not None and site.lineno > 0
        True
    """
    frame = user_frame(1 + skip)
    if frame is None:
        return None
    return UserSite(frame.f_code.co_filename, frame.f_lineno, frame.f_globals)


def user_frame(skip: int = 0) -> FrameType | None:
    """The caller's first frame of user code itself (see :func:`user_site`); None without one.

    Example::

        >>> user_frame() is not None
        True
    """
    frame: FrameType | None = sys._getframe(1 + skip)
    while frame is not None:
        if not _is_plumbing(frame.f_globals.get("__name__", "")):
            return frame
        frame = frame.f_back
    return None


#: Where installed packages, their scripts and the standard library live: a frame there
#: is a library's, even when it is no plumbing of ours (a framework that made a call).
_LIBRARY_DIRS = tuple(
    sorted(
        {path for key, path in sysconfig.get_paths().items() if "lib" in key or key == "scripts"},
        key=len,
    )
)
#: What ``_in_library`` found, by file name (bounded, as ``_SEEN``).
_LIBRARY_FILES: dict[str, bool] = {}


def _in_library(filename: str) -> bool:
    found = _LIBRARY_FILES.get(filename)
    if found is None:
        found = (
            filename.startswith(_LIBRARY_DIRS)
            or "/site-packages/" in filename
            or "/dist-packages/" in filename
            or filename.startswith("<frozen ")
        )
        if len(_LIBRARY_FILES) < 4096:
            _LIBRARY_FILES[filename] = found
    return found


def app_site(skip: int = 0) -> UserSite | None:
    """The caller's first frame of the application itself, past the frames :func:`user_site`
    passes over and those of any installed package or the standard library (a framework
    that made a call on the application's behalf); else :func:`user_site`'s.

    Example::

        >>> site = app_site()
        >>> site is not None and site.lineno > 0
        True
    """
    first = frame = user_frame(1 + skip)
    while frame is not None:
        if not _is_plumbing(frame.f_globals.get("__name__", "")) and not _in_library(
            frame.f_code.co_filename
        ):
            return UserSite(frame.f_code.co_filename, frame.f_lineno, frame.f_globals)
        frame = frame.f_back
    if first is None:
        return None
    return UserSite(first.f_code.co_filename, first.f_lineno, first.f_globals)


def late_site(skip: int = 0) -> UserSite | None:
    """:func:`user_site`, or, where the stack holds no user line, that of the task awaiting
    this one.

    A coroutine handed to ``asyncio.wait_for`` (before Python 3.12), ``gather`` or
    ``create_task`` runs as a task of its own, whose stack starts in asyncio's event
    loop: the line that awaits it is on the stack of the task waiting for it. Only
    for a warning given once (the walk over the loop's tasks is not for every call).

    Example::

        >>> site = late_site()
        >>> site is not None and site.lineno > 0
        True
    """
    found = user_site(1 + skip)
    if found is not None and not _in_asyncio(found.module_globals.get("__name__")):
        return found
    try:
        return _awaiter_site() or found
    except Exception:
        # asyncio's private attributes in a shape not foreseen: the warning still comes,
        # at the line it had before this search.
        return found


def _in_asyncio(module: object) -> bool:
    return isinstance(module, str) and (module == "asyncio" or module.startswith("asyncio."))


def _awaiter_site() -> UserSite | None:
    """The line of user code the task waiting for the current task is suspended at."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return None  # no event loop running in this thread
    if task is None:
        return None
    # What the waiting task may be suspended on: this task, or a future its callbacks
    # complete, in turn (wait_for's waiter; gather's outer future, maybe itself awaited
    # through wait_for). These are asyncio's private attributes: any missing, no site.
    awaited = {id(task)}
    pending: list[object] = [task]
    while pending and len(awaited) < 64:  # bounded: a chain is a few futures long
        future = pending.pop()
        for callback, _context in getattr(future, "_callbacks", None) or ():
            owner = getattr(callback, "__self__", None)
            if isinstance(owner, asyncio.Task):
                return _suspended_at(owner)  # awaited directly: the waiting task's wakeup
            held: list[object] = list(getattr(callback, "args", ()))
            for cell in getattr(callback, "__closure__", None) or ():
                try:
                    held.append(cell.cell_contents)
                except ValueError:
                    continue  # an empty cell
            for item in held:
                if isinstance(item, asyncio.Future) and id(item) not in awaited:
                    awaited.add(id(item))
                    pending.append(item)
    for other in asyncio.all_tasks():
        if other is not task and id(getattr(other, "_fut_waiter", None)) in awaited:
            return _suspended_at(other)
    return None


def _suspended_at(task: asyncio.Task[Any]) -> UserSite | None:
    """The innermost line of user code in ``task``'s chain of awaits."""
    found = None
    coro: object = task.get_coro()
    for _ in range(256):  # bounded: a chain is a few awaits deep
        if coro is None:
            break
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            module = frame.f_globals.get("__name__", "")
            if not _is_plumbing(module) and not _in_asyncio(module):
                found = UserSite(frame.f_code.co_filename, frame.f_lineno, frame.f_globals)
        coro = (
            getattr(coro, "cr_await", None)
            or getattr(coro, "gi_yieldfrom", None)
            or getattr(coro, "ag_await", None)
        )
    return found


def warn_at(site: UserSite, message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message, category)`` as if given at ``site``'s line.

    Filters (by module too), the once-per-text-and-line rule of the ``default``
    action and ``-W error`` apply as they do to a warning given there. The texts
    already shown are kept in a registry of ours (``_registry_for``), not in the
    module's ``__warningregistry__``: some texts carry an amount or an id, and a
    service that warns once per session would grow its module's registry forever.

    Example::

        >>> import warnings
        >>> site = user_site()
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_at(site, "late", RuntimeWarning)
        >>> (caught[0].filename, caught[0].lineno) == (site.filename, site.lineno)
        True
    """
    found = site.module_globals
    module = found.get("__name__")
    warnings.warn_explicit(
        message,
        category,
        site.filename,
        site.lineno,
        module=module if isinstance(module, str) else "<string>",
        registry=_registry_for(module),
        # (No module_globals=: as for warnings.warn, its source line is read later, by
        # file name; a loader asked for it raises for ``python -c``'s __main__.)
    )


def warn_site(site: UserSite | None, message: str, category: type[Warning]) -> None:
    """``warn_at(site, ...)`` for a line noted earlier, else ``warn_user`` (the first line of
    user code on the stack now).

    Example::

        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_site(None, "no line noted", RuntimeWarning)
        >>> str(caught[0].message)
        'no line noted'
    """
    if site is not None:
        warn_at(site, message, category)
    else:
        warn_user(message, category)


def warn_aside(site: UserSite | None, message: str, category: type[Warning]) -> None:
    """``warn_at(site, ...)`` (else ``warn_user``) for a warning given where the code
    running is not the one at fault (a later session, a later pool task): a filter that
    turns it into an error (``-W error``) has it logged instead of raised there, as
    Python does for an unclosed file found by the garbage collector.

    Example::

        >>> warn_aside(None, "left open", ResourceWarning)
    """
    try:
        warn_site(site, message, category)
    except Warning as error:
        _telemetry_log.warning("exception ignored: %s: %s", type(error).__name__, error)


#: Texts already shown, per module (``warn_at``): bounded, where Python's own registry
#: of a module is not. A full registry starts again (a text then shows once more).
_REGISTRIES: dict[object, dict[Any, Any]] = {}
_REGISTRY_TEXTS = 256
_REGISTRY_MODULES = 256


def _registry_for(module: object) -> dict[Any, Any]:
    registry = _REGISTRIES.get(module)
    if registry is None:
        if len(_REGISTRIES) >= _REGISTRY_MODULES:
            _REGISTRIES.clear()  # names of exec-ed code are unbounded
        registry = _REGISTRIES[module] = {}
    elif len(registry) > _REGISTRY_TEXTS:
        registry.clear()
    return registry
