"""Booking what a library model call (a span, or a client request the guard saw) used.

One place for both doors that see another producer's calls: the limits
processor (a finished library span) and the client guard (a response it read).
An entry that is the same call as an enclosing one hands its usage to that call
while it still runs (our turn books it unless its own result reports usage),
and books it itself only when it arrives after that call ended; a new call
settles its own claim.
"""

from __future__ import annotations

from ..readings.recognise import CallReading, more_exact, warn_no_cache
from .membership import SpanEntry


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
