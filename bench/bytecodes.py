"""Bytecodes a decorated turn executes, ours and the SDK's: a count that noise cannot move.

    python -m bench.bytecodes               # per function, the 40 largest
    python -m bench.bytecodes --lines       # per line of ours, the 40 largest

Timings on a shared machine move by more than a small change saves; the number
of bytecodes a turn executes does not move at all. It is counted with
``sys.settrace`` opcode events over 10 turns of ``@agent_turn`` in an enforced
``agent_session`` with metrics off (the ``overhead`` suite's workload, after
50 warm turns), and compared with B (one span with 8 attributes). A bytecode
costs about 20 ns here on average, ours and the SDK's alike, so the count
predicts the time well; it says nothing about C code (locks, dict copies).
"""

from __future__ import annotations

import argparse
import collections
import linecache
import sys
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

from . import decorated, ours
from .otelkit import Floors, tracer_provider

TURNS = 10

#: Where a function's bytecodes are counted, by the file it lives in.
GROUPS = (
    ("ledger", ("limits/ledger.py", "limits/money.py", "usage_tracking.py")),
    ("pricing and usage reading", ("pricing/", "readings/usage_extract.py")),
)


def count(
    work: Callable[[], None],
    key: Callable[[FrameType], Any],
    within: set[CodeType] | None = None,
) -> collections.Counter[Any]:
    """Bytecodes ``work`` executes, by ``key(frame)``; with ``within``, only those
    executed inside a call of one of these functions (and what they call)."""
    counts: collections.Counter[Any] = collections.Counter()

    def inside(frame: FrameType | None) -> bool:
        while frame is not None:
            if frame.f_code in within:  # type: ignore[operator]
                return True
            frame = frame.f_back
        return False

    def trace(frame: FrameType, event: str, arg: object) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode" and (within is None or inside(frame)):
            counts[key(frame)] += 1
        return trace

    sys.settrace(trace)
    try:
        work()
    finally:
        sys.settrace(None)
    return counts


def where(frame: FrameType) -> str:
    """``path:function`` of a frame, the path from the package (or site-packages) down."""
    path = frame.f_code.co_filename
    caller = frame.f_back
    if path == "<string>" and caller is not None and "techrevati" in caller.f_code.co_filename:
        # A dataclass's generated __init__ (no file of its own): ours when we called it.
        return f"{where(caller)} -> generated {frame.f_code.co_name}"
    for marker in ("site-packages/", "/src/"):
        path = path.split(marker)[-1]
    return f"{path}:{frame.f_code.co_name}"


def line_of(frame: FrameType) -> tuple[str, int, str]:
    """(file, line, function) of a frame, for counts per line."""
    return frame.f_code.co_filename, frame.f_lineno or 0, frame.f_code.co_name


def print_lines(rows: list[tuple[float, tuple[str, int, str]]], top: int) -> None:
    """The ``top`` largest (count, line) rows, with the line's text."""
    for per_call, (path, line, function) in sorted(rows, reverse=True)[:top]:
        text = linecache.getline(path, line).strip()[:80]
        print(f"{per_call:6.0f}  {function}:{line}  {text}")


def _ours(name: str) -> bool:
    return "techrevati/" in name


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bytecodes")
    parser.add_argument("--lines", action="store_true", help="per line of ours")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args(argv)

    ours.setup_pricing()
    floors = Floors()
    floors.b(50)
    b_total = sum(count(lambda: floors.b(TURNS), lambda f: 0).values()) / TURNS
    tp, _ = tracer_provider()
    with decorated.session(tp, None):
        for _ in range(50):
            decorated.ask()

        def turns() -> None:
            for _ in range(TURNS):
                decorated.ask()

        per_function = count(turns, where)
        per_line = count(turns, line_of) if args.lines else None
    total = sum(per_function.values()) / TURNS
    mine = {k: v / TURNS for k, v in per_function.items() if _ours(k)}
    print(f"B (one span, 8 attributes): {b_total:,.0f} bytecodes")
    print(f"@agent_turn, metrics off: {total:,.0f} bytecodes, ours {sum(mine.values()):,.0f}")
    grouped = dict.fromkeys([name for name, _ in GROUPS] + ["the call path"], 0.0)
    for name, n in mine.items():
        group = next((g for g, files in GROUPS if any(f in name for f in files)), "the call path")
        grouped[group] += n
    for group, n in grouped.items():
        print(f"  {group}: {n:,.0f}")
    print()
    if per_line is not None:
        print_lines([(v / TURNS, k) for k, v in per_line.items() if "techrevati" in k[0]], args.top)
        return
    for name, n in per_function.most_common(args.top):
        print(f"{n / TURNS:6.0f}  {'*' if _ours(name) else ' '} {name}")


if __name__ == "__main__":
    main()
