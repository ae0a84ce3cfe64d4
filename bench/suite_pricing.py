"""What a price costs per call: registered prices against the bundled database.

Rows (each sampled once per round, rounds interleaved):

* ``price_registered`` — ``price_call`` on an exactly registered model: the floor here.
* ``price_bundled`` — ``price_call`` on ``gpt-4o-mini`` from the database (cached rates).
* ``price_tiered`` — a database model with a long-context tier (band chosen per call).
* ``price_prefix`` — a model priced by a registered prefix (the 0.1.0 rule, cached).
* ``record_*`` — ``UsageTracker.record_and_price``, registered vs database.
* ``turn_*`` — a whole ``@agent_turn`` in an ``agent_session`` (metrics on), registered
  model vs database model: what a user's loop pays.

Info lines: the one-time costs (importing ``genai-prices``, the first lookup of a
model, which asks the database and derives its rates) and a cached lookup.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from techrevati.runtime import ModelPricing, UsageSnapshot, UsageTracker, register_pricing
from techrevati.runtime.decorators import agent_turn
from techrevati.runtime.pricing import database as price_db
from techrevati.runtime.pricing import price_call

from . import decorated, harness
from .harness import Bench, Result
from .otelkit import (
    INPUT_PER_MILLION,
    INPUT_TOKENS,
    MODEL,
    OUTPUT_PER_MILLION,
    OUTPUT_TOKENS,
    meter_provider,
    tracer_provider,
)

DATABASE_MODEL = "gpt-4o-mini"
TIERED_MODEL = "claude-sonnet-4-5"
USAGE = UsageSnapshot(input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS)
WARM, TIMED = 10, 100
# First-lookup sample: real model names the database knows, each asked once.
FRESH_MODELS = (
    "gpt-4o",
    "gpt-4.1",
    "gpt-4.1-mini",
    "o3",
    "o4-mini",
    "claude-haiku-4-5",
    "claude-opus-4-1",
    "claude-3-5-sonnet",
    "gemini-2.5-flash",
    "gemini-2.5-pro",
    "mistral-large-latest",
    "deepseek-chat",
)


class _Usage:
    __slots__ = ("completion_tokens", "prompt_tokens")

    def __init__(self) -> None:
        self.prompt_tokens = INPUT_TOKENS
        self.completion_tokens = OUTPUT_TOKENS


class _Completion:
    __slots__ = ("model", "usage")

    def __init__(self, model: str) -> None:
        self.model = model
        self.usage = _Usage()


_DATABASE_RESPONSE = _Completion(DATABASE_MODEL)


@agent_turn(DATABASE_MODEL)
def ask_database_model() -> _Completion:
    return _DATABASE_RESPONSE


def _pricing(model: str, provider: str = "") -> Callable[[int], None]:
    def run(n: int) -> None:
        call = price_call
        usage = USAGE
        for _ in range(n):
            call(model, usage, provider)

    return run


def _recording(model: str) -> Callable[[int], None]:
    def run(n: int) -> None:
        record = UsageTracker(retain_turns=0).record_and_price
        usage = USAGE
        for _ in range(n):
            record(model, usage)

    return run


def _turns(cm: Any, fn: Callable[[], Any]) -> Callable[[], float]:
    def sample() -> float:
        with cm:
            for _ in range(WARM):
                fn()
            start = time.perf_counter()
            for _ in range(TIMED):
                fn()
            elapsed = time.perf_counter() - start
        return elapsed / TIMED

    return sample


def _import_seconds() -> float:
    """Wall time of ``import genai_prices`` plus loading its snapshot, in a fresh process."""
    code = (
        "import time; t = time.perf_counter(); "
        "from genai_prices import data_snapshot; data_snapshot.get_snapshot(); "
        "print(time.perf_counter() - t)"
    )
    runs = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)
        for _ in range(3)
    ]
    return statistics.median(runs)


def _first_lookup_us() -> tuple[float, float]:
    """(median µs of a model's first lookup, median µs of a cached lookup)."""
    price_db.lookup(DATABASE_MODEL)  # the import and snapshot are paid before timing
    first = []
    for model in FRESH_MODELS:
        price_db.clear_cache()
        start = time.perf_counter()
        price_db.lookup(model)
        first.append(time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(10_000):
        price_db.lookup(DATABASE_MODEL)
    cached = (time.perf_counter() - start) / 10_000
    return statistics.median(first) * 1e6, cached * 1e6


def build(quick: bool) -> tuple[list[Bench], list[Bench]]:
    """(per-call pricing rows, whole-turn rows): timed in separate interleavings."""
    register_pricing(MODEL, ModelPricing(INPUT_PER_MILLION, OUTPUT_PER_MILLION))
    register_pricing("bench-fam", ModelPricing(INPUT_PER_MILLION, OUTPUT_PER_MILLION))
    for model in (MODEL, DATABASE_MODEL, TIERED_MODEL, "bench-fam-2026"):
        price_call(model, USAGE)  # resolve once: the rows time the steady state
    calls = 2000 if quick else 5000
    tp, _ = tracer_provider()
    mp = meter_provider()
    calls_rows = [
        Bench(
            "price_registered",
            "price_call, registered model",
            harness.batch(_pricing(MODEL), calls),
        ),
        Bench(
            "price_bundled",
            "price_call, database model (gpt-4o-mini)",
            harness.batch(_pricing(DATABASE_MODEL), calls),
            "price_registered",
        ),
        Bench(
            "price_bundled_provider",
            "price_call, database model with provider='openai'",
            harness.batch(_pricing(DATABASE_MODEL, "openai"), calls),
            "price_registered",
        ),
        Bench(
            "price_tiered",
            "price_call, tiered database model (claude-sonnet-4-5)",
            harness.batch(_pricing(TIERED_MODEL), calls),
            "price_registered",
        ),
        Bench(
            "price_prefix",
            "price_call, registered prefix (bench-fam-2026)",
            harness.batch(_pricing("bench-fam-2026"), calls),
            "price_registered",
        ),
        Bench(
            "record_registered",
            "record_and_price, registered",
            harness.batch(_recording(MODEL), calls),
        ),
        Bench(
            "record_bundled",
            "record_and_price, database model",
            harness.batch(_recording(DATABASE_MODEL), calls),
            "record_registered",
        ),
    ]
    turn_rows = [
        Bench(
            "turn_registered",
            "@agent_turn, registered model, metrics on",
            _turns(decorated.session(tp, mp), decorated.ask),
        ),
        Bench(
            "turn_bundled",
            "@agent_turn, database model, metrics on",
            _turns(decorated.session(tp, mp), ask_database_model),
            "turn_registered",
        ),
    ]
    return calls_rows, turn_rows


def main() -> None:
    quick = harness.parse_args()
    started = time.perf_counter()
    calls_rows, turn_rows = build(quick)
    # Many short rounds for the sub-microsecond rows: a shared, busy machine
    # moves the floor between rounds, and only same-round pairs are compared.
    call_rounds = 9 if quick else 41
    rounds = 5 if quick else 15
    samples = harness.interleave(calls_rows, call_rounds, warmup=1, progress="pricing")
    samples.update(harness.interleave(turn_rows, rounds, warmup=1, progress="pricing turns"))
    result = Result("pricing", "price per call, µs per call", call_rounds)
    harness.add_rows(result, calls_rows + turn_rows, samples)
    first_us, cached_us = _first_lookup_us()
    import_s = _import_seconds()
    result.info.append(
        f"one-time: import genai-prices + load its snapshot {import_s * 1e3:.0f} ms (first "
        f"lookup in a process); first lookup of a model {first_us:.0f} µs (median of "
        f"{len(FRESH_MODELS)} models); cached database lookup {cached_us:.3f} µs"
    )
    result.info.append(
        f"pricing rows: {call_rounds} rounds; @agent_turn rows: {rounds} rounds; "
        f"genai-prices {price_db.database_version()}; suite took "
        f"{time.perf_counter() - started:.0f} s"
    )
    harness.emit(result)


if __name__ == "__main__":
    main()
