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
from types import FrameType
from typing import Any

from . import decorated, ours
from .otelkit import Floors, tracer_provider

TURNS = 10

#: Where a function's bytecodes are counted, by the file it lives in.
GROUPS = (
    ("ledger", ("limits/ledger.py", "limits/money.py", "usage_tracking.py")),
    ("pricing and usage reading", ("pricing/", "readings/usage_extract.py")),
)


def _count(work: Callable[[], None], key: Callable[[FrameType], Any]) -> collections.Counter[Any]:
    counts: collections.Counter[Any] = collections.Counter()

    def trace(frame: FrameType, event: str, arg: object) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            counts[key(frame)] += 1
        return trace

    sys.settrace(trace)
    try:
        work()
    finally:
        sys.settrace(None)
    return counts


def _where(frame: FrameType) -> str:
    path = frame.f_code.co_filename
    caller = frame.f_back
    if path == "<string>" and caller is not None and "techrevati" in caller.f_code.co_filename:
        # A dataclass's generated __init__ (no file of its own): ours when we called it.
        return f"{_where(caller)} -> generated {frame.f_code.co_name}"
    for marker in ("site-packages/", "/src/"):
        path = path.split(marker)[-1]
    return f"{path}:{frame.f_code.co_name}"


def _line(frame: FrameType) -> tuple[str, int, str]:
    return frame.f_code.co_filename, frame.f_lineno or 0, frame.f_code.co_name


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
    b_total = sum(_count(lambda: floors.b(TURNS), lambda f: 0).values()) / TURNS
    tp, _ = tracer_provider()
    with decorated.session(tp, None):
        for _ in range(50):
            decorated.ask()

        def turns() -> None:
            for _ in range(TURNS):
                decorated.ask()

        per_function = _count(turns, _where)
        per_line = _count(turns, _line) if args.lines else None
    total = sum(per_function.values()) / TURNS
    mine = {k: v / TURNS for k, v in per_function.items() if _ours(k)}
    print(f"B (one span, 8 attributes): {b_total:,.0f} bytecodes")
    print(f"@agent_turn, metrics off: {total:,.0f} bytecodes, ours {sum(mine.values()):,.0f}")
    grouped = dict.fromkeys([name for name, _ in GROUPS] + ["the call path"], 0.0)
    for name, count in mine.items():
        group = next((g for g, files in GROUPS if any(f in name for f in files)), "the call path")
        grouped[group] += count
    for group, count in grouped.items():
        print(f"  {group}: {count:,.0f}")
    print()
    if per_line is not None:
        rows = [(v / TURNS, k) for k, v in per_line.items() if "techrevati" in k[0]]
        for count, (path, line, function) in sorted(rows, reverse=True)[: args.top]:
            text = linecache.getline(path, line).strip()[:80]
            print(f"{count:6.0f}  {function}:{line}  {text}")
        return
    for name, count in per_function.most_common(args.top):
        print(f"{count / TURNS:6.0f}  {'*' if _ours(name) else ' '} {name}")


if __name__ == "__main__":
    main()
