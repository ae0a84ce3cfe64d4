"""What a fleet admission hands back, and what a fleet scope reads as."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, eq=False)
class FleetHold:
    """One admitted call's reservation in a fleet scope, until it is settled or released.

    Times are epoch seconds on the Redis server's clock, the one the whole fleet
    shares. ``backed`` is False when the store was unreachable and the scope fails
    open (``on_store_error="allow"``): the call then runs on local limits only and
    settling the hold books nothing.

    Example::

        hold = tenant.reserve("gpt-4o-mini", 0.002)
        try:
            text = call_model()
        except Exception:
            tenant.release(hold)      # ran and failed: stays counted, books nothing
            raise
        tenant.settle(hold, 0.0017)
    """

    scope: str
    model: str
    hold_id: str
    #: The reservation in USD (the caller's estimate or the scope's learned cost).
    reserved_usd: float
    #: Start of the window the call counts in (0.0 for a scope without windows).
    window_start: float
    #: When the reservation frees itself if nobody settles it (a crashed worker).
    lease_until: float
    backed: bool = True
    window: int = 0
    done: bool = False
    #: The scope's spend (nano-USD) with this hold's cost booked, as this process saw
    #: it when it settled the hold (``FleetLimits.crossed``); -1 until then.
    spent_nano: int = -1

    @property
    def unbacked(self) -> bool:
        """True when the store was down and the call was let through (fail open)."""
        return not self.backed


@dataclass(frozen=True, slots=True)
class FleetUsage:
    """A fleet scope's current window, read from the store.

    Example::

        u = tenant.usage()
        print(u.calls, u.spent_usd, u.reserved_usd, u.in_flight)
    """

    scope: str
    #: Calls admitted in this window (released calls that never ran are not counted).
    calls: int
    #: Settled cost in USD.
    spent_usd: float
    #: USD reserved by calls in flight whose lease has not run out.
    reserved_usd: float
    #: Calls in flight (admitted, neither settled, released nor expired).
    in_flight: int
    #: Epoch seconds (Redis clock) the window started at; 0.0 without windows.
    window_start: float
    window_s: float | None
    budget_usd: float | None
    max_calls: int | None
