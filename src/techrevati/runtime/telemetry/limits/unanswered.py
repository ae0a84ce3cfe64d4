"""Async requests that end unanswered after they were sent: cancelled, or timed out.

A request the provider received is billed whether or not its response is
read: generation runs on after the client hangs up. ``asyncio.wait_for``
around a call, a task group cancelling its siblings, or the SDK's own read
timeout ends such a request with no response and no usage, and releasing it
as a failed call would let a loop of timed-out calls run past its budget at
$0 each. So the guard follows each async model request from the moment its
body is on the wire until its response has been read, and a request that
ends in between by cancellation or a timeout is booked at its request's upper
bound (input counted from the body, output at the request's cap or the
provider's default), like a call whose usage never arrived.

"On the wire", for a cancellation, is what httpcore's ``trace`` request
extension reports: from ``send_request_body.started`` up to
``receive_response_body.complete``. Once the body's write has begun, its
bytes may be with the provider whether or not the write's await returned: a
cancellation landing on that await (after the socket took the bytes) ends the
write as ``send_request_body.failed``, never ``.complete``, and the provider
bills the request all the same. Nothing tells the two apart, so the call is
booked: at worst one call the provider never got is booked at its upper bound,
never one it bills at $0. A request cancelled before its body's write began
(while connecting, or sending its headers: the provider has no request
without its body), or one that failed to connect, books nothing. A transport that
reports no such events (a custom one) leaves its cancelled requests released:
nothing says they were sent. A timeout is on the wire when the transport's
error is a ``ReadTimeout`` (sync clients too); a connect, write or pool
timeout books nothing.

The guard's ``request`` door calls ``ended`` once the SDK's request method
returns or raises; an async client's ``_prepare_request``, awaited right
before the SDK sends each attempt, calls ``sending``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

from ...usage_tracking import UsageSnapshot
from ..readings.recognise import CallReading
from . import membership
from .booking import book
from .door import _IN_FLIGHT, IN_REQUEST, InRequest, RequestCall, fail, is_model_request
from .estimate import request_tokens
from .ledger import Claim, breaker_call_ended, plus_usage


@dataclass(slots=True)
class _Attempt:
    """One attempt of a model request: its call, its body, and whether it is on the wire."""

    claim: Claim
    content: object
    package: str
    on_wire: bool = False


_SENDING: ContextVar[_Attempt | None] = ContextVar("techrevati_sending", default=None)

_Trace = Callable[[str, dict[str, Any]], Awaitable[None]]


def sending(request: object, package: str) -> None:
    """An async client prepared ``request`` (an attempt): follow it until it is answered."""
    call = _IN_FLIGHT.get()
    if call is not None and not call.processed:
        entry = call.entry
    else:
        # An instrumented call (``door.begin`` matched it to the span started last on
        # this task, and keeps no request of its own): when this is a model request.
        method = getattr(request, "method", "")
        path = getattr(getattr(request, "url", None), "path", "")
        if not (isinstance(method, str) and isinstance(path, str)):
            return
        if not is_model_request(method.lower(), path):
            return
        entry = membership.STRAND.get()
    if entry is None or entry.request is None:
        return  # not a model call
    claim = entry.call  # (our turn's, for the request our turn makes: its end books it)
    extensions = getattr(request, "extensions", None)
    if claim is None or not claim.open or not isinstance(extensions, dict):
        return
    attempt = _Attempt(claim, getattr(request, "content", None), package)
    extensions["trace"] = _follow(attempt, extensions.get("trace"))
    _SENDING.set(attempt)


def _follow(attempt: _Attempt, then: _Trace | None) -> _Trace:
    """httpcore's trace callback for one attempt (calling on to one already there)."""

    async def trace(event: str, info: dict[str, Any]) -> None:
        if event.endswith((".send_request_body.started", ".send_request_body.complete")):
            # From the body's first write on, the provider may have the request (see
            # the module docstring): a cancellation then ends it as ``.failed``.
            attempt.on_wire = True
        elif event.endswith(".receive_response_body.complete"):
            attempt.on_wire = False  # answered (a 5xx too: its retry is a new attempt)
        elif event.endswith(".receive_response_headers.complete") and _refused(info):
            # An error status: the provider refused it, and bills nothing. (The SDK may
            # close a streamed error response without reading its body.)
            attempt.on_wire = False
        if then is not None:
            await then(event, info)

    return trace


def _refused(info: dict[str, Any]) -> bool:
    """httpcore's response headers event: (http version, status, reason, headers, ...)."""
    found = info.get("return_value")
    try:
        status = found[1]  # type: ignore[index]
    except Exception:
        return False
    return isinstance(status, int) and status >= 400


