"""The client guard as a full door: a client request no span announced is a call.

The guard (``guard.py``) patches the ``openai`` / ``anthropic`` clients'
request path. For every model request (chat completions, responses,
completions, embeddings, messages) it asks ``membership`` which call the
request is: a model span of this request already open on this thread
or task (our turn, or another instrumentation's span) makes it that call;
otherwise the guard admits it itself, against the same ledger chain, so a bare
client with no instrumentation, or a tool calling a client directly, is capped
and budgeted like any other call, and admitted by its session's circuit
breaker, if it has one (``ledger.breaker_admit_call``). The guard then reads
the response (or the stream's chunks) and books what it used; a request that
fails is released.

Retries of one request (the SDKs' own, sharing one idempotency key) are one
call. All of this state lives in a context variable, so threads and asyncio
tasks never see each other's requests.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from ...caller import UserSite, log_once, user_site
from ...pricing import has_pricing
from ...usage_tracking import UsageSnapshot
from ..readings.platforms import PlatformCall, platform_call
from ..readings.recognise import NO_CACHE_SCOPES, CallReading, booked_model, more_exact
from ..readings.usage_extract import (
    Extracted,
    StreamReader,
    extract,
    extract_output,
    sse_payloads,
)
from . import membership
from .booking import book, cut_usage, reading_stream, stream_read
from .estimate import (
    DEFERRED,
    RAISED_FROM,
    capped,
    defer,
    input_known,
    request_estimate_usd,
    request_tokens,
    seen_usage,
    text_chars,
    tokens_of_text,
)
from .ledger import STREAMING, Claim, Ledger, breaker_abandoned, breaker_call_ended
from .membership import SpanEntry
from .probe import Probe, _ProbeWait, other_event_loop


def _warn_once(message: str) -> None:
    # Said once per process (whatever the message): the first failure tells the cause.
    log_once("guard", message, level=logging.ERROR, exc_info=True)


#: Endpoints that are model calls (suffixes of the request path).
_MODEL_PATHS = ("/chat/completions", "/responses", "/completions", "/embeddings", "/messages")


def is_model_request(method: str, url: str) -> bool:
    """True for a POST to a model-call endpoint (not ``count_tokens``, batches, files).

    Bedrock's and Vertex's endpoints for Anthropic's models are model calls too
    (``readings.platforms``: the ``anthropic`` package's clients for them).

    Example::

        >>> is_model_request("post", "/chat/completions"), is_model_request("post", "/v1/messages")
        (True, True)
        >>> is_model_request("post", "/v1/messages/count_tokens")
        False
        >>> is_model_request("post", "/v1/threads/thread_1/messages")  # no model runs
        False
        >>> is_model_request("post", "/model/anthropic.claude-3-5-sonnet-20240620-v1:0/invoke")
        True
    """
    if method == "post" and url in _MODEL_PATHS:
        return True  # what the clients send for every call: no string is built
    if method.lower() != "post":
        return False
    path = url.split("?", 1)[0].rstrip("/")
    if path.endswith("/responses/compact"):
        return True  # a model pass over a conversation, billed with its usage
    if not path.endswith(_MODEL_PATHS):
        return platform_call(path) is not None
    # The Assistants API adds a message to a thread at /threads/{id}/messages: no model runs.
    return not (path.endswith("/messages") and path.rsplit("/", 3)[-3:-2] == ["threads"])


#: An async client's call admitted once its model's probe settled: (the entry it is
#: admitted under, its request key, whether its model is priced, the probe's wait).
#: (under, request, priced, the wait, the request's estimate for a lead's waiter else None)
_Later = tuple[SpanEntry, object, bool, _ProbeWait, float | None]


@dataclass(eq=False, slots=True)
class RequestCall:
    """One client request in flight, from its first attempt to its booking."""

    key: object
    entry: SpanEntry | None
    #: True when this request's own entry must be booked by the guard.
    books: bool
    provider: str
    model: str
    body: Mapping[str, Any] | None
    attempt: int = 0
    #: The response has been handed over (or the request failed): no more attempts.
    processed: bool = False
    done: bool = False
    #: The SDK request method it was built in: while that runs, an attempt's request
    #: collected (during a retry's backoff) is no failure; its end says (``unanswered``).
    in_request: InRequest | None = None
    #: A stream's: the user's line that made the request (``_wrap_stream``).
    site: UserSite | None = None
    #: Not admitted yet: an async client's call waiting for its model's probe (``_Later``).
    later: _Later | None = None


class InRequest:
    """One run of the SDK's request method (every attempt of one call), while it runs."""

    __slots__ = ("claim", "lead", "options", "provider", "running")

    def __init__(self, options: object = None, provider: str = "") -> None:
        self.running = True
        #: An async client's request options and provider: a span that names no model
        #: at its start, started inside this run, reads them (``processor._admit_on_loop``).
        self.options = options
        self.provider = provider
        #: The call whose breaker permit this run's end tells (``breaker_call_ended``).
        self.claim: Claim | None = None
        #: Another instrumentation's span call that leads its model's first calls
        #: (``_span_leads``): a run that raised ends that lead (``run_ended``).
        self.lead: Claim | None = None


_IN_FLIGHT: ContextVar[RequestCall | None] = ContextVar("techrevati_request", default=None)
#: Set by the guard's door around the SDK's request method. A task created inside it
#: inherits it, and is told by ``running`` once the method ended.
IN_REQUEST: ContextVar[InRequest | None] = ContextVar("techrevati_in_request", default=None)

# Asked for every instrumented request: get_running_loop() raises off a loop.
_running_loop = asyncio._get_running_loop


def _expected_cost(
    model: str, body: Mapping[str, Any] | None, provider: str, ledger: Ledger
) -> tuple[float, bool, bool]:
    """What the guard's own call reserves, whether its request was counted for it,
    and whether it is its model's probe (its cost unknown: it runs alone, ``probe.py``).

    A first call of its model reserves its request's upper bound at once (nothing
    else tells its cost; at least ``call_estimate_usd``); so does a call with its
    own output cap under a fleet scope or shared session, which other processes
    see only as admitted. Otherwise the model's learned cost, and a capped request
    is counted only if another call is admitted while it runs (``estimate.defer``).
    A first call whose input is not all text in its body (an image, a file, a
    stored conversation: ``input_known``) has no bound its characters could give,
    so, with no ``call_estimate_usd``, nothing tells its cost: it probes.
    """
    if not ledger.has_budget():
        return 0.0, True, False
    expected = ledger.expected_cost(model)
    if body is not None:
        first = ledger.learned_cost(model) is None
        if first and not expected and model and not input_known(body):
            # 12 concurrent first calls with an image part, billed $1 each, reserved
            # ~$0.009 each at their text's estimate: all 12 passed a $5 budget.
            return 0.0, True, True
        if first or (ledger._fleet_chain and capped(body)):
            estimate = request_estimate_usd(model, body, provider)
            if estimate is not None:
                return max(estimate, expected), True, False
    return expected, False, False


def _admit_probing(
    under: SpanEntry,
    model: str,
    request: object,
    body: Mapping[str, Any],
    provider: str,
    priced: bool,
    awaits: bool,
) -> SpanEntry | _ProbeWait:
    """Admit the guard's own call as its model's probe, or once that probe settled.

    On a thread, a call of the model while another one probes waits for it (up
    to ``probe_wait_s``, as a library span does, ``processor._after_probe``), then
    reserves what the probe cost. On an event loop nothing may wait: an async
    client's call gets the wait back (``arequest_fleet`` awaits it before sending);
    a sync client's runs at once at its request's estimate. So does a call whose
    wait ran out (the probe hangs or was abandoned).
    """
    ledger = under.ledger
    deadline = 0.0
    while True:
        expected = ledger.expected_cost(model)  # what the probe taught, once it settled
        try:
            return membership.admit_request(
                under, model, request, expected, priced, defer_fleet=awaits, probe=True
            )
        except _ProbeWait as wait:
            waited = _wait_for(wait, deadline, awaits)
            if isinstance(waited, _ProbeWait):
                return waited
            if waited is None:
                break
            deadline = waited
    return _admit_unprobed(under, model, request, body, provider, priced, awaits)


def _wait_for(wait: _ProbeWait, deadline: float, awaits: bool) -> float | _ProbeWait | None:
    """What a call that a probe or lead holds does here, where ``admit`` raised ``wait``.

    The wait itself for an async client's call on asyncio (its request awaits it
    before anything is sent, ``arequest_fleet``); None to decide now, on an event
    loop that nothing may block, or once the wait ran out; else it waits on this
    thread until the probe or lead ended and returns the deadline (``deadline``:
    0 for the first wait, which starts its ``timeout``).
    """
    if _running_loop() is not None:
        return wait if awaits else None
    if other_event_loop():
        return None
    now = time.monotonic()
    deadline = deadline or now + wait.timeout
    return deadline if wait.probe.wait(deadline - now) else None


def _admit_leading(
    under: SpanEntry,
    model: str,
    request: object,
    expected: float,
    priced: bool,
    awaits: bool,
) -> tuple[SpanEntry | _ProbeWait, bool]:
    """Admit a first call of its model at its request's estimate (``expected``).

    The first of a burst is its model's lead; the others go on at their own
    estimates while the budget holds them all. One the budget refuses only for
    what the burst reserves waits for the lead to settle instead (on a thread,
    up to ``probe_wait_s``; an async client's call gets the wait back, as a
    probing one does), then is admitted at what the lead cost. A wait that runs
    out, or a sync client's call on an event loop, is decided at its estimate.
    Returns (the entry, or the wait an async client awaits; whether it was
    admitted at what the lead cost, a later call's reservation, not its estimate).
    """
    ledger = under.ledger
    deadline = 0.0
    leading = True
    while True:
        try:
            entry = membership.admit_request(
                under,
                model,
                request,
                expected,
                priced,
                defer_fleet=awaits,
                probe=True,
                lead=leading,
            )
            return entry, not leading
        except _ProbeWait as wait:
            waited = _wait_for(wait, deadline, awaits)
            if isinstance(waited, _ProbeWait):
                return waited, False
            if waited is None:
                break
            deadline = waited
            if ledger.learned_cost(model) is not None:
                # What the lead cost, as every later call of the model reserves.
                expected = ledger.expected_cost(model)
                leading = False
    entry = membership.admit_request(under, model, request, expected, priced, defer_fleet=awaits)
    return entry, not leading


async def _aadmit_probing(call: RequestCall, later: _Later) -> SpanEntry:
    """``_admit_probing`` for an async client's call that found its model probing.

    Also the admission of a library model span that waited (``call.entry``,
    ``membership.WAITING``): its call, admitted as the span placed it.
    """
    under, request, priced, wait, estimate = later
    ledger = under.ledger
    waiting = call.entry
    deadline = time.monotonic() + wait.timeout
    while await wait.probe.await_end(deadline - time.monotonic()):
        # A lead's waiter whose lead failed (nothing learned) may lead next, at its
        # request's estimate, as on a thread (``_admit_leading``).
        expected = ledger.expected_cost(call.model)
        lead = estimate is not None and ledger.learned_cost(call.model) is None
        if lead and estimate is not None:  # (lead says it; mypy does not know)
            expected = estimate
        try:
            if waiting is not None:
                return membership.admit_waiting(
                    waiting, expected, defer_fleet=True, probe=True, lead=lead
                )
            return membership.admit_request(
                under,
                call.model,
                request,
                expected,
                priced,
                defer_fleet=True,
                probe=True,
                lead=lead,
            )
        except _ProbeWait as again:
            wait = again  # that probe or lead failed and another call runs as one now
    body = call.body if call.body is not None else {}
    if waiting is not None:
        expected = _unprobed_cost(call.model, body, call.provider, ledger)
        return membership.admit_waiting(waiting, expected, defer_fleet=True)
    return _admit_unprobed(under, call.model, request, body, call.provider, priced, True)


def _admit_unprobed(
    under: SpanEntry,
    model: str,
    request: object,
    body: Mapping[str, Any],
    provider: str,
    priced: bool,
    awaits: bool,
) -> SpanEntry:
    expected = _unprobed_cost(model, body, provider, under.ledger)
    return membership.admit_request(under, model, request, expected, priced, defer_fleet=awaits)


def _unprobed_cost(model: str, body: Mapping[str, Any], provider: str, ledger: Ledger) -> float:
    """What a call reserves with no probe or lead to wait for (none, or the wait ran
    out): at least what its request's text says, or what was learned of its model."""
    return max(request_estimate_usd(model, body, provider) or 0.0, ledger.expected_cost(model))


def begin(options: Any, provider: str, awaits: bool = False) -> RequestCall | None:
    """A request is about to be built: the same call as its retries, or a new one.

    Returns None for a request that is not a model call. May raise the refusal
    (cap, budget, fleet), before any byte is sent. ``awaits``: an async client
    whose ``_prepare_request`` awaits the fleet (``arequest_fleet``) before
    sending, so a call the guard admits itself leaves its fleet scopes to it.
    """
    key = getattr(options, "idempotency_key", None)
    current = _IN_FLIGHT.get()
    if current is not None and key is not None and current.key == key and not current.processed:
        current.attempt += 1  # the SDK's retry of the same request
        return current
    method = getattr(options, "method", "")
    url = getattr(options, "url", "")
    platform = None
    if method != "post" or url not in _MODEL_PATHS:  # (is_model_request's first test inline)
        if not (isinstance(method, str) and isinstance(url, str) and is_model_request(method, url)):
            return None
        if ":" in url or "/model/" in url:  # a platform's URL (Vertex's method, Bedrock's id)
            platform = platform_call(url)
    body = getattr(options, "json_data", None)
    if type(body) is not dict and not isinstance(body, Mapping):  # dict first: no ABC check
        body = None
    if platform is not None:
        body = _as_sent_to_anthropic(body, platform)
        provider = platform.provider  # priced at the platform's own published price
    model = body.get("model") if body is not None else None
    model = model if isinstance(model, str) else ""
    request = key if key is not None else object()
    # An instrumented call: the span another instrumentation opened around this
    # request is the call, admitted already; nothing is estimated or admitted here.
    # The span started last on this strand first: no context read for the usual call.
    entry = membership.strand_request(model, request)
    created = False
    estimated = False
    if entry is None and membership.WAITING:
        entry = membership.waiting_here(request)
        if entry is not None:
            waits = _begin_waiting(entry, options, key, provider, model, body, request, awaits)
            if waits is not None:
                return waits
    if entry is None:
        under = membership.enclosing_context(None)
        if under is None:
            membership.note_outside(f"a request of the {provider} client")
            return None
        entry = membership.request_span(under, model, request)
        if entry is None:
            created = True
            ledger = under.ledger
            expected, estimated, probe = _expected_cost(model, body, provider, ledger)
            priced = not ledger.has_budget() or not model or has_pricing(model, provider)
            # A first call of its model, reserved at its request's estimate: its lead.
            # (Not a stream: the caller holds it unread, maybe while it waits on work
            # that would wait for it.)
            lead = (
                estimated
                and bool(model)
                and ledger.learned_cost(model) is None
                and not (body is not None and body.get("stream"))
                and not _streaming_response(options)
            )
            if (probe and body is not None) or lead:
                if lead:
                    found, waited = _admit_leading(under, model, request, expected, priced, awaits)
                    # Admitted once its lead settled: at what the lead cost, a later call.
                    estimated = not waited
                else:
                    found = _admit_probing(
                        under, model, request, body or {}, provider, priced, awaits
                    )
                if isinstance(found, _ProbeWait):
                    # On the loop, its model probing: admitted when its request is
                    # prepared, once the probe settled (``arequest_fleet``).
                    call = RequestCall(key, None, True, provider, model, body)
                    call.later = (under, request, priced, found, expected if lead else None)
                    call.in_request = IN_REQUEST.get()
                    _IN_FLIGHT.set(call)
                    return call
                entry = found
            else:
                entry = membership.admit_request(
                    under, model, request, expected, priced, defer_fleet=awaits
                )
            # (Our turn's own request joins the turn, admitted before at its own cost.)
            estimated = estimated and not entry.same_call
    claim = entry.call
    unnamed_fleet = False
    if claim is not None:
        if claim.permit is not None:
            _tell_breaker_at_end(claim)
        if claim.fleet_deferred and not (created and awaits):
            if claim.model:
                # A span admitted on an event loop whose request reached no awaiting door
                # (see ``afleet``): the fleet is asked now, still before anything is sent.
                claim.leaf.reserve_deferred(claim)
            else:
                unnamed_fleet = True  # asked below, once its request named its model
    if (
        claim is not None
        and claim.open
        and body is not None
        and model
        and not estimated
        and claim.leaf._budgeted
    ):
        if not claim.model and not claim.ours:
            # A span that named no model at its start (OpenLLMetry's): its request does.
            _name_call(claim, model, body, provider)
        else:
            _bound(claim, model, body, provider)
    if unnamed_fleet and claim is not None and claim.open:
        # A span that named no model at its start asks the fleet only now, as a call of
        # its request's model (``processor.defers_fleet``): asked as "", each of a
        # first burst held $0 there, and a fleet scope's budget let 20 of 20 through.
        claim.leaf.reserve_deferred(claim)
    if claim is not None and claim.probe is not None and not created and not claim.ours:
        _span_leads(claim, body, options)
    if body is not None and claim is not None and claim.open and body.get("background") is True:
        # A background response answers at once, without usage (it comes only with the
        # finished run, to a later retrieve): booked at its request's upper bound.
        claim.estimated = UsageSnapshot(*request_tokens(body, provider))
        claim.ended_early = "background"
    if (
        not created
        and not (body is not None and body.get("stream"))
        and entry.producer not in NO_CACHE_SCOPES
        and not _streaming_response(options)
    ):
        # An open span of another instrumentation is this call and books it from the
        # response; only a stream is watched (its text estimates a call without usage),
        # a response whose span reports no cache counts (its reading is coarse), and a
        # body read after the client returned (no span saw it: ``_watch_body``).
        if current is not None:
            _IN_FLIGHT.set(None)  # (a set costs a context copy: only when there is one)
        return None
    call = RequestCall(key, entry, created, provider, model, body)
    if created:
        call.in_request = IN_REQUEST.get()
    if (
        claim is not None
        and claim.estimated is None
        and body is not None
        and (not created or (entry.same_call and body.get("stream")))
    ):
        # Another instrumentation's span books this stream, or our turn does (a turn
        # that yields the stream's chunks ends when its caller stops reading, while
        # the stream itself is closed only when collected), maybe before the guard
        # read its end (closed early, or no include_usage): what its request says is
        # known now, so the call is never booked at $0. (The guard's own calls are
        # estimated when they end: counting the request costs ~20 µs, not paid on
        # every call.)
        claim.estimated = seen_usage(body, provider, 0)
    _IN_FLIGHT.set(call)
    return call


def _span_leads(claim: Claim, body: Mapping[str, Any] | None, options: Any) -> None:
    """The request of another instrumentation's span whose call leads (or probes) its
    model's first calls.

    Its run of the SDK's request method is told, so that a run ending in an error
    ends the lead even if the span is never ended (``unanswered.run_ended``). On
    an event loop, a stream leads no more (its span could not tell at its start):
    its reader may be waiting for the very calls that would wait for it (a
    gather of streams read once all returned). Its request's bound is reserved
    first (``_bound``, above), so the calls it held see what it may cost.
    """
    run = IN_REQUEST.get()
    if run is not None:
        run.lead = claim
    if _running_loop() is not None and _streamed(body, options):
        claim.leaf.end_probe(claim)


def _streamed(body: Mapping[str, Any] | None, options: Any) -> bool:
    """Whether a request is read as a stream: ``stream=True``, or a response read as
    one (``with_streaming_response``)."""
    return (body is not None and bool(body.get("stream"))) or _streaming_response(options)


def _begin_waiting(
    entry: SpanEntry,
    options: Any,
    key: object,
    provider: str,
    model: str,
    body: Mapping[str, Any] | None,
    request: object,
    awaits: bool,
) -> RequestCall | None:
    """The request of a library model span that waits for its admission (``membership.WAITING``).

    An async client's request awaits it before anything is sent: the wait goes
    to ``arequest_fleet``, as a bare async client's call that found its model's
    lead in flight (the request's estimate kept, should that lead fail and this
    call lead next). Anything else (a stream; a sync client on the loop, or on
    trio's thread) is decided now, at its request's estimate: None, and
    ``begin`` goes on with the admitted span.
    """
    waiting = membership.WAITING[entry]
    if not waiting.model and model:
        _name_waiting(waiting, model, provider, entry.ledger)
    if awaits and _running_loop() is not None and not _streamed(body, options):
        # (An input its body does not hold, an image, has no bound from its text: with
        # no estimate it probes, should the lead fail, as a bare client's call does.)
        estimate = (
            request_estimate_usd(model, body, provider)
            if body is not None and model and input_known(body)
            else None
        )
        call = RequestCall(key, entry, False, provider, model, body)
        call.later = (waiting.under, request, waiting.priced, waiting.wait, estimate)
        call.in_request = IN_REQUEST.get()
        _IN_FLIGHT.set(call)
        return call
    # (A stream is never held: its reader may be what the calls it waits for wait on.)
    expected = _unprobed_cost(waiting.model, body or {}, provider, entry.ledger)
    # (Its fleet hold awaited by the guard on asyncio only: on trio's thread, held now.)
    membership.admit_waiting(entry, expected, defer_fleet=awaits and _running_loop() is not None)
    return None


def _name_waiting(waiting: membership.Waiting, model: str, provider: str, ledger: Ledger) -> None:
    """A waiting span that named no model at its start (OpenLLMetry's) waited for any
    lead in flight (``Ledger._lead_of``): its request names its model, whose price
    admits it, and whose lead it waits for now. With none in flight (it settled or
    failed meanwhile), the wait is over at once: admitted at what that lead cost, or
    leading at its request's estimate, as a span that named the model at its start."""
    waiting.model = model
    if ledger._budgeted:
        waiting.priced = has_pricing(model, provider)
    lead = ledger.lead_in_flight(model)
    if lead is None:
        lead = Probe(model)
        lead.end()
    if lead is not waiting.wait.probe:
        waiting.wait = _ProbeWait(lead, waiting.wait.timeout)


def _tell_breaker_at_end(claim: Claim) -> None:
    """The session's breaker admitted this request's call: the end of the SDK's request
    method (every attempt, ``unanswered.run_ended``) tells it how the call ended."""
    running = IN_REQUEST.get()
    if running is not None:
        running.claim = claim


def _as_sent_to_anthropic(body: Mapping[str, Any] | None, platform: PlatformCall) -> dict[str, Any]:
    """The request body as Anthropic's own API would have it: its model and stream flag back.

    Bedrock's and Vertex's clients move the model into the URL (Bedrock the
    ``stream`` flag too) before the request is built; the guard's estimates,
    its stream handling and its booking read both from the body. A copy: the
    body sent is left as it is.

    Example::

        >>> call = PlatformCall("aws.bedrock", "anthropic.claude-3-haiku-20240307-v1:0", True)
        >>> _as_sent_to_anthropic({"max_tokens": 8}, call)["model"]
        'anthropic.claude-3-haiku-20240307-v1:0'
    """
    seen: dict[str, Any] = {**(body or {}), "model": platform.model}
    if platform.stream:
        seen["stream"] = True
    return seen


#: The header the SDKs send a ``with_streaming_response`` request with ("stream").
_RAW_HEADER = "X-Stainless-Raw-Response"


def _streaming_response(options: Any) -> bool:
    """A ``with_streaming_response`` request: its body is read after the client returned."""
    headers = getattr(options, "headers", None)
    return type(headers) is dict and headers.get(_RAW_HEADER) == "stream"


def _bound(claim: Claim, model: str, body: Mapping[str, Any], provider: str) -> None:
    """What an admitted call's request says it may cost, for a call not reserved at it."""
    ledger = claim.leaf
    learned = ledger.learned_cost(model)
    if claim.default_cap:
        # Admitted on an event loop at its provider's default output length: its
        # request's own bound replaces that (a sync client's request on the loop;
        # an async one's was bounded on entering its request method, ``afleet``).
        bound_default_cap(claim, model, body, provider)
    elif learned is None:
        # Nothing learned of its model: the call was admitted knowing nothing of
        # its cost, only its output cap (a span started on an event loop,
        # ``processor._admit_on_loop``) or ``call_estimate_usd``. What its request
        # says is reserved at once, so the calls admitted next see it.
        estimate = request_estimate_usd(model, body, provider)
        if estimate:
            with ledger._lock:  # (as the call's close: settle pops it after, release too)
                if claim.open and estimate > claim.expected:
                    RAISED_FROM.setdefault(claim, claim.expected)
            ledger.top_up(claim, estimate)  # (only ever raises a reservation)
    else:
        if learned > claim.expected:
            ledger.top_up(claim, learned)  # (a span that named no model at its start)
        if capped(body):
            # Reserved at what the model cost before; its request bounds what it may
            # cost, maybe more (a longer prompt, a larger max_tokens): counted when
            # that matters, once another call is admitted while this one runs.
            defer(claim, model, body, provider)


def bound_default_cap(claim: Claim, model: str, body: Mapping[str, Any], provider: str) -> None:
    """Reserve for a call admitted at its default output length what its request may cost.

    ``processor._admit_on_loop`` admits a model span that starts on an event
    loop, with nothing learned of its model and no output cap on the span (the
    official OpenAI instrumentation sets ``gen_ai.request.max_tokens`` only when
    its span ends), at the provider's default output length: 4,096 tokens. Once
    the guard sees the request, its own upper bound (its ``max_tokens``, else
    that default length; its prompt) replaces the placeholder, lowered as well
    as raised, when the request's whole input is text in its body (``input_known``):
    the call cannot cost more than that. Asked once per call.
    """
    claim.default_cap = False
    estimate = request_estimate_usd(model, body, provider)
    if estimate:
        # Lowered only when the request's whole input is in its body: an image, a file
        # or a stored conversation costs more than its characters say.
        claim.leaf.reserve_at(claim, estimate, lower=input_known(body))


async def afleet(options: Any = None, provider: str = "") -> None:
    """Await the fleet reservation of the model span open on this task, if it is deferred.

    The limits processor admits another instrumentation's model span that
    starts on an event loop at the local levels only (``defer_fleet``); the
    async client's request path awaits its fleet scopes here, their Redis round
    trips on the fleet's I/O threads, before the request is built and sent. May
    raise the fleet's refusal (the span's call is then released and un-counted).

    A span admitted at its default output length (``bound_default_cap``) is
    first reserved at its request's bound (``options``, the SDK's request
    options): here, before the request method's first await (a client's first
    request looks up its platform on a thread), so the other tasks' spans that
    start meanwhile see what this call may really cost, and so does the fleet.
    """
    found = membership.STRAND.get()
    claim = found.call if found is not None else None
    if claim is None:
        return
    if claim.default_cap and claim.open:
        body = getattr(options, "json_data", None)
        if isinstance(body, Mapping) and body.get("model") == claim.model:
            bound_default_cap(claim, claim.model, body, provider)
    elif not claim.model and claim.open and not claim.ours and claim.leaf._budgeted:
        # A span that names no model at its start (OpenLLMetry's), decided by its request
        # as the request method starts, before its first await: the next span sees it.
        body = getattr(options, "json_data", None)
        model = body.get("model") if isinstance(body, Mapping) else None
        if isinstance(body, Mapping) and isinstance(model, str) and model:
            try:
                if _running_loop() is not None:
                    await _aname_call(claim, model, body, provider)
                else:
                    _name_call(claim, model, body, provider)  # (trio: never waits)
            except BaseException as refused:
                breaker_call_ended(claim, refused)  # (the request's run does not tell it)
                raise
    if claim.fleet_deferred and claim.open:
        await claim.leaf.areserve_fleet(claim)


def _name_call(claim: Claim, model: str, body: Mapping[str, Any], provider: str) -> None:
    """Decide again, by its request, a span's call admitted before its model was known.

    ``Ledger.admit_named``: refused if its model has no price under an enforced
    budget; reserved at what the model's calls cost, else at its request's
    estimate (it then leads the model's first calls). On a thread it waits for the
    model's first call in flight, up to the session's ``probe_wait_s``, then is
    decided without waiting (never on an event loop or trio's thread). May raise the refusal:
    nothing is sent. ``_aname_call`` is the same, awaited on an event loop.
    """
    ledger = claim.leaf
    estimate, priced = _request_terms(claim, model, body, provider)
    may_wait = _running_loop() is None and not other_event_loop()
    deadline = time.monotonic() + ledger.probe_wait_s
    while True:
        first = ledger.admit_named(claim, model, estimate, priced, may_wait)
        if first is None:
            break
        if not first.wait(deadline - time.monotonic()):
            may_wait = False  # waited long enough: decided without waiting
    _bound_learned(claim, model, body, provider)


async def _aname_call(claim: Claim, model: str, body: Mapping[str, Any], provider: str) -> None:
    """``_name_call`` on an event loop: the wait for the model's first call is awaited
    (an await may separate a span's start from its request: it did not wait then)."""
    ledger = claim.leaf
    estimate, priced = _request_terms(claim, model, body, provider)
    may_wait = True
    deadline = time.monotonic() + ledger.probe_wait_s
    while True:
        first = ledger.admit_named(claim, model, estimate, priced, may_wait)
        if first is None:
            break
        if not await first.await_end(deadline - time.monotonic()):
            may_wait = False
    _bound_learned(claim, model, body, provider)


def _request_terms(
    claim: Claim, model: str, body: Mapping[str, Any], provider: str
) -> tuple[float, bool]:
    """(its request's estimate, whether its model has a price) for ``admit_named``."""
    estimate = request_estimate_usd(model, body, provider) or 0.0
    return estimate, not claim.leaf._budgeted or has_pricing(model, provider)


def _bound_learned(claim: Claim, model: str, body: Mapping[str, Any], provider: str) -> None:
    """A call decided again at what its model cost: its request bounds it too, as
    ``_bound`` has a call of a learned model's."""
    if claim.open and claim.leaf.learned_cost(model) is not None and capped(body):
        defer(claim, model, body, provider)


async def arequest_fleet(request: object = None) -> None:
    """Await the fleet reservation of the call the guard admitted for this request.

    An async client's request is admitted when it is built (a sync step), at
    the local levels only; its ``_prepare_request``, awaited right after and
    before anything is sent, asks the fleet scopes here, off the loop. A
    refusal fails the request (nothing sent, the call un-counted) and raises.
    A call that found its model probing when it was built is admitted here,
    once the probe settled (``request``: its HTTP request, then watched).
    """
    call = _IN_FLIGHT.get()
    if call is None or call.processed:
        return
    later = call.later
    if later is not None:
        call.later = None
        try:
            call.entry = await _aadmit_probing(call, later)
        except BaseException:
            if call.entry is not None:
                membership.stop_waiting(call.entry)  # a span that waited: not sent
            fail(call)  # refused (or cancelled) before anything was sent: nothing counted
            raise
        admitted = call.entry.call
        if admitted is not None and admitted.permit is not None:
            _tell_breaker_at_end(admitted)
        if admitted is not None and admitted.probe is not None and not call.books:
            _span_leads(admitted, call.body, None)  # a waiting span that leads now
        if (
            admitted is not None
            and admitted.open
            and call.body is not None
            and call.model
            and admitted.leaf._budgeted
            and not call.entry.same_call
        ):
            # Admitted once its model's probe or lead settled, at what that cost: its
            # request bounds it as any later call's does (``begin``).
            _bound(admitted, call.model, call.body, call.provider)
        if request is not None:
            watch(request, call)
    if call.entry is None:
        return
    claim = call.entry.call
    if claim is None or not claim.fleet_deferred or not claim.open:
        return
    try:
        await claim.leaf.areserve_fleet(claim)
    except BaseException:
        fail(call)
        raise


def watch(request: object, call: RequestCall) -> None:
    """Release the call if this attempt's request is dropped without a response."""
    entry = call.entry
    if entry is None or not entry.by_guard:
        return  # another door's call: the guard holds no reservation of its own to free
    try:
        ref = weakref.ref(request, _dropped)
    except TypeError:
        return  # a request type that cannot be weakly referenced: released at session close
    _WATCHED[id(ref)] = (ref, call, call.attempt)


#: The requests ``watch`` follows, by the id of their weak reference (kept alive here
#: until its callback runs, when the request is collected). A plain weak reference
#: with a callback: ``weakref.finalize`` (a registry entry, an index, an exit hook)
#: costs several times more, on every call the guard admits.
_WATCHED: dict[int, tuple[weakref.ref[object], RequestCall, int]] = {}


def _dropped(ref: weakref.ref[object]) -> None:
    found = _WATCHED.pop(id(ref), None)
    if found is not None:
        _abandoned(found[1], found[2])


def _abandoned(call: RequestCall, attempt: int) -> None:
    running = call.in_request
    if call.processed or call.attempt != attempt or (running is not None and running.running):
        return  # answered, a later attempt took over, or the request's end will say
    fail(call)


def fail(call: RequestCall, answered: bool = False) -> None:
    """The request failed (no response): its call stays counted, its reservation is freed.

    ``answered``: the provider answered, and reading its response failed (a parse
    error, a structured output cut at ``max_tokens``): a success to the session's
    breaker, not a provider failure. Otherwise nothing here says the provider
    failed (a request dropped unsent): a half-open probe is freed; a request that
    failed on the wire is told by the end of the SDK's request method.
    """
    if call.done:
        return
    call.processed = call.done = True
    call.body = None  # the request body may be large: not kept past the call
    entry = call.entry
    if entry is None:
        return
    claim = entry.call
    if claim is not None and claim.permit is not None:
        if answered:
            breaker_call_ended(claim, None)
        else:
            breaker_abandoned(claim)
    if DEFERRED and entry.call is not None:
        DEFERRED.pop(entry.call, None)  # (see ``finish``)
    if entry.by_guard:
        membership.forget(entry)
        claim = entry.call
        if claim is not None:
            claim.leaf.release(claim)


def take(options: Any) -> RequestCall | None:
    """The call whose response is being processed now (None: not a guarded request)."""
    call = _IN_FLIGHT.get()
    if call is None or call.processed:
        return None
    key = getattr(options, "idempotency_key", None)
    if key is not None and key != call.key:
        return None
    call.processed = True
    _IN_FLIGHT.set(None)
    entry = call.entry
    if entry is not None and entry.by_guard:
        membership.forget(entry)  # the request was sent: later spans are not this call
    return call


def answered(call: RequestCall, result: object) -> object:
    """Book a response, or wrap its stream to book at the stream's end.

    Raises only ``BudgetExceededError``, for the guard's own call that ran and
    left an enforced budget crossed (see ``_crossed``).
    """
    entry = call.entry
    claim = entry.call if entry is not None else None
    if claim is not None and claim.permit is not None:
        breaker_call_ended(claim, None)  # answered: the session's breaker is told
    try:
        if _is_stream(result):
            _wrap_stream(result, call)
            return result
        if _unread_raw(result):
            _watch_body(result, call)
            return result
        if not call.books:
            # An open span of another instrumentation is this call and books it from
            # the same response object: nothing to read twice on every call, except
            # for a producer that reports no cache counts. Its span would price cached
            # input at the full rate: the exact reading, taken here, wins at its end.
            call.done = True
            _note_exact_reading(call, result)
            return result
        found = extract(result)
        if found.usage is None:
            body = _raw_body(result)  # (a raw response's usage is in its body)
            if body is None:
                _book_reading(call, found, result)
            else:
                _book_reading(call, extract(body), body)
        else:
            finish(call, found.usage, found.model, found.reasoning_tokens, 0)
    except Exception:
        _warn_once("the client guard could not read a response; continuing")
        return result
    _crossed(call)
    return result


def _book_reading(call: RequestCall, found: Extracted, answer: object) -> None:
    """Book ``found``, what ``extract`` read of the response ``answer``."""
    chars = 0
    if found.usage is None:
        # Without usage its output is all that tells its cost: tool calls, every
        # choice and reasoning are billed as text is.
        output = extract_output(answer)
        chars = text_chars(output) if output else 0
    finish(call, found.usage, found.model, found.reasoning_tokens, chars)


def _note_exact_reading(call: RequestCall, result: object) -> None:
    entry = call.entry
    if entry is not None and entry.producer in NO_CACHE_SCOPES:
        found = extract(result)
        _note_exact_usage(call, found.usage, found.model)


def _note_exact_usage(call: RequestCall, usage: Any, model: str | None) -> None:
    """The guard's reading of a response whose span reports no cache counts: booked
    instead of the span's when that span ends (``booking.book`` keeps the exact one)."""
    entry = call.entry
    if entry is not None and entry.producer in NO_CACHE_SCOPES:
        _keep_reading(call, usage, model)


def _keep_reading(call: RequestCall, usage: Any, model: str | None) -> None:
    """Hand the guard's reading of a call a span describes to that span's booking, which
    books the more exact reading (``booking.book``)."""
    entry = call.entry
    claim = entry.call if entry is not None else None
    if claim is None or call.books or usage is None:
        return
    if claim.library is None or more_exact(usage, claim.library[1]):
        claim.library = (model or call.model, usage)


def _crossed(call: RequestCall, *, streamed: bool = False) -> None:
    """Raise for the guard's own call that ran, was booked and left an enforced budget crossed.

    The rule our turns follow (0.1.0's): the call that crosses runs, is booked,
    then raises in its caller, its result discarded, so a loop whose last call
    crosses is told (``streamed``: after a stream's last chunk, so the caller has
    its text, which the error says). Only the guard's own calls: a call another instrumentation's
    span describes is booked when that span ends, after the client returned, and
    a request inside our turn is the turn's, which raises itself.
    """
    entry = call.entry
    if entry is None or not call.books or entry.same_call:
        return
    claim = entry.call
    if claim is not None and claim.over is not None:
        raise claim.leaf.over_error(claim.over, streamed=streamed, later=claim.over_later)


def _raw_body(result: object) -> object:
    """The JSON body of a raw response already read, else None: ``with_raw_response``'s,
    or the HTTP response itself (``client.post(..., cast_to=httpx.Response)``, the SDKs'
    way to call an endpoint they have no method for: booked without its usage, each
    call counted only its input, and an enforced budget let 53 calls run for 2.5)."""
    raw: Any = getattr(result, "http_response", None)
    if raw is None:
        kind = type(result)
        # (httpx's, or httpx2's: the transport the newer SDKs are built on.)
        if kind.__name__ != "Response" or not kind.__module__.startswith("httpx"):
            return None
        raw = result
    try:
        return json.loads(raw.content)  # raises for a body not read (a streamed response)
    except Exception:
        return None


def _unread_raw(result: object) -> bool:
    """A raw response whose body is not read yet: ``with_streaming_response`` (streamed
    or not), or ``with_raw_response`` of a streamed request."""
    # Instance attributes, read from __dict__: getattr on a pydantic response object
    # for a name it lacks costs ~7 µs, on every call.
    found = getattr(result, "__dict__", None)
    if not found:
        return False
    # openai names the flag _is_sse_stream (1.x and later); _stream in older releases.
    flag = found.get("_is_sse_stream", found.get("_stream"))
    if flag is None:
        return False  # a parsed response: every usual call ends here
    raw = found.get("http_response")
    return (
        raw is not None
        and "_content" not in getattr(raw, "__dict__", {"_content": 0})  # (httpx: read)
        and callable(getattr(type(result), "parse", None))
    )


class _Body:
    """What the guard saw of a raw response's body, read after the client returned.

    Every way the SDKs offer to read it (``parse()``, ``read()``, ``text()``,
    ``json()``, ``iter_bytes/iter_text/iter_lines``) reads the HTTP response's
    decoded bytes through its ``iter_bytes`` (``aiter_bytes``), so the guard
    reads them there: read to its end, the body is booked at the usage it
    carries; closed before that (the response's context manager exits), at its
    request's upper bound, since its usage was never seen.
    """

    __slots__ = ("began", "call", "inner", "parsed", "parts", "sse", "stream")

    def __init__(self, call: RequestCall, sse: bool) -> None:
        self.call = call
        self.sse = sse
        #: The body's bytes read so far (None once ``parse()`` made a stream, which books it).
        self.parts: list[bytes] | None = []
        self.began = False
        self.parsed = False
        #: The chunks of the stream ``parse()`` made (``_wrap_stream``'s generator).
        self.stream: object = None
        #: Inside a step of the client's byte iterator: a close then is the client's own,
        #: at the body's end (or its failure), which the iterator's end books.
        self.inner = False

    def add(self, part: bytes) -> None:
        self.began = True
        if self.parts is not None:
            self.parts.append(part)

    def ended(self, whole: bool) -> None:
        """The caller's read of the bytes ended: at the body's end (``whole``) or before."""
        if self.parsed or self.call.done:
            return
        if whole:
            _book_body(self)
        else:
            _book_unread(self, "read partly")

    def closed(self) -> None:
        """The response was closed (or collected): a body not read to its end is booked."""
        if self.inner or self.call.done:
            return
        stream: Any = self.stream
        if self.parsed and getattr(stream, "gi_running", getattr(stream, "ag_running", False)):
            return  # the SDK's stream closes it as its reading ends: that end books it
        _book_unread(self, "read partly" if self.began else "not read")


def _watch_body(result: Any, call: RequestCall) -> None:
    """Book a raw response when its caller has read its body, or closed it unread."""
    raw = result.http_response
    found = result.__dict__
    body = _Body(call, found.get("_is_sse_stream", found.get("_stream")) is True)
    _hold(call)
    parse = result.parse
    if inspect.iscoroutinefunction(parse):
        read, close = raw.aiter_bytes, raw.aclose
        raw.__dict__["aiter_bytes"] = lambda *a, **k: _aread(read(*a, **k), body)
        raw.__dict__["aclose"] = _aclose_then_book_body(close, body)
    else:
        read, close = raw.iter_bytes, raw.close
        raw.__dict__["iter_bytes"] = lambda *a, **k: _read(read(*a, **k), body)
        raw.__dict__["close"] = _close_then_book_body(close, body)
    _defer_to_parse(result, call, body)
    # Never closed (a with_raw_response stream has no context manager): when collected.
    weakref.finalize(raw, _collected, body)


def _read(chunks: Iterator[bytes], body: _Body) -> Iterator[bytes]:
    whole = False
    try:
        while True:
            body.inner = True
            try:
                part = next(chunks)
            except StopIteration:
                whole = True
                return
            finally:
                body.inner = False
            body.add(part)
            yield part
    finally:
        body.ended(whole)


async def _aread(chunks: AsyncIterator[bytes], body: _Body) -> AsyncIterator[bytes]:
    whole = False
    try:
        while True:
            body.inner = True
            try:
                part = await chunks.__anext__()
            except StopAsyncIteration:
                whole = True
                return
            finally:
                body.inner = False
            body.add(part)
            yield part
    finally:
        body.ended(whole)


def _close_then_book_body(close: Callable[[], object], body: _Body) -> Callable[[], None]:
    def closed() -> None:
        try:
            close()
        finally:
            body.closed()

    return closed


def _aclose_then_book_body(
    close: Callable[[], Awaitable[object]], body: _Body
) -> Callable[[], Awaitable[None]]:
    async def closed() -> None:
        try:
            await close()
        finally:
            body.closed()

    return closed


def _collected(body: _Body) -> None:
    call = body.call
    if not call.done and call.entry is not None and call.entry.call is not None:
        call.entry.call.site = call.site  # no line of the caller's is on the stack now
    body.closed()


def _book_body(body: _Body) -> None:
    """Book a body read to its end: its events (a stream's), or its JSON."""
    call = body.call
    content = b"".join(body.parts or ())
    body.parts = None
    if body.sse:
        reader = StreamReader(collect_output=True)
        for event in sse_payloads(content):
            reader.add(event)
        if not reader.unfinished:
            _keep_reading(call, reader.usage, reader.model)
        _stream_end(call, reader)
        return
    try:
        answer: object = json.loads(content)
    except ValueError:
        answer = None
    found = extract(answer)
    _keep_reading(call, found.usage, found.model)
    _book_reading(call, found, answer)


def _book_unread(body: _Body, how: str) -> None:
    """Book a body closed before its end at its request's upper bound (its usage, which
    comes with the body's end, was never seen)."""
    call = body.call
    entry = call.entry
    if entry is not None and entry.call is not None:
        entry.call.ended_early = how
    bound = None
    if call.body is not None:
        bound = UsageSnapshot(*request_tokens(call.body, call.provider))
    finish(call, None, None, 0, 0, bound)


def _defer_to_parse(result: Any, call: RequestCall, body: _Body) -> None:
    """Book the parsed response when the caller parses it: a stream is read through our reader.

    The OpenAI Agents SDK streams the Responses API this way: the response the
    client hands back is raw, and the event stream exists only once ``parse()``
    made it. ``parse`` caches its result, so the stream is wrapped once. A body
    that is not a stream was booked as ``parse`` read it; its crossing raises here.
    """
    parse = result.parse
    wrapped: list[object] = []

    def seen(parsed: object) -> object:
        if not wrapped:
            wrapped.append(parsed)
            if _is_stream(parsed):
                body.parsed = True  # its stream books it, read through our reader
                body.parts = None
            answered(call, parsed)  # a stream is wrapped; anything else is booked now
            if body.parsed:
                body.stream = parsed.__dict__.get("_iterator")
        return parsed

    if inspect.iscoroutinefunction(parse):

        async def aparse(*args: Any, **kwargs: Any) -> object:
            return seen(await parse(*args, **kwargs))

        result.__dict__["parse"] = aparse
    else:

        def sparse(*args: Any, **kwargs: Any) -> object:
            return seen(parse(*args, **kwargs))

        result.__dict__["parse"] = sparse


def _is_stream(result: object) -> bool:
    # openai's Stream sets both in __init__ (see _unread_raw on getattr); anthropic's
    # (2.x) makes its iterator on first use, a cached_property of its class.
    found = getattr(result, "__dict__", None)
    if found is None or "response" not in found:
        return False
    if "_iterator" in found:
        return True
    kind = type(result)
    lazy = _LAZY_ITERATOR.get(kind)
    if lazy is None:
        made = inspect.getattr_static(kind, "_iterator", None)
        lazy = _LAZY_ITERATOR[kind] = isinstance(made, functools.cached_property)
    return lazy


#: Response types whose stream iterator is made on first use, by type (a handful).
_LAZY_ITERATOR: dict[type, bool] = {}


def finish(
    call: RequestCall,
    usage: Any,
    model: str | None,
    reasoning: int,
    text_chars: int,
    estimate: UsageSnapshot | None = None,
) -> None:
    """Book what the request used (``usage`` None: it never said; ``estimate``: what it
    is then booked at, else its request and the text seen)."""
    if call.done:
        return
    call.done = True
    body, call.body = call.body, None  # the request body may be large: not kept
    entry = call.entry
    if entry is None or entry.call is None:
        return
    claim = entry.call
    if DEFERRED:
        # Its request is answered: what it asked for no longer bounds anything, though a
        # turn whose request it was stays open for its next steps (``estimate.defer``).
        DEFERRED.pop(claim, None)
    streams = claim.leaf.streams
    if streams:
        streams.pop(claim, None)
    if estimate is not None:
        claim.estimated = estimate
    elif usage is None and claim.ended_early != "background":
        # What the call is booked at if no usage ever arrives (see ``estimate``): its
        # request, and now the text seen streamed too.
        claim.estimated = seen_usage(body, call.provider, text_chars)
    if call.books:
        booked = booked_model(call.model, model, call.provider)
        book(entry, CallReading(booked, call.provider, usage, reasoning))
    else:
        _note_exact_usage(call, usage, model)  # a stream whose span reports no cache
        stream_read(claim, estimate is not None)


def _hold(call: RequestCall) -> None:
    """The call is booked when its caller reads what the client returned (a stream, a
    raw response's body), maybe later, or never: hold its booking until then.

    A stream still open when its session closes is released with the session and
    booked when it is read to its end, closed or collected: a web handler may have
    read its first chunk and handed the rest on, to be read after the session.
    """
    claim = call.entry.call if call.entry is not None else None
    if claim is not None and claim.leaf._enforced:
        # A stream dropped unread is booked, and warned about, when it is collected,
        # from wherever that happens: the warning names this line of the user's, noted
        # now (only streams, only under an enforced budget, pay for the frame walk).
        call.site = user_site()
    if claim is not None and not call.entry.same_call:  # type: ignore[union-attr]
        if not call.books:
            reading_stream(claim)  # its span's end waits for the stream's
        else:
            # The guard's own: its entry left the open spans when the response was
            # taken, so the session's close releases it from here.
            leaf = claim.leaf
            if leaf.streams is None:
                leaf.streams = {}
                STREAMING.add(leaf)
            leaf.streams[claim] = None


def _wrap_stream(stream: Any, call: RequestCall) -> None:
    inner = stream._iterator
    reader = StreamReader(collect_output=True)
    _hold(call)
    # The SDKs' close() releases the response but leaves the iterator as it is, and a
    # stream holds itself in a cycle (its iterator's frame refers to it): without the
    # hook a closed stream would be booked only when the garbage collector came by,
    # missing from the session's summary and report until then.
    close = getattr(stream, "close", None)
    if hasattr(inner, "__anext__"):
        stream.__dict__["_iterator"] = _async_chunks(inner, reader, call)
        if inspect.iscoroutinefunction(close):
            stream.__dict__["close"] = _aclose_then_book(close, call, reader)
    else:
        stream.__dict__["_iterator"] = _chunks(inner, reader, call)
        if callable(close):
            stream.__dict__["close"] = _close_then_book(close, call, reader)
    # A stream dropped before its first chunk never runs the generator's finally; one
    # dropped after it is collected with its generator, this callback first.
    weakref.finalize(stream, _stream_end, call, reader, cut=True, dropped=True)


def _close_then_book(
    close: Callable[[], object], call: RequestCall, reader: StreamReader
) -> Callable[[], None]:
    def closed() -> None:
        try:
            close()
        finally:
            # Once: the end of the stream, read already, booked it.
            _stream_end(call, reader, cut=True)

    return closed


def _aclose_then_book(
    close: Callable[[], Awaitable[object]], call: RequestCall, reader: StreamReader
) -> Callable[[], Awaitable[None]]:
    async def closed() -> None:
        try:
            await close()
        finally:
            _stream_end(call, reader, cut=True)

    return closed


def _stream_end(
    call: RequestCall, reader: StreamReader, *, cut: bool = False, dropped: bool = False
) -> None:
    """Book a stream's call from what was read; ``cut``: it ended before its last chunk;
    ``dropped``: left unread to its end and collected, or closed by the event loop (no
    line of the caller's is on the stack then: its warnings name its request's)."""
    entry = call.entry
    usage = reader.usage
    text = reader.output
    chars = text_chars(text) if text else 0
    estimate = None
    if reader.unfinished and usage is not None and entry is not None and entry.call:
        # The start's counts are not the call's: its input counts and the text seen,
        # booked under a budget as a call whose usage never arrived (like any stream
        # cut short), without one as its usage (``booking.stream_read``).
        estimate = UsageSnapshot(
            usage.input_tokens,
            max(usage.output_tokens, tokens_of_text(chars)),
            usage.cache_write_tokens,
            usage.cache_read_tokens,
        )
        usage = cut_usage(entry.call, estimate)
        cut = True
    if not call.done and entry is not None and entry.call:
        claim = entry.call
        if cut and usage is None and _asks_usage(call.body, call.provider):
            # Its warning then says why no usage arrived; a request that never asked
            # for it is told to (read to its end, it would have had none either).
            claim.ended_early = "stream"
        if dropped:
            claim.site = call.site  # its warnings name the line that made the request
    finish(call, usage, reader.model, reader.reasoning_tokens, chars, estimate)


def _reader_ended(call: RequestCall, reader: StreamReader, task: asyncio.Task[Any]) -> None:
    """The task reading a stream was cancelled or failed: a stream it left unfinished is
    booked as dropped."""
    if call.done or not (task.cancelled() or task.exception() is not None):
        return
    try:
        _stream_end(call, reader, cut=True, dropped=True)
    except Exception:
        _warn_once("the client guard could not book a stream its task left; continuing")


def _asks_usage(body: Mapping[str, Any] | None, provider: str) -> bool:
    """Whether a streamed request's usage comes with its stream (last, or at its end).

    Anthropic's streams and OpenAI's Responses API always carry it; a Chat
    Completions or Completions stream only when ``stream_options={"include_usage":
    True}`` asks. An unknown request is taken to have asked.

    Example::

        >>> chat = {"model": "m", "messages": [], "stream": True}
        >>> _asks_usage(chat, "openai")
        False
        >>> _asks_usage({**chat, "stream_options": {"include_usage": True}}, "openai")
        True
        >>> _asks_usage({"model": "m", "input": "hi", "stream": True}, "openai")
        True
        >>> _asks_usage({"model": "m", "messages": [], "stream": True}, "anthropic")
        True
    """
    if body is None or provider != "openai":
        return True
    if "messages" not in body and not isinstance(body.get("prompt"), str | list):
        return True  # the Responses API (its prompt, if any, is a template object)
    options = body.get("stream_options")
    return isinstance(options, Mapping) and bool(options.get("include_usage"))


def _chunks(inner: Iterator[Any], reader: StreamReader, call: RequestCall) -> Iterator[Any]:
    read = dropped = False
    try:
        for item in inner:
            reader.add(item)
            yield item
        read = True
    except GeneratorExit:
        # Closed while suspended: by its collection (the stream's close() books it
        # first), where no line of the caller's is on the stack.
        dropped = True
        raise
    finally:
        _stream_end(call, reader, cut=not read, dropped=dropped)
    # Read to its end (not closed, failed or collected): a crossing raises after the last chunk.
    _crossed(call, streamed=True)


async def _async_chunks(
    inner: AsyncIterator[Any], reader: StreamReader, call: RequestCall
) -> AsyncIterator[Any]:
    read = dropped = False
    # The task that starts reading the stream: when it is cancelled (or fails) with the
    # stream neither read to its end nor closed (cancelled inside its ``async for`` body,
    # the CancelledError's traceback keeping the stream alive), the stream is booked as
    # dropped then, not held reserved until the garbage collector or the session's
    # close comes by. A task that ends normally may have handed the stream on (a
    # helper that read its first chunk, ``wait_for(stream.__anext__())`` per chunk).
    # (Only on an asyncio loop: under trio there is no asyncio task to follow.)
    task = asyncio.current_task() if _running_loop() is not None else None
    ended = functools.partial(_reader_ended, call, reader)
    if task is not None:
        task.add_done_callback(ended)
    try:
        async for item in inner:
            reader.add(item)
            yield item
        read = True
    except GeneratorExit:
        # Closed while suspended: by the event loop, once the stream was dropped (its
        # collection, or the loop's shutdown), where no line of the caller's runs.
        dropped = True
        raise
    finally:
        if task is not None:
            task.remove_done_callback(ended)  # (a long-lived task reads many streams)
        _stream_end(call, reader, cut=not read, dropped=dropped)
    _crossed(call, streamed=True)
