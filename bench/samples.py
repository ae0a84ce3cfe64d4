"""Sample builders shared by every suite, this package's and 0.4.0's alike.

They only use ``orch.session()``, ``run_turn`` and ``run_tool``, which both
versions have, so the 0.4.0 suite (in its own venv) times exactly the same loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

#: What one timed turn calls: ``run_turn(fn, model, usage)``.
Turn = tuple[Callable[[], Any], str, Any]


def session_turns(orch: Any, turn: Turn, warm: int, timed: int) -> Callable[[], float]:
    """A sample: a fresh session, ``warm`` turns untimed, then ``timed`` turns timed."""
    fn, model, usage = turn

    def sample() -> float:
        with orch.session() as session:
            run_turn = session.run_turn
            for _ in range(warm):
                run_turn(fn, model, usage)
            start = time.perf_counter()
            for _ in range(timed):
                run_turn(fn, model, usage)
            elapsed = time.perf_counter() - start
        return elapsed / timed

    return sample


def nth_turns(orch: Any, turn: Turn, warm: int, sessions: int) -> Callable[[], float]:
    """A sample: turn ``warm + 1`` (at depth ``warm``) of each of ``sessions`` fresh sessions."""
    fn, model, usage = turn

    def sample() -> float:
        perf = time.perf_counter
        total = 0.0
        for _ in range(sessions):
            with orch.session() as session:
                run_turn = session.run_turn
                for _ in range(warm):
                    run_turn(fn, model, usage)
                start = perf()
                run_turn(fn, model, usage)
                total += perf() - start
        return total / sessions

    return sample


def session_tools(orch: Any, tool: Callable[[], Any], timed: int) -> Callable[[], float]:
    """A sample: ``timed`` permission-checked calls of tool ``lookup`` in one session."""

    def sample() -> float:
        with orch.session() as session:
            run_tool = session.run_tool
            start = time.perf_counter()
            for _ in range(timed):
                run_tool("lookup", tool)
            elapsed = time.perf_counter() - start
        return elapsed / timed

    return sample