class RequestRun:
    """The guard's door around one run of the SDK's request method, sync or async.

    ``with RequestRun(options):`` marks the requests built inside as this run's
    (``door.IN_REQUEST``: collecting one during a retry's backoff is no failure),
    and at the run's end tells ``ended`` how it ended. It never swallows the error.
    """

    __slots__ = ("options", "provider", "run", "token")

    def __init__(self, options: object, provider: str = "") -> None:
        self.options = options
        self.provider = provider

    def __enter__(self) -> None:
        self.run = InRequest(self.options, self.provider)
        self.token = IN_REQUEST.set(self.run)

    def __exit__(self, kind: object, error: BaseException | None, trace: object) -> None:
        run_ended(self.options, error, self.run, self.token)


def run_ended(
    options: object, error: BaseException | None, run: InRequest, token: Token[InRequest | None]
) -> None:
    """A run of the SDK's request method ended: ``ended``, then the run is over.

    The session's breaker, if it admitted the run's call, is told first how the
    call ended: once for all its attempts (the SDK's retries are one call).
    """
    try:
        claim = run.claim
        if claim is not None:
            breaker_call_ended(claim, error)
        ended(options, error)  # cancelled or timed out on the wire: billed
        if error is not None:
            _span_call_failed(run)
    finally:
        run.running = False
        IN_REQUEST.reset(token)


def _span_call_failed(run: InRequest) -> None:
    """The request method raised: a span call that led its model's first calls (told
    by ``door._span_leads``) leads no more, and the calls waiting for it go on now.
    Its span's end would say so, but some instrumentations never end a span whose
    call was cancelled (OpenLLMetry's async wrapper ends it only on an Exception):
    the calls waited out probe_wait_s."""
    lead = run.lead
    if lead is not None and lead.probe is not None:
        lead.leaf.end_probe(lead)


def ended(options: object, error: BaseException | None) -> None:
    """The SDK's request method for ``options`` returned (``error`` None) or raised ``error``.

    Raised after the request was on the wire by a cancellation (async) or by
    a read timeout (the SDK's timeout error, caused by the transport's
    ``ReadTimeout``): the call is booked at its request's upper bound (see the
    module docstring). Any other error ends the guard's own call as failed, its
    reservation freed now, not when the request object is collected (an
    exception the caller keeps holds it; a fleet scope's hold with it).
    """
    attempt = _SENDING.get()
    if attempt is not None:
        _SENDING.set(None)
    if error is None:
        # Returned, so answered: unless the response was never processed (a middleware
        # that returned a value of its own), when the call ends as failed here.
        call = _IN_FLIGHT.get()
        if (
            call is not None
            and not call.processed
            and call.in_request is not None
            and call.entry is not None
        ):
            if call.entry.same_call:
                _close(call)
            else:
                fail(call)
        return
    method = getattr(options, "method", "")
    url = getattr(options, "url", "")
    if not (isinstance(method, str) and isinstance(url, str) and is_model_request(method, url)):
        return
    # The guard's record of this request, if it keeps one: the last model request begun
    # in this context, not yet answered (a refused request leaves the one before it,
    # answered already; a request ``door.begin`` left to a span clears it).
    call = _unanswered_call()
    on_wire = attempt is not None and attempt.on_wire
    if (on_wire and isinstance(error, asyncio.CancelledError)) or _read_timeout(error):
        claim = attempt.claim if attempt is not None else _claim_of(options, call)
        if claim is not None and claim.open:
            _estimate(claim, options, attempt, call, error)
            if call is not None and call.entry is not None and call.entry.call is claim:
                _close(call)
            return
    if call is not None and call.entry is not None:
        if call.entry.same_call:
            _close(call)  # our turn's request: the turn fails with the error
        else:
            fail(call)


def _unanswered_call() -> RequestCall | None:
    """The guard's record of the model request begun last here, if not answered yet."""
    call = _IN_FLIGHT.get()
    if call is not None and (call.processed or call.done or call.entry is None):
        return None
    return call


def span_ended(claim: Claim, error_type: str | None) -> None:
    """A span of ``claim`` ended without usage while its request was on the wire.

    The Anthropic SDK ends its own span inside the request method, before
    ``ended`` runs there: a cancellation or timeout it recorded is estimated
    here, so the span books it at the request's upper bound, not at $0.
    """
    attempt = _SENDING.get()
    if attempt is None:
        _sync_span_ended(claim, error_type)
        return
    if attempt.claim is not claim or not attempt.on_wire or not claim.open:
        return
    kind = (error_type or "").lower()  # the SDK's own names: client_timeout_error
    if "timeout" in kind:
        why = "timed out"
    elif not kind or "cancel" in kind:
        why = "cancelled"
    else:
        return  # another error (a reset, a refusal): a failed call, as ``ended`` has it
    body = _json(attempt.content)
    if body is not None:
        claim.estimated = UsageSnapshot(*request_tokens(body, attempt.package))
    claim.ended_early = why


