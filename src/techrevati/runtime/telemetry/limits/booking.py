"""Booking what a library model call (a span, or a client request the guard saw) used.

One place for both doors that see another producer's calls: the limits
processor (a finished library span) and the client guard (a response it read).
An entry that is the same call as an enclosing one hands its usage to that call
while it still runs (our turn books it unless its own result reports usage),
and books it itself only when it arrives after that call ended; a new call
settles its own claim.
"""

from __future__ import annotations

from ...pricing import price_call
from ...usage_tracking import UsageSnapshot
from ..readings.recognise import CallReading, more_exact, warn_no_cache
from .estimate import RAISED_FROM
from .ledger import Claim
from .membership import SpanEntry

#: Calls another instrumentation's span describes whose stream the client guard is
#: reading: the span's end is held here (None until it ends) until the guard read the
#: stream's end (``stream_read``). An SDK that traces its own streams (Anthropic's)
#: ends its span when its own reader stops, before the guard's does, with the counts
#: seen so far: a stream cut before its last event would be booked at its first
#: event's placeholder output count, as if complete.
_READING: dict[Claim, tuple[SpanEntry, CallReading, str, bool] | None] = {}


def reading_stream(claim: Claim) -> None:
    """The guard wraps the stream of ``claim``'s span: hold the span's booking until it ends."""
    # (Asked again when a raw response's body held already becomes a stream: a reading
    # the span's end left here meanwhile is kept.)
    _READING.setdefault(claim, None)


def stream_read(claim: Claim, unfinished: bool) -> None:
    """The guard read the stream's end: book the span's reading held meanwhile, if any.

    ``unfinished``: the stream stopped before its usage was final (``claim.estimated``
    then holds what to book instead: the counts that arrived and the text seen).
    Under a budget it is booked as a call without usage, at that estimate (counted
    as estimated, and warned about when enforced); without one, as its usage.
    """
    held = _READING.pop(claim, None)
    if held is not None:
        entry, reading, scope, failed = held
        if unfinished:
            reading = _unfinished(claim, reading)
        book(entry, reading, scope, failed)
    elif unfinished:
        # The guard got there first (a stream dropped unread: collection runs the
        # guard's finalizer before the SDK ends its span): the span's end is told.
        _CUT.add(claim)


#: Calls whose stream the guard saw end unfinished before their span ended.
_CUT: set[Claim] = set()


def cut_usage(claim: Claim, estimate: UsageSnapshot | None) -> UsageSnapshot | None:
    """What a stream cut before its usage was final books as usage (see stream_read):
    none under a budget (the estimate is booked as such, and warned about when
    enforced), the estimate itself without one."""
    return None if claim.leaf._budgeted else estimate


def _unfinished(claim: Claim, reading: CallReading) -> CallReading:
    """The reading of a stream that stopped before its usage was final (see stream_read)."""
    return reading._replace(usage=cut_usage(claim, claim.estimated))


def _held_at_answer(call: Claim, model: str, usage: UsageSnapshot, provider: str) -> None:
    """Our turn's request was answered while the turn runs on: it holds what it cost.

    Its reservation was raised to its request's upper bound (4,096 output tokens
    unless ``max_tokens`` says less) before it was sent; kept until the turn ends,
    that bound refused the turn's own next requests, each a call of its own, as if
    a call in flight held it: under a $0.03 budget a turn of ``gpt-4o`` sent 1 of
    its 4 requests, each costing $0.000475. Lowered only, never below what the call
    held before that raise (a turn's ``usage=``, which it is booked at).
    """
    if not RAISED_FROM:
        return
    before = RAISED_FROM.pop(call, None)
    if before is None or not model:
        return
    held = max(price_call(model, usage, provider)[0], before)
    if held < call.expected:
        call.leaf.reserve_at(call, held)


def book(entry: SpanEntry, reading: CallReading, scope: str = "", failed: bool = False) -> None:
    """Book a finished library call (see the module docstring). May raise only on bugs.

    Two readings of one call (nested or overlapping spans of one request, a
    span and the guard's reading of the response): the exact one, with cache
    detail, is booked (``recognise.more_exact``). A reading without the cache
    count its producer (``scope``) never reports is warned about, once per
    producer, only when it is the call's only reading.

    ``failed``: the span ended with an error. With no usage and nothing seen of
    a response (a connection error, a refused request), that is a failed call:
    it stays counted and books nothing, like a turn that raised, and is not a
    "call without usage".
    """
    call = entry.call
    assert call is not None
    if not call.open and call.ended_early in ("stopped", "refused"):
        # Booked at its estimate when SIGTERM stopped its session (``book_in_flight``),
        # and answered after all (a graceful stop let it finish): booking the answer too
        # would count the call twice. The estimate, its request's upper bound, stands.
        # Or refused by the guard before anything was sent, and un-counted then
        # (``Ledger.admit_named``): there is nothing to book.
        return
    if _READING and call in _READING:
        _READING[call] = (entry, reading, scope, failed)  # booked when the guard read it
        return
    if _CUT and call in _CUT:
        _CUT.discard(call)
        reading = _unfinished(call, reading)
    # Unpacked in one step: each named field read is a descriptor call of its own.
    model, provider, usage, _, cache_reported = reading
    model = model or call.model
    if entry.same_call:
        if usage is None:
            return
        if call.open:
            # The enclosing call is still running: it books this usage when it
            # ends, unless it reports a reading of its own at least as exact.
            if call.library is None or more_exact(usage, call.library[1]):
                call.library = (model, usage)
                _held_at_answer(call, model, usage, provider)
            return
        if not call.booked_usage:
            # Usage that arrived after its turn ended (a stream read later, a
            # timed-out call that finished anyway): book it once, now.
            call.leaf.settle(call, model, usage, provider=provider, priced_by_core=False)
        return
    if call.library is not None and more_exact(call.library[1], usage):
        model, usage = call.library
    elif usage is not None and scope and not cache_reported:
        warn_no_cache(scope)  # this coarse reading is the only one of the call
    if usage is None and failed and call.estimated is None:
        call.leaf.release(call)
        return
    # Positional (price None: priced there; provider; priced_by_core False; unpriced
    # None: from the price the ledger looks up anyway): keywords cost ~90 ns a call.
    call.leaf.settle(call, model, usage, None, provider, False, None)
