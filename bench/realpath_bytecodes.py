"""Bytecodes our entry points execute per instrumented model call: a count noise cannot move.

    python -m bench.realpath_bytecodes            # per function, the 40 largest
    python -m bench.realpath_bytecodes --lines    # per line
    python -m bench.realpath_bytecodes --whole    # ours as a share of a whole real call
    python -m bench.realpath_bytecodes --cap-only # in a session with only its cap

``suite_realpath``'s ``ours_split`` times what a real ``openai`` call spends
inside our entry points; on a shared machine that moves by more than a small
change saves. This replays the same sequence without HTTP: a span with the
official OpenAI instrumentation's scope, name and attributes (at start and
at end, as it sets them), started under an enforced ``agent_session`` on a
provider with our processor, and the client guard's request and response
hooks called inside it with a real ``openai`` request-options object. It
counts the bytecodes executed inside ``on_start``, ``on_end``, ``door.begin``
and ``door.take`` (everything they call, SDK code included), per function or
per line, over 20 calls after 300 warm ones. About 20 ns a bytecode.

``--whole`` counts a whole real call instead: the real ``openai`` client with
the official OpenAI instrumentation, its transport an ``httpx.MockTransport``
that answers at once (no socket, so the count is the same on every run), and
our share of it: the bytecodes executed in this package's code (the client
guard's patches included) against every bytecode the call executed (the SDK's,
httpx's, pydantic's, the instrumentation's, ours). A share noise cannot move,
to set beside ``suite_realpath``'s timed one.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from types import CodeType

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from .bytecodes import count, line_of, print_lines, where
from .otelkit import tracer_provider

CALLS = 20
SCOPE = "opentelemetry.instrumentation.genai.openai"
MODEL = "gpt-4o-mini"
#: What the official OpenAI instrumentation (1.3b0) sets on a chat span at start and at end.
AT_START: dict[str, AttributeValue] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": MODEL,
    "server.address": "127.0.0.1",
    "server.port": 8000,
}
AT_END: dict[str, AttributeValue] = {
    "gen_ai.response.finish_reasons": ("stop",),
    "gen_ai.response.model": MODEL,
    "gen_ai.response.id": "chatcmpl-1",
    "gen_ai.usage.input_tokens": 120,
    "gen_ai.usage.output_tokens": 30,
    "gen_ai.usage.cache_read.input_tokens": 100,
    "gen_ai.usage.reasoning.output_tokens": 10,
}


def _call_factory(cap_only: bool = False) -> Callable[[], None]:
    from openai._models import FinalRequestOptions

    from techrevati.runtime import agent_session
    from techrevati.runtime.telemetry.limits import door
    from techrevati.runtime.telemetry.limits.processor import ensure_limits_processor

    provider, _ = tracer_provider()
    ensure_limits_processor(provider)
    tracer = provider.get_tracer(SCOPE, "1.3b0")
    limits: dict[str, object] = {} if cap_only else {"budget_usd": 1e9, "enforce_budget": True}
    session = agent_session("bench", max_iterations=10**9, **limits)  # type: ignore[arg-type]
    session.__enter__()  # open for the process's life, like the bench child's
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}

    def call() -> None:
        options = FinalRequestOptions.construct(
            method="post", url="/chat/completions", json_data=body, idempotency_key="k"
        )
        span = tracer.start_span(f"chat {MODEL}", kind=SpanKind.CLIENT, attributes=AT_START)
        with trace.use_span(span, end_on_exit=False):
            door.begin(options, "openai")
            door.take(options)
            span.set_attributes(AT_END)
        span.end()

    return call


def _whole_call_factory(cap_only: bool) -> Callable[[], None]:
    """One real ``openai`` chat call through the official instrumentation, answered in-process."""
    import httpx
    import openai

    from .realpath_child import _instrument, _ours, _provider

    provider = _provider()
    _instrument(provider)
    _ours(provider, budget=not cap_only)
    answer = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150},
    }
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=answer))
    client = openai.OpenAI(
        base_url="http://127.0.0.1:9/v1",
        api_key="bench-key",
        max_retries=0,
        http_client=httpx.Client(transport=transport),
    )
    messages = [{"role": "user", "content": "hi"}]

    def call() -> None:
        client.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]

    return call


def _whole(cap_only: bool, top: int) -> None:
    call = _whole_call_factory(cap_only)
    for _ in range(300):
        call()

    def calls() -> None:
        for _ in range(CALLS):
            call()

    per_function = count(calls, where)
    ours = {name: n for name, n in per_function.items() if name.startswith("techrevati/")}
    whole = sum(per_function.values()) / CALLS
    share = sum(ours.values()) / CALLS
    print(
        f"a whole call: {whole:,.0f} bytecodes; ours {share:,.0f} ({share / whole:.2%}); "
        f"without ours {whole - share:,.0f}"
    )
    for name, n in sorted(ours.items(), key=lambda item: -item[1])[:top]:
        print(f"{n / CALLS:6.0f}  {name}")


def _entries() -> set[CodeType]:
    """Our entry points on this path: what ``ours_split`` counts the CPU of."""
    from techrevati.runtime.telemetry.limits import door
    from techrevati.runtime.telemetry.limits.processor import LimitsProcessor

    return {
        LimitsProcessor.on_start.__code__,
        LimitsProcessor.on_end.__code__,
        door.begin.__code__,
        door.take.__code__,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.realpath_bytecodes")
    parser.add_argument("--lines", action="store_true", help="per line")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument(
        "--cap-only", action="store_true", help="a session with only its cap (no budget)"
    )
    parser.add_argument("--whole", action="store_true", help="ours as a share of a whole real call")
    args = parser.parse_args(argv)
    if args.whole:
        _whole(args.cap_only, args.top)
        return

    call = _call_factory(args.cap_only)
    for _ in range(300):
        call()

    def calls() -> None:
        for _ in range(CALLS):
            call()

    within = _entries()
    if args.lines:
        per_line = count(calls, line_of, within)
        print(f"inside our entry points: {sum(per_line.values()) / CALLS:,.0f} bytecodes a call")
        print_lines([(v / CALLS, k) for k, v in per_line.items()], args.top)
        return
    per_function = count(calls, where, within)
    print(f"inside our entry points: {sum(per_function.values()) / CALLS:,.0f} bytecodes a call")
    for name, n in per_function.most_common(args.top):
        print(f"{n / CALLS:6.0f}  {name}")


if __name__ == "__main__":
    main()
