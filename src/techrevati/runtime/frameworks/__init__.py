"""Frameworks: the tool doors, where agent frameworks' own tools enter the core.

A session's permission policy and guardrails check every tool call the core
runs (``run_tool``, ``@tool_call``). An agent framework runs its tools itself:
LangChain (LangGraph's ``ToolNode`` and every ``BaseTool``), the OpenAI Agents
SDK's function and local tools, pydantic-ai's tools, smolagents' tools. So,
once a session with a permission policy or guardrails opens, each framework's
one place where a tool runs is patched (those already imported at once, the
others by an import hook when they are imported, whatever the order): in such
a session the framework's tool call is one tool call of the core, refused
before its body runs, its result post-checked, its span carrying the
decision. Anywhere else the patched place calls straight through.
``configure(guard=False)`` opts out of these patches as of the client guard's.

Another instrumentation may wrap the same place after us (OpenInference wraps
smolagents' ``Tool.__call__``), or put back what it found before us when it
is uninstrumented: each door is looked for again, through such wrappers, as
each such session opens, and put back if it is gone; turned off, a door that
another wrapper holds is left in place, switched off.

May import: the primitives, ``semconv``, ``readings``, ``limits`` and ``calls``.

Example::

    from techrevati.runtime.frameworks import ensure_tool_doors

    ensure_tool_doors()   # what a session with permissions= or guardrails= does
"""

from __future__ import annotations

import functools
import importlib
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..telemetry.limits import guard
from . import door, langchain, openai_agents, pydantic_ai, smolagents

_log = logging.getLogger("techrevati.runtime.frameworks")

Patch = Callable[[Any], Any]
#: For each module that holds where a framework runs tools: the framework's pip name,
#: what finds those places, and whether finding none is worth a warning (the main
#: tool path is; an extra one, such as the Agents SDK's local tools, is not).
_FRAMEWORKS: dict[str, tuple[str, Callable[[], list[tuple[object, str, Patch]]], bool]] = {
    langchain.MODULE: ("langchain-core", langchain.targets, True),
    openai_agents.MODULE: ("openai-agents", openai_agents.targets, True),
    openai_agents.ACTIONS: ("openai-agents", openai_agents.local_targets, False),
    pydantic_ai.MODULE: ("pydantic-ai", pydantic_ai.targets, True),
    smolagents.MODULE: ("smolagents", smolagents.targets, True),
}


@dataclass
class _Door:
    """One patched place: what it held before, and the door put there."""

    owner: object
    name: str
    original: Any
    door: Any


_lock = threading.RLock()
_ensured = False
#: The doors put in place, by (owner, attribute).
_doors: dict[tuple[int, str], _Door] = {}
#: Frameworks imported whose tool path this version does not know (warned once).
_unknown: set[str] = set()
#: The framework modules whose doors were put in place (or found unknown).
_covered: set[str] = set()
_finder: guard.PatchOnImport | None = None


def _attribute(owner: object, name: str) -> Any:
    return owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)


def _in_place(entry: _Door) -> bool:
    """The door is there, itself or under wrappers another instrumentation put over it."""
    current = _attribute(entry.owner, entry.name)
    for _ in range(8):  # (wrappers over wrappers: a few at most)
        if current is entry.door:
            return True
        current = getattr(current, "__wrapped__", None)
        if current is None:
            return False
    return False


def _importing(module: str) -> bool:
    """``module`` is in ``sys.modules`` but its code has not finished running (another
    thread imports it): its tool path may not be there yet."""
    spec = getattr(sys.modules.get(module), "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def _install(module: str, ran: bool = False) -> None:
    """Put the doors of ``module``'s framework in place, where one is not already.

    ``ran``: the import hook calls it once the module's code ran (the import
    machinery still counts it as importing then).
    """
    package, targets, main_path = _FRAMEWORKS[module]
    if not ran and _importing(module):
        return  # looked for again as the next session with a policy opens (_pending)
    found = targets()
    if not found:
        _covered.add(module)  # (looked at: not looked for again at every session)
        if main_path and module not in _unknown:
            _unknown.add(module)
            _log.warning(
                "%s is imported but its tools run nowhere this version of techrevati-runtime "
                "knows: a session's permission policy and guardrails do not check its tools "
                "(wrap them with @tool_call)",
                package,
            )
        return
    _covered.add(module)
    for owner, name, patch in found:
        key = (id(owner), name)
        entry = _doors.get(key)
        if entry is not None and _in_place(entry):
            continue
        original = _attribute(owner, name)
        placed = patch(original)
        setattr(owner, name, placed)
        _doors[key] = _Door(owner, name, original, placed)


def _installed_on_import(module: str) -> None:
    with _lock:
        if _ensured and not guard.is_disabled():
            _install(module, ran=True)


def _pending() -> bool:
    """A framework module imported that no door covers yet (imported while looked at)."""
    return any(m in sys.modules and m not in _covered for m in _FRAMEWORKS)


def ensure_tool_doors() -> None:
    """Put the frameworks' tool doors in place now, or when each framework is imported.

    Called where a session with a permission policy or guardrails opens;
    nothing after ``configure(guard=False)``. After the first call it only
    checks that every door is still there (another instrumentation may have
    put back what it found), a few attribute reads.
    """
    global _ensured, _finder
    if guard.is_disabled():
        return
    if _ensured and not _pending() and all(_in_place(e) for e in tuple(_doors.values())):
        return
    # A framework another thread is still importing: wait for its import to end first
    # (outside our lock: that import's hook takes it), so its tool path is there.
    for module in [m for m in _FRAMEWORKS if m in sys.modules and m not in _covered]:
        try:
            importlib.import_module(module)
        except Exception:  # its import failed in the thread that ran it: not ours to raise
            _log.debug("importing %s for its tool doors failed", module, exc_info=True)
    with _lock:
        if guard.is_disabled():
            return
        _ensured = True
        door.switch(True)
        waiting: dict[str, Callable[[], None]] = {}
        for module in _FRAMEWORKS:
            if module in sys.modules:
                _install(module)
            else:
                waiting[module] = functools.partial(_installed_on_import, module)
        if waiting and _finder is None:
            _finder = guard.PatchOnImport(waiting)
            _finder.add()


def uninstall_tool_doors() -> bool:
    """Turn the doors off and take them out (``configure(guard=False)``, tests).

    A door another instrumentation wrapped after us stays, switched off: taking
    it out would take that wrapper out too. A later session with a policy turns
    them on again. Returns True when they were on.
    """
    global _ensured, _finder
    with _lock:
        was = _ensured
        _ensured = False
        door.switch(False)
        if _finder is not None:
            _finder.remove()
            _finder = None
        _covered.difference_update(_FRAMEWORKS)
        for key, entry in list(_doors.items()):
            if _attribute(entry.owner, entry.name) is entry.door:
                setattr(entry.owner, entry.name, entry.original)
                del _doors[key]
    return was


__all__ = ["ensure_tool_doors", "uninstall_tool_doors"]
