"""One variant of the real-path benchmark, driven over stdin/stdout by ``suite_realpath``.

Run as ``python bench/realpath_child.py VARIANT URL`` (standard library plus
what the variant needs: ``openai`` and the official OpenAI instrumentation,
``pydantic-ai`` for the framework variants; this package via ``PYTHONPATH``).
It sets its variant up once, then answers each line ``N`` on stdin with one
JSON line: the calling thread's CPU seconds and the wall seconds for N real
``openai`` calls against the stand-in at URL. Each variant lives in its own
process, so "without our package" really has none of it loaded, and the
driver interleaves the processes' rounds.

Variants:

* ``bare`` — the official OpenAI instrumentation on an SDK provider
  (BatchSpanProcessor into a dropping exporter): a user's set-up without us.
* ``ours`` — the same, plus our limits processor on that provider and every
  call inside one ``agent_session`` with a cap (so the client guard is on,
  as it is by default where limits exist).
* ``client`` / ``client_ours`` — no instrumentation at all; ``client_ours``
  runs the calls in a capped ``agent_session`` (the guard is the only door).
* ``fw_bare`` / ``fw_ours`` — a pydantic-ai agent run (one model request per
  run, no tools) with the OpenAI instrumentation, without and with us.
* ``ours_split`` — ``ours`` with its budget enforced, and the calling thread's
  CPU inside our entry points (the limits processor's ``on_start`` /
  ``on_end``; the client guard's patches of the request path, net of the SDK
  methods they call) counted apart:
  our share measured directly, where ``ours - bare`` is a difference of two
  noisy totals. The counting adds its own cost (a clock read and a wrapper
  call per entry, about 2 µs each in a real call): the same count around a
  span processor that does nothing measures it where it is paid, and it is
  reported per call (``bias``) so the suite states the total net of it.
  The same count is also kept per door (``start``, ``end``: the processor's
  ``on_start`` / ``on_end``; ``guard``: the client guard's patches of the request path).
* ``ours_split_cap`` — the same count in a session with only its iteration
  cap (what ``agent_session(...)`` has by default): nothing is reserved or
  priced ahead, the call is still priced and booked when it ends.
* ``without_PART`` — ``ours_split`` with one part of our per-call work
  replaced by a stub that returns what its caller expects (see ``PARTS``):
  the difference from ``ours_split`` is what that part costs in a real call,
  where our code runs cold between the client's and the SDK's. Measurement
  only: such a process does not hold its limits exactly.
"""

from __future__ import annotations

import gc
import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

MODEL = "gpt-4o-mini"
BIG_CAP = 10**9
BIG_BUDGET = 1e9


