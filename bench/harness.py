"""Timing harness shared by every suite: interleaved rounds, medians, paired ratios.

Standard library only: the 0.4.0 suite imports it from a separate venv.

A benchmark is a ``sample()`` callable that returns seconds per call for one
batch. ``interleave`` takes one sample of every benchmark per round, rotating
the order each round, so slow drifts of the machine (thermal, the batch span
processor's export thread, other tenants) hit every benchmark alike. A ratio
is taken per round between two samples of the same round, then summarised.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Sample = Callable[[], float]


@dataclass
class Bench:
    """One benchmark: ``sample()`` returns seconds per call for one batch."""

    name: str
    label: str
    sample: Sample
    floor: str | None = None  # name of the bench this one is compared with
    note: str = ""


@dataclass
class Result:
    """What a suite hands back to the driver (JSON-able)."""

    suite: str
    title: str
    rounds: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    info: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def add_row(
        self,
        name: str,
        label: str,
        samples_s: Sequence[float],
        floor: str | None = None,
        unit: str = "us",
        note: str = "",
    ) -> None:
        scale = 1e6 if unit == "us" else 1.0
        self.rows.append(
            {
                "name": name,
                "label": label,
                "samples": [s * scale for s in samples_s],
                "floor": floor,
                "unit": unit,
                "note": note,
            }
        )

    def check(self, name: str, ok: bool, detail: str) -> None:
        """A correctness assertion the driver prints (and fails the run on)."""
        self.checks.append({"name": name, "ok": bool(ok), "detail": detail})

    def row(self, name: str) -> dict[str, Any]:
        for row in self.rows:
            if row["name"] == name:
                return row
        raise KeyError(name)

    def to_json(self) -> str:
        return json.dumps(self.__dict__)


def env_info() -> dict[str, str]:
    info = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "cpus": str(os.cpu_count()),
    }
    try:
        from importlib.metadata import version

        info["opentelemetry-sdk"] = version("opentelemetry-sdk")
        info["techrevati-runtime"] = version("techrevati-runtime")
    except Exception:
        pass
    return info


def batch(run: Callable[[int], object], n: int) -> Sample:
    """A sample that times ``run(n)`` (which makes n calls) and divides by n."""

    def sample() -> float:
        start = time.perf_counter()
        run(n)
        return (time.perf_counter() - start) / n

    return sample


def interleave(
    benches: Sequence[Bench],
    rounds: int,
    warmup: int = 1,
    progress: str = "",
) -> dict[str, list[float]]:
    """``rounds`` samples of every bench, one per bench per round, order rotated."""
    out: dict[str, list[float]] = {b.name: [] for b in benches}
    count = len(benches)
    for r in range(warmup + rounds):
        offset = r % count
        for i in range(count):
            bench = benches[(i + offset) % count]
            gc.collect()
            value = bench.sample()
            if r >= warmup:
                out[bench.name].append(value)
        if progress:
            print(f"\r  {progress}: round {r + 1}/{warmup + rounds}", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    return out


def add_rows(result: Result, benches: Sequence[Bench], samples: dict[str, list[float]]) -> None:
    for bench in benches:
        result.add_row(bench.name, bench.label, samples[bench.name], bench.floor, note=bench.note)


# --- summaries (used by the driver) -------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def paired_ratios(values: Sequence[float], floor: Sequence[float]) -> list[float]:
    return [v / f for v, f in zip(values, floor, strict=False) if f > 0]


def fmt(value: float, unit: str) -> str:
    if unit == "us":
        return f"{value:.1f}" if value < 1000 else f"{value:,.0f}"
    if unit == "B":
        return f"{value:.2f}" if abs(value) < 10 else f"{value:,.0f}"
    if unit == "/s":
        return f"{value:,.0f}"
    return f"{value:.3g}"


UNIT_NAMES = {"us": "µs/call", "B": "bytes", "/s": "per second", "x": "×"}


def render(result: dict[str, Any]) -> str:
    """The table of one suite: median, min–max, and paired ratios to the floor."""
    rows = result["rows"]
    by_name = {row["name"]: row for row in rows}
    rounds = result["rounds"]
    how = f"{rounds} interleaved rounds" if rounds > 1 else "single runs"
    lines = [f"== {result['title']} ({how}) =="]
    width = max([len(row["label"]) for row in rows] + [20])
    header = f"  {'benchmark':<{width}}  {'median':>10}  {'min–max':>19}  {'ratio to floor':>28}"
    lines.append(header)
    for row in rows:
        samples = row["samples"]
        unit = row["unit"]
        med = median(samples)
        span = f"{fmt(min(samples), unit)}–{fmt(max(samples), unit)}" if len(samples) > 1 else "-"
        ratio = ""
        floor = by_name.get(row["floor"] or "")
        if floor is not None:
            pairs = paired_ratios(samples, floor["samples"])
            if pairs:
                ratio = f"{median(pairs):.2f}× {floor['name']} ({min(pairs):.2f}–{max(pairs):.2f})"
        unit_name = UNIT_NAMES.get(unit, unit)
        lines.append(
            f"  {row['label']:<{width}}  {fmt(med, unit):>10}  {span:>19}  {ratio:>28}"
            f"  {unit_name}" + (f"  [{row['note']}]" if row.get("note") else "")
        )
    for check in result.get("checks", []):
        mark = "ok  " if check["ok"] else "FAIL"
        lines.append(f"  [{mark}] {check['name']}: {check['detail']}")
    for info in result.get("info", []):
        lines.append(f"  {info}")
    return "\n".join(lines)


def ratio_of(result: dict[str, Any], name: str, floor: str) -> tuple[float, float, float]:
    """(median, min, max) of the per-round ratio ``name / floor`` in one suite."""
    by_name = {row["name"]: row for row in result["rows"]}
    pairs = paired_ratios(by_name[name]["samples"], by_name[floor]["samples"])
    return median(pairs), min(pairs), max(pairs)


def emit(result: Result) -> None:
    """Hand a suite's result to the driver: one JSON line, last on stdout."""
    result.env = env_info()
    sys.stdout.write("BENCH-RESULT " + result.to_json() + "\n")
    sys.stdout.flush()


def parse_args(argv: Sequence[str] | None = None) -> bool:
    """Suites take one flag, ``--quick``; returns whether it was given."""
    args = list(sys.argv[1:] if argv is None else argv)
    return "--quick" in args
