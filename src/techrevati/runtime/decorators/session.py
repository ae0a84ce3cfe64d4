"""``agent_session``: one agent session as a ``with`` block, ``async with`` or decorator."""

from __future__ import annotations

import dataclasses
import difflib
from asyncio import CancelledError
from collections.abc import Callable
from contextvars import ContextVar
from types import TracebackType
from typing import Any, cast

import wrapt

from ..orchestrator import (
    AsyncOrchestrationSession,
    OrchestrationSession,
    Orchestrator,
    _SessionBase,
    _SessionContext,
)
from ..telemetry.calls import instrument as core
from .streams import adrive, drive, lazy
from .wrapping import COROUTINE, FUNCTION, GENERATOR, F, kind_of

#: The ``agent_session`` blocks open in this context, innermost last. One
#: variable for every agent_session object: a variable per object would stay in
#: each thread's context for good (about 255 bytes per session, forever).
_OPEN_BLOCKS: ContextVar[tuple[tuple[agent_session, _SessionContext[Any]], ...]] = ContextVar(
    "techrevati_agent_session_blocks", default=()
)
# A pool task that leaves a block open leaves it out of its worker's context too.
core.task_scoped(_OPEN_BLOCKS, ())


def _session_of(scope: core.SessionScope | None) -> _SessionBase[Any] | None:
    owner = scope.owner if scope is not None else None
    return owner if isinstance(owner, _SessionBase) else None


def current_agent_session() -> OrchestrationSession | AsyncOrchestrationSession | None:
    """The session that decorated calls here belong to (any depth, thread or task), if any.

    Example::

        @agent_session("writer")
        def run() -> None:
            ask("hi")
            print(current_agent_session().tracker.total_cost())
    """
    session = _session_of(core.current_session())
    return cast("OrchestrationSession | AsyncOrchestrationSession | None", session)


class _SessionCall:
    """A generator decorated with ``agent_session``: the session lasts as long as it."""

    __slots__ = ("_cm", "_open")

    def __init__(self, cm: _SessionContext[Any]) -> None:
        self._cm = cm
        self._open = False

    def begin(self) -> None:
        self._cm._enter()  # activates the session in the stream's private context
        self._open = True

    def item(self, value: object) -> None:
        return None

    def _close(self, error: BaseException | None) -> None:
        if self._open:
            self._open = False
            self._cm._exit(error, cancelled=isinstance(error, CancelledError))

    def exhausted(self, value: object) -> None:
        self._close(None)

    def fail(self, error: BaseException) -> None:
        self._close(error)

    def closed(self) -> None:
        # Closed before its end (a consumer that stopped reading, a client that hung
        # up): cancelled, as a ``with`` block left by GeneratorExit is.
        self._close(GeneratorExit())


#: The options agent_session passes on to Orchestrator (its fields, but role).
_ORCHESTRATOR_OPTIONS = frozenset(
    f.name for f in dataclasses.fields(Orchestrator) if f.init and f.name != "role"
)


class agent_session:  # lower-case: used like a function, as contextlib's helpers are
    """Open one agent session, as ``Orchestrator(role=..., ...).session()`` would.

    ``orchestrator_options`` are ``Orchestrator``'s fields (``phase`` defaults
    to ``"default"``): budget, iteration cap, breakers, permissions,
    guardrails, sinks, providers. Use it as ``with`` (yields an
    ``OrchestrationSession``), ``async with`` (yields an
    ``AsyncOrchestrationSession``) or as a decorator, where each call of the
    function runs in a new session of the same orchestrator. Decorated turns
    and tools called anywhere under it, at any depth, in threads started with
    context propagation (``contextvars.copy_context().run``, and
    ``asyncio.to_thread``) and in asyncio tasks, belong to that session.

    Example::

        with agent_session("writer", budget_usd=0.5, enforce_budget=True,
                           max_iterations=5) as session:
            ask("draft the intro")
        print(session.summary())

        @agent_session("researcher", permissions=perms)
        async def research(topic: str) -> str:
            return await ask_async(topic)
    """

    def __init__(self, role: str, **orchestrator_options: Any) -> None:
        unknown = orchestrator_options.keys() - _ORCHESTRATOR_OPTIONS
        if unknown:
            # Else Orchestrator.__init__ names itself, a class the caller never wrote.
            name = sorted(unknown)[0]
            close = difflib.get_close_matches(name, _ORCHESTRATOR_OPTIONS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"agent_session() got an unexpected keyword argument {name!r}{hint}")
        #: The orchestrator every session of this object is opened from.
        self.orchestrator = Orchestrator(role=role, **orchestrator_options)
        # Blocks entered here and not yet exited, oldest first: the fallback
        # for an exit from another task (lifespan hooks, fixtures).
        self._entered: list[_SessionContext[Any]] = []

    def _push(self, cm: _SessionContext[Any]) -> None:
        # Blocks exited on another thread (a generator closed elsewhere) are left out:
        # else this context's tuple kept every such session alive.
        kept = tuple(
            (owner, block) for owner, block in _OPEN_BLOCKS.get() if block._activation is not None
        )
        _OPEN_BLOCKS.set((*kept, (self, cm)))
        self._entered.append(cm)

    def _pop(self) -> _SessionContext[Any]:
        # One object may be entered by several threads or tasks at once; each
        # exits the innermost block it entered itself, found in its context.
        stack = _OPEN_BLOCKS.get()
        for index in range(len(stack) - 1, -1, -1):
            owner, cm = stack[index]
            if owner is self:
                _OPEN_BLOCKS.set(stack[:index] + stack[index + 1 :])
                self._entered.remove(cm)
                return cm
        if not self._entered:
            raise RuntimeError("agent_session exited without a matching enter")
        return self._entered.pop()

    def __enter__(self) -> OrchestrationSession:
        cm = self.orchestrator.session()
        session = cm.__enter__()
        self._push(cm)
        return session

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._pop().__exit__(exc_type, exc, tb)

    async def __aenter__(self) -> AsyncOrchestrationSession:
        cm = self.orchestrator.asession()
        session = await cm.__aenter__()
        self._push(cm)
        return session

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._pop().__aexit__(exc_type, exc, tb)

    def __call__(self, fn: F) -> F:
        """Decorate ``fn``: every call runs in a fresh session of this orchestrator."""
        kind = kind_of(fn)
        orch = self.orchestrator

        if kind == FUNCTION:

            def session_function(
                wrapped: Callable[..., Any], instance: object, args: Any, kwargs: Any
            ) -> Any:
                with orch.session():
                    return wrapped(*args, **kwargs)

            wrapper: Callable[..., Any] = session_function
        elif kind == COROUTINE:

            async def session_coroutine(
                wrapped: Callable[..., Any], instance: object, args: Any, kwargs: Any
            ) -> Any:
                async with orch.asession():
                    return await wrapped(*args, **kwargs)

            wrapper = session_coroutine
        elif kind == GENERATOR:

            def session_generator(
                wrapped: Callable[..., Any], instance: object, args: Any, kwargs: Any
            ) -> Any:
                return drive(
                    lazy(lambda: _SessionCall(orch.session()), lambda: wrapped(*args, **kwargs))
                )

            wrapper = session_generator
        else:

            def session_async_generator(
                wrapped: Callable[..., Any], instance: object, args: Any, kwargs: Any
            ) -> Any:
                return adrive(
                    lazy(lambda: _SessionCall(orch.asession()), lambda: wrapped(*args, **kwargs))
                )

            wrapper = session_async_generator
        return cast(F, wrapt.FunctionWrapper(fn, wrapper))