def _sync_span_ended(claim: Claim, error_type: str | None) -> None:
    """``span_ended`` for a sync client's request, which no attempt follows.

    A sync request can only end unanswered on the wire by a read timeout. The
    SDK ends its span while it handles that error (the Anthropic SDK's
    ``request`` method, in its ``except``), so the error being handled is the
    timeout; it carries the request that was sent.
    """
    if not claim.open or "timeout" not in (error_type or "").lower():
        return
    error = sys.exc_info()[1]
    if error is None or not _read_timeout(error):
        return  # a connect or pool timeout: nothing was sent
    body = _json(getattr(getattr(error, "request", None), "content", None))
    if body is not None:
        package = type(error).__module__.partition(".")[0]
        claim.estimated = UsageSnapshot(*request_tokens(body, package))
    claim.ended_early = "timed out"


def retrying(options: object, package: str) -> None:
    """The SDK is about to retry a request: the attempt that failed may be billed.

    Called in the SDK's backoff, which runs inside its ``except`` for the
    attempt's error. A read timeout means that attempt was sent whole: the
    provider has it and bills it, though only the last attempt's response is
    read. So it is added to the call at its request's upper bound, and booked
    with it (``Ledger.settle``).
    """
    error = sys.exc_info()[1]
    # The transport's ReadTimeout (openai), or the SDK's timeout error it caused
    # (anthropic, whose middleware chain wraps it first).
    if error is None or not (type(error).__name__ == "ReadTimeout" or _read_timeout(error)):
        return  # a connect or pool timeout, a refused status: nothing billed
    method = getattr(options, "method", "")
    url = getattr(options, "url", "")
    if not (isinstance(method, str) and isinstance(url, str) and is_model_request(method, url)):
        return
    attempt = _SENDING.get()
    claim = attempt.claim if attempt is not None else _claim_of(options, _unanswered_call())
    if claim is None or not claim.open:
        return
    body = _json(getattr(getattr(error, "request", None), "content", None))
    if body is None:
        found = getattr(options, "json_data", None)
        body = found if isinstance(found, Mapping) else None
    if body is None:
        return
    usage = UsageSnapshot(*request_tokens(body, package))
    before = claim.retried
    claim.retried = usage if before is None else plus_usage(before, usage)
    claim.retries += 1
    if attempt is not None:
        # Booked as a retried attempt now: a cancellation in the backoff that follows
        # ends a call with nothing of its own on the wire (not this attempt again).
        attempt.on_wire = False


def _read_timeout(error: BaseException) -> bool:
    """The SDK's timeout error for a request sent whole, waiting for its response."""
    cause = error.__cause__
    return cause is not None and type(cause).__name__ == "ReadTimeout"


def _claim_of(options: object, call: RequestCall | None) -> Claim | None:
    """The call of a request no attempt was followed for (a sync client's)."""
    if call is not None and call.entry is not None:
        return call.entry.call
    # An instrumented call: the span started last on this thread, which ``door.begin``
    # matched to the request (so it is still open, with a request).
    entry = membership.STRAND.get()
    if entry is not None and entry.request is not None and entry.key in membership.OPEN:
        return entry.call
    return None


def _estimate(
    claim: Claim,
    options: object,
    attempt: _Attempt | None,
    call: RequestCall | None,
    error: BaseException,
) -> None:
    """Book ``claim``, when it is booked, at its request's upper bound (see the module doc)."""
    # What was sent, else the body the guard saw built (a sync client's), else the
    # SDK's options as the caller gave them.
    body = _json(attempt.content) if attempt is not None else None
    if body is None and call is not None:
        body = call.body
    if body is None:
        body = getattr(options, "json_data", None)
    if isinstance(body, Mapping):
        package = attempt.package if attempt is not None else ""
        claim.estimated = UsageSnapshot(*request_tokens(body, package))
    cancelled = isinstance(error, asyncio.CancelledError)
    claim.ended_early = "cancelled" if cancelled else "timed out"


def _close(call: RequestCall) -> None:
    """The guard's record of the request: done; its own call booked at the estimate.

    A call another instrumentation's span describes is booked when that span
    ends, and our turn's call when the turn fails; only their record here ends.
    """
    call.processed = call.done = True
    call.body = None
    entry = call.entry
    if entry is None or not entry.by_guard:
        return  # the span's entry: its end books the call
    membership.forget(entry)
    if call.books and not entry.same_call:
        book(entry, CallReading(call.model, call.provider, None, 0), failed=True)


def _json(content: object) -> Mapping[str, Any] | None:
    """The JSON body of a prepared HTTP request, if it has one."""
    if not isinstance(content, bytes | bytearray):
        return None
    try:
        body = json.loads(content)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
