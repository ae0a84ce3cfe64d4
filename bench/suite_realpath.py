"""Our share of a real model call: the real ``openai`` client against a local stand-in.

The microbenchmarks time our own spans. This suite times what a user's model
call costs with and without this package: the real ``openai`` client (and the
official OpenAI instrumentation) calling the local stand-in
(``tests/interop/standin.py``, in a process of its own), each variant of
``realpath_child.py`` in its own process, rounds interleaved (one batch of
every variant per round, order rotated). Reported per call: the calling
thread's CPU time (what the agent's thread pays; the span export thread and
the server are elsewhere) and wall time; the share is ``ours - bare`` per
round, and the ratio ``ours / bare``.

Rows: ``bare`` (instrumented client, no techrevati) and ``ours`` (plus our
limits processor, a capped session and the client guard); ``client`` and
``client_ours`` (no instrumentation: the guard as the only door); and one
framework run, pydantic-ai with the OpenAI instrumentation, without and with
us (in the ``frameworks`` venv of tests/interop/venvs.py, when it is built).
On a busy machine ``ours - bare`` (two totals of ~2 ms) moves by more than our
share between rounds, so ``ours_split`` also counts the thread CPU spent
inside our entry points directly, in a capped session with an enforced budget.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import harness
from .harness import Result

ROOT = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "realpath_child.py"
INTEROP = ROOT / "tests" / "interop"
PAIRS = (("bare", "ours"), ("client", "client_ours"))
FRAMEWORK_PAIR = ("fw_bare", "fw_ours")

SERVE = """
import sys, time
sys.path.insert(0, sys.argv[1])
import standin
with standin.serve() as api:
    print(api.url, flush=True)
    sys.stdin.read()