def _provider() -> Any:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Drop(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    return provider


def _instrument(provider: Any) -> None:
    from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor

    OpenAIInstrumentor().instrument(tracer_provider=provider)


def _ours(provider: Any | None, *, budget: bool = False) -> Any:
    """Our processor on the provider, and an open capped session (guard on by default).

    ``budget``: the session also enforces a (never reached) budget, so every
    call is reserved and settled at every level.
    """
    from techrevati.runtime import agent_session
    from techrevati.runtime.telemetry.limits.guard import install_guard
    from techrevati.runtime.telemetry.limits.processor import ensure_limits_processor

    if provider is not None:
        ensure_limits_processor(provider)
    limits: dict[str, Any] = {"budget_usd": BIG_BUDGET, "enforce_budget": True} if budget else {}
    session = agent_session("bench", max_iterations=BIG_CAP, **limits)
    session.__enter__()
    install_guard()  # idempotent; on by default once a session with limits exists
    return session


#: Thread CPU (ns) spent inside our entry points, and how many entries, for ``ours_split``.
INSIDE = [0, 0]
#: The same per door: the processor's on_start, its on_end, the client guard's patches.
DOORS: dict[str, list[int]] = {"start": [0, 0], "end": [0, 0], "guard": [0, 0]}
#: The same count around entries that do nothing (``_Noop``): the counting's own cost.
EMPTY = [0, 0]
#: The same count around a patch that only calls through, beside each guard patch:
#: what counting a patch costs by itself (see ``_count_guard``).
EMPTY_PATCH = [0, 0]


#: Thread CPU (ns) the calling thread spent in the garbage collector: in all, and the
#: part that fell inside our counted entry points (taken out of INSIDE and the doors).
GC = [0]
GC_INSIDE = [0]


def _watch_gc() -> None:
    """Time the collector's pauses on the calling thread (``gc.callbacks``).

    A collection runs where an allocation crosses its threshold, and then walks
    every object of the process, most of them the SDK's, the client's and the
    interpreter's: one that starts inside our entry point is not our work. It is
    measured apart: taken out of the inside count, and compared per round
    between processes with and without our package (what our objects add to it).
    """
    clock = time.thread_time_ns
    main = threading.get_ident()
    started = [0]

    def watch(phase: str, info: dict[str, int]) -> None:
        if threading.get_ident() != main:
            return
        if phase == "start":
            started[0] = clock()
        else:
            GC[0] += clock() - started[0]

    gc.callbacks.append(watch)


def _counted(
    fn: Callable[..., Any], into: list[int], door: list[int] | None = None
) -> Callable[..., Any]:
    clock = time.thread_time_ns
    also = door if door is not None else [0, 0]

    def inner(*args: Any, **kwargs: Any) -> Any:
        collected = GC[0]
        start = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            spent = clock() - start
            paused = GC[0] - collected  # the collector's, not ours (see _watch_gc)
            spent -= paused
            if into is INSIDE:
                GC_INSIDE[0] += paused
            into[0] += spent
            into[1] += 1
            also[0] += spent
            also[1] += 1

    return inner


def _uncounted(fn: Callable[..., Any], into: list[int], door: list[int]) -> Callable[..., Any]:
    """``fn`` is not ours (the SDK method a patch calls): its time is taken back out."""
    clock = time.thread_time_ns

    def inner(*args: Any, **kwargs: Any) -> Any:
        collected = GC[0]
        start = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            # (A pause in here is taken out once, by the counted patch around it.)
            spent = clock() - start - (GC[0] - collected)
            if into is INSIDE:
                GC_INSIDE[0] -= GC[0] - collected
            into[0] -= spent
            door[0] -= spent

    return inner


def _count_guard() -> None:
    """Count the client guard's patches of ``openai``'s request path, net of the SDK inside.

    The guard patches the client's request methods (building a request,
    processing its response, the request run around both); each patch calls
    the SDK's own method inside. A patch is counted whole (its own code, the
    doors it calls, the request run's context) and the SDK method it wraps is
    taken back out, by an ``_uncounted`` copy put in the closure cell that
    holds it. Counting a patch this way costs more than counting a span
    processor's entry (two more clock reads, the keyword arguments passed on
    twice), so the cost is measured the same way, at the same place: between
    each patch and its SDK method sits a patch that only calls through,
    counted into EMPTY_PATCH.
    """
    from techrevati.runtime.telemetry.limits import guard

    for owner, name, _ in guard._targets("openai"):
        patch = owner.__dict__.get(name)
        original = getattr(patch, guard._MARK, None)
        cells = getattr(patch, "__closure__", None) or ()
        held = [cell for cell in cells if cell.cell_contents is original]
        if patch is None or original is None or len(held) != 1:
            raise RuntimeError(f"guard patch of {owner.__name__}.{name} not as expected")
        sdk = _uncounted(original, EMPTY_PATCH, [0, 0])

        def through(*args: Any, _sdk: Callable[..., Any] = sdk, **kwargs: Any) -> Any:
            return _sdk(*args, **kwargs)

        between = _counted(through, EMPTY_PATCH)
        held[0].cell_contents = _uncounted(between, INSIDE, DOORS["guard"])
        counted = _counted(patch, INSIDE, DOORS["guard"])
        setattr(counted, guard._MARK, original)  # still the guard's patch to install_guard
        setattr(owner, name, counted)


def _count_inside(provider: Any) -> None:
    """Wrap our entry points so the thread CPU spent inside them adds up in INSIDE.

    The limits processor's ``on_start`` / ``on_end``, and the client guard's
    patches of the request path (``_count_guard``). A span processor that does
    nothing, counted the same way into EMPTY, is added after ours: its
    ``on_start`` / ``on_end`` run at the same places of every call, as cold as
    ours, so what a counted entry costs by itself is measured where it is paid
    (a tight loop around a no-op reads a fraction of it).
    """
    from opentelemetry.sdk.trace import SpanProcessor

    from techrevati.runtime.telemetry.limits.processor import LimitsProcessor

    for name, where in (("on_start", "start"), ("on_end", "end")):
        setattr(
            LimitsProcessor, name, _counted(getattr(LimitsProcessor, name), INSIDE, DOORS[where])
        )
    _count_guard()

    class _Noop(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            return None

        def on_end(self, span: Any) -> None:
            return None

    noop = _Noop()
    noop.on_start = _counted(noop.on_start, EMPTY)  # type: ignore[method-assign]
    noop.on_end = _counted(noop.on_end, EMPTY)  # type: ignore[method-assign]
    provider.add_span_processor(noop)


def _without(part: str) -> None:
    """Replace one part of our per-call work by a stub (the ``without_PART`` variants).

    Each stub returns what its caller expects, so the rest of the path runs as
    before: ``iteration`` (the session iteration written on the library span),
    ``reading`` (a fixed reading of the span instead of reading its model,
    provider and usage from its attributes), ``tracker`` (the session's usage
    tracker; the ledger still books the cost),
    ``pricing`` (a fixed price instead of the price lookup and arithmetic, at
    admission and at booking), ``guard`` (the client guard's hooks, and the
    strand record that lets it find the span's call).
    """
    from techrevati.runtime.pricing import PricedCall
    from techrevati.runtime.telemetry.limits import door, guard, ledger, membership, processor
    from techrevati.runtime.telemetry.readings.recognise import CallReading
    from techrevati.runtime.usage_tracking import UsageSnapshot, UsageTracker

    fixed = PricedCall(0.000153, None, True, "bundled", None, "")
    # What the stand-in reports: 120 input tokens (100 of them cache reads), 30 output.
    reading = CallReading(MODEL, "openai", UsageSnapshot(20, 30, 0, 100), 0, True)
    # (owner, name, stub): the names each module looks up for its own use.
    stubs: dict[str, tuple[tuple[object, str, Callable[..., Any]], ...]] = {
        "iteration": ((processor, "write_known", lambda span, attributes: None),),
        "reading": ((processor, "read_call", lambda name, attributes, scope=None: reading),),
        "tracker": ((UsageTracker, "record_priced", lambda self, model, usage, priced: priced[0]),),
        "pricing": (
            (ledger, "price_call", lambda model, usage, provider="": fixed),
            (processor, "has_pricing", lambda model, provider="": True),
        ),
        "guard": (
            (door, "begin", lambda options, provider, awaits=False: None),
            (door, "take", lambda options: None),
            (guard, "check_pending", lambda frame=None: None),
            (membership, "_sibling", lambda under, entry: entry),
        ),
    }
    if part not in stubs:
        raise ValueError(f"unknown part {part!r}")
    for owner, name, stub in stubs[part]:
        setattr(owner, name, stub)


#: The parts ``without_PART`` replaces (see ``_without``).
PARTS = ("iteration", "reading", "tracker", "pricing", "guard")


def setup(variant: str, url: str) -> Callable[[int], None]:
    """The variant's one-call function, set up once."""
    if variant.startswith("fw_"):
        return _framework(variant, url)
    import openai

    provider = None
    if variant in ("bare", "ours", "ours_split", "ours_split_cap") or variant.startswith(
        "without_"
    ):
        provider = _provider()
        _instrument(provider)
    if variant in ("ours", "client_ours"):
        _ours(provider)
    if variant in ("ours_split", "ours_split_cap") or variant.startswith("without_"):
        if variant.startswith("without_"):
            _without(variant.removeprefix("without_"))
        _ours(provider, budget=variant != "ours_split_cap")
        _count_inside(provider)
    client = openai.OpenAI(base_url=url + "/v1", api_key="bench-key", max_retries=0)
    messages = [{"role": "user", "content": "hi"}]

    def calls(n: int) -> None:
        create = client.chat.completions.create
        for _ in range(n):
            create(model=MODEL, messages=messages)  # type: ignore[arg-type]

    return calls


def _framework(variant: str, url: str) -> Callable[[int], None]:
    import asyncio

    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    provider = _provider()
    _instrument(provider)
    if variant == "fw_ours":
        _ours(provider)
    model = OpenAIChatModel(MODEL, provider=OpenAIProvider(base_url=url + "/v1", api_key="k"))
    agent = Agent(model)
    loop = asyncio.new_event_loop()

    def calls(n: int) -> None:
        for _ in range(n):
            loop.run_until_complete(agent.run("hi"))

    return calls


def main(argv: list[str]) -> int:
    variant, url = argv[1], argv[2]
    calls = setup(variant, url)
    _watch_gc()
    calls(20)  # warm: imports, connection, first-lookup caches
    print(json.dumps({"ready": variant}), flush=True)
    for line in sys.stdin:
        n = int(line)
        for counts in (INSIDE, EMPTY, EMPTY_PATCH, *DOORS.values()):
            counts[0] = counts[1] = 0
        GC[0] = GC_INSIDE[0] = 0
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        calls(n)
        cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
        got: dict[str, Any] = {
            "cpu": cpu / n,
            "wall": wall / n,
            "inside": INSIDE[0] / 1e9 / n,
            "gc": GC[0] / 1e9 / n,
            "gc_inside": GC_INSIDE[0] / 1e9 / n,
        }
        if EMPTY[1]:
            # The counting's own share, per call: what an empty processor entry
            # registered, times the processor's entries; and what the patches that
            # only call through registered (one beside each guard patch's entry).
            empty = EMPTY[0] / EMPTY[1]
            processor = DOORS["start"][1] + DOORS["end"][1]
            got["bias"] = (processor * empty + EMPTY_PATCH[0]) / 1e9 / n
            # Per door, net of the counting: what each door costs per call.
            got["doors"] = {
                "start": (DOORS["start"][0] - DOORS["start"][1] * empty) / 1e9 / n,
                "end": (DOORS["end"][0] - DOORS["end"][1] * empty) / 1e9 / n,
                "guard": (DOORS["guard"][0] - EMPTY_PATCH[0]) / 1e9 / n,
            }
        print(json.dumps(got), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
