"""Booking what a library model call (a span, or a client request the guard saw) used.

One place for both doors that see another producer's calls: the limits
processor (a finished library span) and the client guard (a response it read).
An entry that is the same call as an enclosing one hands its usage to that call
while it still runs (our turn books it unless its own result reports usage),
and books it itself only when it arrives after that call ended; a new call
settles its own claim.
"""

from __future__ import annotations

from ...pricing import has_pricing
from ..readings.recognise import CallReading
from .membership import SpanEntry


def book(entry: SpanEntry, reading: CallReading) -> None:
    """Book a finished library call (see the module docstring). May raise only on bugs."""
    call = entry.call
    assert call is not None
    usage = reading.usage
    model = reading.model or call.model
    provider = reading.provider
    if entry.same_call:
        if usage is None:
            return
        if call.open:
            # The enclosing call is still running: it books this usage when it
            # ends, unless it reports usage of its own.
            if call.library is None:
                call.library = (model, usage)
            return
        if not call.booked_usage:
            # Usage that arrived after its turn ended (a stream read later, a
            # timed-out call that finished anyway): book it once, now.
            call.leaf.settle(call, model, usage, provider=provider, priced_by_core=False)
        return
    if usage is None and call.library is not None:
        model, usage = call.library
    call.leaf.settle(
        call,
        model,
        usage,
        provider=provider,
        priced_by_core=False,
        unpriced=bool(model) and not has_pricing(model, provider),
    )