"""


class Child:
    """One variant's process: send N, read back (cpu s, wall s) per call."""

    def __init__(self, variant: str, python: str, url: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        env.pop("OTEL_SDK_DISABLED", None)
        self.variant = variant
        self.doors: dict[str, float] = {}
        #: The last sample's collector pauses per call (s): in all, and inside our entries.
        self.gc = 0.0
        self.gc_inside = 0.0
        self.proc = subprocess.Popen(
            [python, str(CHILD), variant, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        ready = self._line()
        if ready.get("ready") != variant:
            raise RuntimeError(f"{variant}: child did not start ({ready})")

    def _line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.variant}: child exited ({self.proc.wait()})")
        result: dict[str, Any] = json.loads(line)
        return result

    def sample(self, n: int) -> tuple[float, float, float, float]:
        """Per call, in seconds: thread CPU, wall, thread CPU inside our entry points,
        and the counting's own share of the latter (see ``realpath_child._count_inside``).
        The same inside count per door, net of the counting, is kept in ``doors``."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        got = self._line()
        self.doors = got.get("doors", {})
        self.gc = float(got.get("gc", 0.0))
        self.gc_inside = float(got.get("gc_inside", 0.0))
        return (
            float(got["cpu"]),
            float(got["wall"]),
            float(got.get("inside", 0.0)),
            float(got.get("bias", 0.0)),
        )

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _framework_python() -> str | None:
    sys.path.insert(0, str(INTEROP))
    try:
        import venvs

        return str(venvs.python("frameworks"))
    except (ImportError, FileNotFoundError):
        return None


#: Our share counted inside our entry points, in a process of its own (see realpath_child).
SPLIT = "ours_split"
#: The same count in a session with only its (default) iteration cap.
SPLIT_CAP = "ours_split_cap"
#: The same with one part of our per-call work stubbed (realpath_child.PARTS): what it costs.
PARTS = ("iteration", "reading", "tracker", "pricing", "guard")
WITHOUT = tuple(f"without_{part}" for part in PARTS)


def run(quick: bool) -> Result:
    # Many short rounds: on a shared machine the load moves within seconds, and a
    # pair of batches taken close together differs by less than two far apart.
    rounds, per_batch, fw_batch = (5, 60, 10) if quick else (25, 150, 20)
    result = Result("realpath", "Real openai calls against the local stand-in (per call)", rounds)
    server = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(INTEROP)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        variants = [v for pair in PAIRS for v in pair] + [SPLIT, SPLIT_CAP, *WITHOUT]
        pythons = dict.fromkeys(variants, sys.executable)
        batches = dict.fromkeys(variants, per_batch)
        fw_python = _framework_python()
        if fw_python is not None:
            for variant in FRAMEWORK_PAIR:
                pythons[variant] = fw_python
                batches[variant] = fw_batch
            variants += list(FRAMEWORK_PAIR)
        else:
            result.info.append("frameworks venv not built: no framework run (make interop-venvs)")
        children = {v: Child(v, pythons[v], url) for v in variants}
        cpu: dict[str, list[float]] = {v: [] for v in variants}
        wall: dict[str, list[float]] = {v: [] for v in variants}
        inside: list[float] = []
        bias: list[float] = []
        # Net inside count per round: ours_split, and each without_PART variant.
        net_of: dict[str, list[float]] = {v: [] for v in (SPLIT, SPLIT_CAP, *WITHOUT)}
        doors: dict[str, list[float]] = {}
        gc: dict[str, list[float]] = {v: [] for v in variants}
        gc_inside: list[float] = []
        for r in range(rounds):
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            for variant in order:
                c, w, i, b = children[variant].sample(batches[variant])
                cpu[variant].append(c)
                wall[variant].append(w)
                gc[variant].append(children[variant].gc)
                if variant == SPLIT:
                    gc_inside.append(children[variant].gc_inside)
                    inside.append(i)
                    bias.append(b)
                    for door, spent in children[variant].doors.items():
                        doors.setdefault(door, []).append(spent)
                if variant in net_of:
                    net_of[variant].append(i - b)
            print(f"\r  realpath: round {r + 1}/{rounds}", end="", file=sys.stderr)
        print(file=sys.stderr)
        for child in children.values():
            child.close()
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=30)
    counted = [1e6 * i for i in inside]
    net = [1e6 * (i - b) for i, b in zip(inside, bias, strict=True)]
    result.info.append(
        f"our share, counted inside our entry points ({SPLIT}: budget enforced too): median "
        f"{harness.median(counted):.1f} µs thread CPU per call (rounds: {min(counted):.1f} to "
        f"{max(counted):.1f}) of {1e6 * harness.median(cpu[SPLIT]):,.0f} µs, without the "
        f"collector's pauses that began inside them ({1e6 * harness.median(gc_inside):.1f} µs: "
        f"see below); net of the "
        f"counting's own {1e6 * harness.median(bias):.1f} µs (the same count around a span "
        f"processor that does nothing): median {harness.median(net):.1f} µs (rounds: "
        f"{min(net):.1f} to {max(net):.1f})"
    )
    # As a share of the same round's call without our package: a figure a slower
    # or busier machine moves far less than it moves the microseconds.
    shares = [100 * n / (1e6 * b) for n, b in zip(net, cpu["bare"], strict=True)]
    cap_net = net_of[SPLIT_CAP]
    cap_shares = [100 * n / b for n, b in zip(cap_net, cpu["bare"], strict=True)]
    result.info.append(
        f"  as a share of the call without our package ({1e6 * harness.median(cpu['bare']):,.0f}"
        f" µs): median {harness.median(shares):.2f}% (rounds: {min(shares):.2f}% to "
        f"{max(shares):.2f}%); in a session with only its iteration cap ({SPLIT_CAP}): median "
        f"{1e6 * harness.median(cap_net):.1f} µs net, {harness.median(cap_shares):.2f}% of the "
        f"call (rounds: {min(cap_shares):.2f}% to {max(cap_shares):.2f}%)"
    )
    if doors:
        result.info.append(
            "  by door, net (median µs per call): "
            + ", ".join(
                f"{door} {1e6 * harness.median(values):.1f}" for door, values in doors.items()
            )
        )
    # What each part costs: the same round's ours_split minus the variant without it.
    parts = {
        part: [
            1e6 * (whole - without)
            for whole, without in zip(net_of[SPLIT], net_of[f"without_{part}"], strict=True)
        ]
        for part in PARTS
    }
    result.info.append(
        "  by part (ours_split minus the same with the part stubbed, median µs per call): "
        + ", ".join(f"{part} {harness.median(values):.1f}" for part, values in parts.items())
        + f"; the rest (placing and admitting the call, booking it into the ledger chain) "
        f"{harness.median(net) - sum(harness.median(v) for v in parts.values()):.1f}"
    )
    # The collector's pauses: what our objects add to them is ours - bare (the same
    # client, the same spans, with and without our package), not where they began.
    added = [1e6 * (o - b) for o, b in zip(gc["ours"], gc["bare"], strict=True)]
    whole = [n + a for n, a in zip(net, added, strict=True)]
    result.info.append(
        "  the garbage collector's pauses on the calling thread (median µs per call): "
        + ", ".join(f"{v} {1e6 * harness.median(gc[v]):.1f}" for v in ("bare", "ours", SPLIT))
        + f"; what our package adds to them (ours - bare, per round): median "
        f"{harness.median(added):.1f} µs (rounds: {min(added):.1f} to {max(added):.1f})"
    )
    result.info.append(
        f"  our share with it (inside our entry points, net, plus what we add to the "
        f"collector's pauses): median {harness.median(whole):.1f} µs per call, "
        f"{100 * harness.median(whole) / (1e6 * harness.median(cpu['bare'])):.2f}% of the "
        f"call without our package"
    )
    pairs = list(PAIRS) + ([FRAMEWORK_PAIR] if fw_python is not None else [])
    for bare, ours in pairs:
        result.add_row(f"{bare}_cpu", f"{bare}: thread CPU", cpu[bare])
        result.add_row(f"{ours}_cpu", f"{ours}: thread CPU", cpu[ours], floor=f"{bare}_cpu")
        result.add_row(f"{bare}_wall", f"{bare}: wall", wall[bare])
        result.add_row(f"{ours}_wall", f"{ours}: wall", wall[ours], floor=f"{bare}_wall")
        share = [1e6 * (o - b) for o, b in zip(cpu[ours], cpu[bare], strict=True)]
        result.info.append(
            f"our share, {ours} - {bare}: median {harness.median(share):.1f} µs thread CPU "
            f"per call (rounds: {min(share):.1f} to {max(share):.1f})"
        )
    return result


def main() -> None:
    harness.emit(run(harness.parse_args()))


if __name__ == "__main__":
    main()
