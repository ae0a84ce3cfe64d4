"""Token usage, USD pricing and budgets.

Prices come from :mod:`techrevati.runtime.pricing` (re-exported here, where
0.1.0 defined them): an exact registered name, else the bundled ``genai-prices``
database, else the longest registered prefix, else $0 with a one-time warning.
Costs are computed lazily from the *current* prices, so re-registering a price
re-prices history.

Example::

    >>> from techrevati.runtime.usage_tracking import (
    ...     ModelPricing, UsageSnapshot, UsageTracker, register_pricing,
    ... )
    >>> register_pricing("doc-model", ModelPricing(input_per_million=3.0, output_per_million=15.0))
    >>> tracker = UsageTracker()
    >>> tracker.record_turn("doc-model", UsageSnapshot(input_tokens=5000, output_tokens=1200))
    >>> tracker.format_cost()
    '$0.03'
"""

from __future__ import annotations

import json
import math
import sys
import threading
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import pricing as _pricing

# 0.1.0 defined the pricing names here; callers and tests still import them from
# here (the underscore ones included), so unused-looking imports are re-exports.
from .pricing import (  # noqa: F401
    PRICING_TABLE,
    CostSource,
    ModelPricing,
    PricedCall,
    PricedTurn,
    _cost,
    _load_bundled_pricing,
    _parse_pricing_document,
    _pricing_lock,
    _resolve,
    _sums_cost,
    _table_version,
    _warn_unpriced_once,
    _warned_unpriced_models,
    cost_of,
    has_pricing,
    load_pricing_from_file,
    logger,
    price_call,
    price_source,
    price_turn,
    register_pricing,
)

__all__ = [
    "PRICING_TABLE",
    "BudgetExceededError",
    "CostSource",
    "LimitSite",
    "ModelPricing",
    "PricedCall",
    "PricedTurn",
    "UsageSnapshot",
    "UsageTracker",
    "cost_of",
    "has_pricing",
    "load_pricing_from_file",
    "price_call",
    "price_source",
    "price_turn",
    "register_pricing",
]

_new_object = object.__new__  # see UsageSnapshot._checked
_TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens")

# The pricing state 0.1.0 kept in this module. Rebinding one of them here (as
# ``monkeypatch.setattr(usage_tracking, "PRICING_TABLE", {...})`` does) must
# reach the lookups, which live in ``pricing`` now.
_SHARED_STATE = frozenset({"PRICING_TABLE", "_warned_unpriced_models"})


class _UsageTrackingModule(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name in _SHARED_STATE:
            setattr(_pricing, name, value)

    def __delattr__(self, name: str) -> None:
        super().__delattr__(name)
        if name in _SHARED_STATE:
            delattr(_pricing, name)


sys.modules[__name__].__class__ = _UsageTrackingModule


@dataclass(frozen=True)
class LimitSite:
    """Where a limit stopped a call: whose limit it was, and what became of the call.

    ``level`` is ``"own"`` (the limit of the session the call was made in),
    ``"parent"`` (an enclosing session's), ``"shared"`` (a shared session's,
    counting its calls in every process it reaches) or ``"fleet"`` (a fleet
    scope's, shared by every process). ``role`` and ``session_id`` name the session whose
    limit it is; ``call_role`` and ``call_session_id`` the session the call was
    made in, when that is another one. ``ran`` is True when the call ran, was
    booked and crossed the limit, False when it was refused before it ran.
    ``streamed`` is True when the call that crossed was a stream read to its
    end: its chunks reached the caller before the error. ``later`` is True for a
    call that ran and was booked after an earlier call (in flight alongside it)
    had already crossed the limit: it is over the limit too, but did not cross it.
    ``window_s`` is a fleet scope's window (None: its counts never reset).

    Example::

        >>> site = LimitSite("parent", ran=False, role="planner", session_id="planner-1",
        ...                  call_role="researcher", call_session_id="researcher-2")
        >>> site.describe_owner()
        "the parent session 'planner' (planner-1) of session 'researcher' (researcher-2)"
    """

    level: str
    ran: bool
    role: str = ""
    session_id: str = ""
    call_role: str = ""
    call_session_id: str = ""
    scope: str = ""
    streamed: bool = False
    later: bool = False
    window_s: float | None = None

    def describe_owner(self) -> str:
        """Whose limit it is, in words."""
        if self.level == "fleet":
            where = f"fleet scope {self.scope!r}"
            if self.call_role:
                where += f" (for session {_name(self.call_role, self.call_session_id)})"
            return where
        if self.level == "shared":
            own = f"the shared session {_name(self.role, self.session_id)}"
            if self.call_role:
                own += f" (for its session {_name(self.call_role, self.call_session_id)})"
            return own
        own = f"session {_name(self.role, self.session_id)}" if self.role else "this session"
        if self.level == "parent":
            caller = _name(self.call_role, self.call_session_id) if self.call_role else "?"
            return f"the parent {own} of session {caller}"
        return own

    def what_happened(self) -> str:
        """Whether the call ran: the sentence that says so."""
        if self.ran and self.later:
            # Several calls in flight together cross at once: only the first booking
            # crossed it, and each of the others saying it did reads as several causes.
            what = "stream" if self.streamed else "call"
            kept = (
                "its chunks reached the caller before this error"
                if self.streamed
                else "its result is discarded"
            )
            return (
                f"An earlier call, in flight alongside this {what}, had already crossed it "
                f"when this {what} was booked: this {what} ran too and was paid for, its "
                f"cost is booked, and {kept}."
            )
        if self.ran and self.streamed:
            # The error can only follow the last chunk: nothing of the result is held back.
            return (
                "The stream that crossed it ran and was paid for: its cost is booked, "
                "and its chunks reached the caller before this error, raised after the last one."
            )
        if self.ran:
            return (
                "The call that crossed it ran and was paid for: its cost is booked, "
                "and its result is discarded."
            )
        return "This call was refused before it ran: nothing was sent and nothing was booked."


#: What a $0 budget's refusal tells to change, by whose budget it is.
_RAISE_ZERO_BUDGET = {
    "parent": "Raise the parent session's budget_usd.",
    "shared": "Raise budget_usd where the shared session is opened.",
    "fleet": "Raise the scope's budget_usd.",
}


def _name(role: str, session_id: str) -> str:
    return f"{role!r} ({session_id})" if session_id else repr(role)


def usd_pair(amount: float, limit: float, *, strict: bool) -> tuple[str, str]:
    """Both amounts, each legible, with the fewest decimals that keep the comparison true.

    Each nonzero amount is printed with at least two significant digits (a
    $0.00004 budget is ``0.000040``, never ``0.0000``), and both with as many
    more as it takes for ``amount > limit`` (``strict``), else
    ``amount >= limit``, to be true as printed.

    Example::

        >>> usd_pair(0.000306, 0.0003, strict=True)
        ('0.00031', '0.00030')
        >>> usd_pair(0.000057, 0.00004, strict=False)
        ('0.000057', '0.000040')
        >>> usd_pair(12.5, 10.0, strict=True)
        ('12.5000', '10.0000')
    """
    start = max(
        4,
        _decimals_for_two_digits(amount),
        _decimals_for_two_digits(limit),
        _decimals_for_exact(limit),  # the budget as it was set: 0.00009975, not 0.000100
    )
    for digits in range(start, 13):
        a, b = f"{amount:.{digits}f}", f"{limit:.{digits}f}"
        if (float(a) > float(b)) if strict else (float(a) >= float(b)):
            return a, b
    return repr(amount), repr(limit)


def usd_text(amount: float) -> str:
    """One amount as limit messages print it (``usd_pair``'s rule, alone).

    Example::

        >>> usd_text(0.00004), usd_text(2.5)
        ('0.000040', '2.5000')
    """
    return usd_pair(amount, amount, strict=False)[0]


def _decimals_for_exact(value: float) -> int:
    """Decimals (at most 10) that print ``value`` exactly, as a user wrote it (0.00009975)."""
    if not value or not math.isfinite(value):
        return 0
    for digits in range(11):
        if float(f"{value:.{digits}f}") == value:
            return digits
    return 10


def _decimals_for_two_digits(value: float) -> int:
    """Decimals that print ``value`` with two significant digits (0 for zero or >= 10)."""
    if not value or not math.isfinite(value):
        return 0
    return max(0, 1 - math.floor(math.log10(abs(value))))


class BudgetExceededError(Exception):
    """A budget stopped the session: a call crossed it, or was refused because it was spent.

    The message prints both amounts with enough decimals that the comparison
    is true as printed, and, when the runtime raised it, whose budget it was
    (``site``: the session's own, a parent session's or a fleet scope's), whether
    the call ran (and was booked) or was refused before it ran, and what to change.

    Example::

        >>> err = BudgetExceededError(10.0, 12.5)
        >>> str(err)
        'budget exceeded: $12.5000 > $10.0000'
        >>> err.current_cost_usd
        12.5
    """

    def __init__(
        self,
        budget_usd: float,
        current_cost_usd: float,
        *,
        scope: str | None = None,
        site: LimitSite | None = None,
        reserved_usd: float = 0.0,
    ) -> None:
        self.budget_usd = budget_usd
        self.current_cost_usd = current_cost_usd
        #: The fleet scope that refused (``FleetLimits.scope``); None for a session's own budget.
        self.scope = scope
        #: Whose budget it was and whether the call ran; None when not raised by a session.
        self.site = site
        #: Of ``current_cost_usd`` for a refused call, what calls still in flight reserved.
        self.reserved_usd = reserved_usd
        #: Of ``reserved_usd``, how many client streams opened and not read to their
        #: end (nor closed) held it, and how much (``left_open``).
        self.open_streams = 0
        self.open_streams_usd = 0.0
        super().__init__(self._message())

    def left_open(self, streams: int, usd: float) -> BudgetExceededError:
        """This refusal, told that ``streams`` open streams reserve ``usd`` of it (returned)."""
        self.open_streams = streams
        self.open_streams_usd = min(usd, self.reserved_usd)
        self.args = (self._message(),)
        return self

    def at(self, site: LimitSite) -> BudgetExceededError:
        """This error, told where it happened (the message is rebuilt); returns itself."""
        self.site = site
        self.args = (self._message(),)
        return self

    def _message(self) -> str:
        site = self.site
        crossed = site is None or site.ran
        spent, budget = usd_pair(self.current_cost_usd, self.budget_usd, strict=crossed)
        if site is None:
            where = f" in fleet scope {self.scope!r}" if self.scope is not None else ""
            return f"budget exceeded{where}: ${spent} > ${budget}"
        owner = site.describe_owner()
        if not crossed and not self.budget_usd:
            # Every model call is refused at $0 with nothing spent or in flight: the split
            # and the in-flight hints below would explain a cause that is not there.
            return (
                f"budget reached: the budget of {owner} is $0, so no model call may run. "
                f"{site.what_happened()} {_RAISE_ZERO_BUDGET.get(site.level, 'Raise budget_usd.')}"
            )
        if crossed:
            head = f"budget exceeded: ${spent} > ${budget}, the budget of {owner}."
        else:
            head = (
                f"budget reached: ${spent} spent or reserved by calls in flight >= ${budget}, "
                f"the budget of {owner}."
            )
        reserved = self.reserved_usd if not crossed else 0.0
        if reserved > 0:
            # Refused by what calls in flight hold, not only by what was spent: say so,
            # or "raise the budget" reads wrong when a burst of first calls reserved it.
            booked = max(self.current_cost_usd - reserved, 0.0)
            # As many decimals as the total above, more for a part too small to show.
            digits = len(spent.partition(".")[2])
            shown_booked = f"{booked:.{max(digits, _decimals_for_two_digits(booked))}f}"
            shown_reserved = f"{reserved:.{max(digits, _decimals_for_two_digits(reserved))}f}"
            streams = self.open_streams
            if streams:
                # A stream left open looks, to its caller, like nothing in flight: name
                # it apart from the calls still running.
                left = (
                    "1 stream opened and not read to its end (nor closed)"
                    if streams == 1
                    else f"{streams} streams opened and not read to their end (nor closed)"
                )
                in_flight = reserved - self.open_streams_usd
                if in_flight > 0:
                    shown_streams = f"{self.open_streams_usd:.{digits}f}"
                    held_by = f"calls still in flight and ${shown_streams} by {left}"
                else:
                    held_by = left
            else:
                held_by = "calls still in flight"
            head += (
                f" Of that, ${shown_booked} was spent and ${shown_reserved} is "
                f"reserved by {held_by}, each at what it is expected to cost until "
                "it is booked: the usage= it was given, the most its model has cost so far, "
                "call_estimate_usd, or what its request asks for (its max_tokens, else a "
                "default output length)."
            )
        if self.open_streams and not crossed:
            # Booked once closed, at its request and the text seen: its reservation
            # (what it may cost in all) is freed then.
            hint = (
                "Close each stream you stop reading before its end, so it is booked at once "
                "at what was read of it: `with client....create(..., stream=True) as "
                "stream:`, or `stream.close()` (`await stream.close()` for an async client); "
                + (
                    "or raise the parent session's budget_usd."
                    if site.level == "parent"
                    else "or raise budget_usd."
                )
            )
            if self.reserved_usd > self.open_streams_usd:
                hint = f"Let the calls in flight finish. {hint}"
        elif site.level == "fleet":
            # Without window_s the spend never resets: no window turns over.
            turns = " (or once its window turns over)" if site.window_s is not None else ""
            hint = (
                f"Raise the scope's budget_usd, or retry once its calls in flight finish{turns}; "
                "FleetLimits.usage() shows what was spent and what calls in flight reserve."
            )
        elif site.level == "shared":
            hint = (
                "Its budget counts the spend of every process it reaches: raise budget_usd "
                "where the shared session is opened, or retry once its calls in flight finish."
            )
        elif site.level == "parent":
            hint = "Raise the parent session's budget_usd, or give the work fewer calls."
        elif crossed:
            hint = "Raise budget_usd, or end the loop before it reaches the budget."
        elif reserved * 2 >= self.current_cost_usd:
            # Which of the sources above made the reservations is not kept (it would cost
            # every call): no advice that fits only one of them, such as max_tokens.
            hint = "Let the calls in flight finish, or raise budget_usd."
        else:
            hint = (
                "Raise budget_usd; calls are refused while what was spent plus what calls "
                "in flight reserve stays at the budget."
            )
        return f"{head} {site.what_happened()} {hint}"

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception pickling replays self.args (the message) into __init__, which
        # expects the two numbers; without this the error cannot cross processes.
        return (
            _rebuild_budget_error,
            (
                type(self),
                self.budget_usd,
                self.current_cost_usd,
                self.scope,
                self.site,
                self.reserved_usd,
                self.open_streams,
                self.open_streams_usd,
            ),
            self.__dict__,
        )


def _rebuild_budget_error(
    cls: type[BudgetExceededError],
    budget: float,
    current: float,
    scope: str | None,
    site: LimitSite | None = None,
    reserved: float = 0.0,
    open_streams: int = 0,
    open_streams_usd: float = 0.0,
) -> BudgetExceededError:
    error = cls.__new__(cls)
    BudgetExceededError.__init__(
        error, budget, current, scope=scope, site=site, reserved_usd=reserved
    )
    if open_streams:
        error.left_open(open_streams, open_streams_usd)
    return error


def _format_usd(amount: float) -> str:
    # Sub-cent totals keep 4 decimals so cheap sessions do not all read "$0.00".
    return f"${amount:.4f}" if amount < 0.01 else f"${amount:.2f}"


def _check_token(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"UsageSnapshot.{name} must be an int, got {type(value).__name__} {value!r}"
        )
    if value < 0:
        raise ValueError(f"UsageSnapshot.{name} must be >= 0, got {value}")


def _coerce_token(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"UsageSnapshot.from_dict: {key!r} must be a number, got {type(value).__name__} "
            f"{value!r}"
        )
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(
                f"UsageSnapshot.from_dict: {key!r} must be a whole number, got {value}"
            )
        return int(value)
    return value


@dataclass(frozen=True, slots=True)
class UsageSnapshot:
    """Token counts for one model call.

    The four counts are disjoint: ``input_tokens`` excludes cached tokens, which
    are counted in ``cache_write_tokens`` / ``cache_read_tokens`` and priced at
    their own rates. Counts must be non-negative ints.

    Example::

        >>> snap = UsageSnapshot(input_tokens=100, output_tokens=20)
        >>> UsageSnapshot.from_json(snap.to_json()) == snap
        True
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0

    def __post_init__(self) -> None:
        i, o, w, r = (
            self.input_tokens,
            self.output_tokens,
            self.cache_write_tokens,
            self.cache_read_tokens,
        )
        # Fast path: one type test and one compare per field for the usual case.
        if (
            type(i) is int
            and type(o) is int
            and type(w) is int
            and type(r) is int
            and i >= 0
            and o >= 0
            and w >= 0
            and r >= 0
        ):
            return
        for name, value in zip(_TOKEN_FIELDS, (i, o, w, r), strict=True):
            _check_token(name, value)

    @classmethod
    def _checked(cls, inp: int, out: int, write: int, read: int) -> UsageSnapshot:
        """A snapshot of counts the caller already made non-negative ints.

        Usage read from every model response is built here: the public
        constructor's keyword parsing and re-validation are most of the cost of
        a frozen dataclass, and the readers have clamped each count already.
        """
        snapshot = _new_object(cls)
        _set_input(snapshot, inp)
        _set_output(snapshot, out)
        _set_cache_write(snapshot, write)
        _set_cache_read(snapshot, read)
        return snapshot

    def to_dict(self) -> dict[str, int]:
        """Return the four counts keyed by field name."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cache_read_tokens": self.cache_read_tokens,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> UsageSnapshot:
        """Build from a dict; missing keys are 0, unknown keys are ignored.

        Integral floats (``5.0``) are accepted; any other non-numeric value
        raises ``TypeError`` naming the key.
        """
        return cls(*(_coerce_token(key, d[key]) if key in d else 0 for key in _TOKEN_FIELDS))

    def to_json(self) -> str:
        """Return the counts as a JSON object string."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, s: str | bytes) -> UsageSnapshot:
        """Parse a JSON object string produced by :meth:`to_json`."""
        data = json.loads(s)
        if not isinstance(data, dict):
            raise TypeError(f"UsageSnapshot JSON must be an object, got {type(data).__name__}")
        return cls.from_dict(data)


# The slots' own setters: they fill a frozen dataclass without its __setattr__ guard.
_set_input, _set_output, _set_cache_write, _set_cache_read = (
    getattr(UsageSnapshot, name).__set__ for name in _TOKEN_FIELDS
)


class _ModelTotals:
    """Running token sums for one recorded (model, provider)."""

    __slots__ = (
        "bands",
        "cache_read",
        "cache_write",
        "estimated",
        "held",
        "input",
        "output",
        "turns",
    )

    def __init__(self) -> None:
        self.input = 0
        self.output = 0
        self.cache_write = 0
        self.cache_read = 0
        self.turns = 0
        # USD of calls booked at a fixed amount, not priced from the token sums: an
        # estimate (no usage arrived), or the clamp of a call priced above MAX_CALL_USD.
        self.estimated = 0.0
        # Tokens and count of clamped calls [input, output, cache_write, cache_read,
        # calls]: in the token totals, never priced again (their cost is in ``estimated``).
        self.held: list[int] | None = None
        # Sums per price band, only for calls a tiered database price charged:
        # band key -> [input, output, cache_write, cache_read, calls].
        self.bands: dict[tuple[int, int], list[int]] | None = None

    def add(self, usage: UsageSnapshot, band: tuple[int, int] | None = None) -> None:
        self.input += usage.input_tokens
        self.output += usage.output_tokens
        self.cache_write += usage.cache_write_tokens
        self.cache_read += usage.cache_read_tokens
        self.turns += 1
        if band is not None:
            bands = self.bands
            if bands is None:
                bands = self.bands = {}
            part = bands.get(band)
            if part is None:
                bands[band] = [
                    usage.input_tokens,
                    usage.output_tokens,
                    usage.cache_write_tokens,
                    usage.cache_read_tokens,
                    1,
                ]
            else:
                part[0] += usage.input_tokens
                part[1] += usage.output_tokens
                part[2] += usage.cache_write_tokens
                part[3] += usage.cache_read_tokens
                part[4] += 1

    def hold(self, usage: UsageSnapshot) -> None:
        """Count a clamped call's tokens outside the priced sums."""
        held = self.held
        if held is None:
            held = self.held = [0, 0, 0, 0, 0]
        held[0] += usage.input_tokens
        held[1] += usage.output_tokens
        held[2] += usage.cache_write_tokens
        held[3] += usage.cache_read_tokens
        held[4] += 1
        self.turns += 1

    def cost(self, model: str, provider: str) -> float:
        held = self.held
        calls = self.turns if held is None else self.turns - held[4]  # held: never re-priced
        sums = (self.input, self.output, self.cache_write, self.cache_read, calls)
        return _sums_cost(model, provider, sums, self.bands) + self.estimated


#: Where a call's price is booked as a fixed amount beside the token sums: an estimate
#: (no usage arrived), or the clamp of a call priced above MAX_CALL_USD.
_FIXED_COST = frozenset(("estimated", "clamped"))

# (model, provider, input, output, cache_write, cache_read, calls, bands, fixed USD,
# held tokens) copied out under the lock; the token sums at 2-5 include the held ones.
_TotalsRow = tuple[
    str,
    str,
    int,
    int,
    int,
    int,
    int,
    dict[tuple[int, int], list[int]] | None,
    float,
    tuple[int, int, int, int, int] | None,
]


def _row_cost(row: _TotalsRow) -> float:
    # Calls booked at a fixed amount (an estimate, a clamp) carry it beside the token
    # sums; their tokens (held) are taken out of the sums before pricing.
    sums = (row[2], row[3], row[4], row[5], row[6])
    held = row[9]
    if held is not None:
        sums = (
            sums[0] - held[0],
            sums[1] - held[1],
            sums[2] - held[2],
            sums[3] - held[3],
            sums[4] - held[4],
        )
    return _sums_cost(row[0], row[1], sums, row[7]) + row[8]


def _row(model: str, provider: str, t: _ModelTotals) -> _TotalsRow:
    held = t.held
    if held is None:
        return (
            model,
            provider,
            t.input,
            t.output,
            t.cache_write,
            t.cache_read,
            t.turns,
            None if t.bands is None else {k: list(v) for k, v in t.bands.items()},
            t.estimated,
            None,
        )
    return (
        model,
        provider,
        t.input + held[0],
        t.output + held[1],
        t.cache_write + held[2],
        t.cache_read + held[3],
        t.turns,
        None if t.bands is None else {k: list(v) for k, v in t.bands.items()},
        t.estimated,
        (held[0], held[1], held[2], held[3], held[4]),
    )


@dataclass
class UsageTracker:
    """Per-session ledger of model turns, their tokens and their USD cost.

    Totals are kept as running per-model sums, so reading them costs
    O(distinct models), not O(turns). ``turns`` lists the recorded
    ``(model, usage)`` pairs; with ``retain_turns=N`` it keeps only the newest N
    (bounded memory for long sessions) while counts and totals still cover
    every turn. Record through :meth:`record_turn` / :meth:`record_and_price`.

    Example::

        >>> from techrevati.runtime.usage_tracking import register_pricing, ModelPricing
        >>> register_pricing("doc-model-c", ModelPricing(3.0, 15.0))
        >>> tracker = UsageTracker(retain_turns=1)
        >>> tracker.record_and_price("doc-model-c", UsageSnapshot(1_000_000, 0))
        3.0
        >>> tracker.record_turn("doc-model-c", UsageSnapshot(0, 1_000_000))
        >>> tracker.turn_count, len(tracker.turns), tracker.total_cost()
        (2, 1, 18.0)
    """

    turns: list[tuple[str, UsageSnapshot]] = field(default_factory=list)
    retain_turns: int | None = None
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )
    # Keyed by (model as recorded, lowercased provider).
    _models: dict[tuple[str, str], _ModelTotals] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _turn_count: int = field(default=0, init=False, repr=False, compare=False)
    # The list object and length the aggregates describe; a mismatch means
    # someone edited ``turns`` directly (see _aggregates()).
    _synced_list: list[tuple[str, UsageSnapshot]] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    _synced_len: int = field(default=0, init=False, repr=False, compare=False)
    # Running total cost, valid only while the pricing table still has version
    # ``_cost_version`` (None = must be recomputed from the per-model sums).
    # This keeps a per-turn budget check O(1) instead of O(models).
    _cost_total: float = field(default=0.0, init=False, repr=False, compare=False)
    _cost_version: int | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        retain = self.retain_turns
        if retain is not None:
            if isinstance(retain, bool) or not isinstance(retain, int):
                raise TypeError(f"retain_turns must be an int or None, got {retain!r}")
            if retain < 0:
                raise ValueError(f"retain_turns must be >= 0, got {retain}")
        with self._lock:
            self._rebuild_locked(self.turns)
            self._trim_locked()

    # -- recording ---------------------------------------------------------

    def record_turn(self, model: str, usage: UsageSnapshot) -> None:
        """Record one model call. An unpriced, non-empty model warns once per process.

        Example::

            >>> UsageTracker().record_turn("", UsageSnapshot(1, 1))  # recorded, no warning
        """
        self.record_and_price(model, usage)

    def record_and_price(self, model: str, usage: UsageSnapshot, provider: str = "") -> float:
        """Record one turn and return that turn's cost, with a single lock acquisition.

        ``provider`` (e.g. ``"openai"``, a ``gen_ai.provider.name``) picks the
        database entry when a model is served by several providers.

        Example::

            >>> UsageTracker().record_and_price("claude-haiku-4-5", UsageSnapshot(1_000_000, 0))
            1.0
        """
        try:
            priced = price_call(model, usage, provider)
        except AttributeError:
            # Only once pricing failed: the usual call pays for no check.
            if not isinstance(usage, UsageSnapshot):
                raise TypeError(
                    f"usage must be a UsageSnapshot, got {type(usage).__name__}: {usage!r}"
                ) from None
            raise
        return self.record_priced(model, usage, priced)

    def record_priced(self, model: str, usage: UsageSnapshot, priced: PricedTurn) -> float:
        """Record one turn that ``price_call`` already priced; returns its cost.

        The telemetry core prices a turn once, for its span, and hands the
        result here, so a turn is never priced twice. The table version inside
        ``priced`` was read before pricing: a price change in between makes the
        running total stale (recomputed later) instead of silently wrong.
        A plain ``(cost, version, known)`` triple (0.1.0's shape) is accepted.
        """
        if type(priced) is PricedCall:
            cost, version, known, source, band, provider = priced
        else:
            cost, version, known = priced[0], priced[1], priced[2]
            source = "registered"
            band = None
            provider = ""
        if not known and model:
            _warn_unpriced_once(model)
        # acquire / release rather than `with`: on every call, and `with` costs twice as
        # much (it calls __exit__ with three arguments).
        self._lock.acquire()
        try:
            turns = self.turns
            if turns is not self._synced_list or len(turns) != self._synced_len:
                self._resync_locked()
                turns = self.turns
            turns.append((model, usage))
            key = (model, provider)
            totals = self._models.get(key)
            if totals is None:
                totals = self._models[key] = _ModelTotals()
            if source in _FIXED_COST:  # one test for the usual case
                if source == "clamped":
                    # Its tokens price above MAX_CALL_USD: booked at the clamp, as the
                    # ledger and its span are, and never re-priced from the sums.
                    totals.hold(usage)
                else:
                    totals.add(usage, band)
                totals.estimated += cost
            else:
                totals.add(usage, band)
            self._turn_count += 1
            if self.retain_turns is None:
                self._synced_len += 1  # the one append above; nothing to trim
            else:
                self._trim_locked()
            if version is not None and version == self._cost_version:
                self._cost_total += cost
            else:
                self._cost_version = None
        finally:
            self._lock.release()
        return cost

    # -- internal bookkeeping ------------------------------------------------

    def _rebuild_locked(self, source: Iterable[tuple[str, UsageSnapshot]]) -> None:
        # Rebuilt from ``turns`` alone: the provider and price band of each call
        # are not in that public list, so they start over as unknown.
        models: dict[tuple[str, str], _ModelTotals] = {}
        count = 0
        for model, usage in source:
            key = (model, "")
            totals = models.get(key)
            if totals is None:
                totals = models[key] = _ModelTotals()
            totals.add(usage)
            count += 1
        self._models = models
        self._turn_count = count
        self._cost_version = None
        self._synced_list = self.turns
        self._synced_len = len(self.turns)

    def _resync_locked(self) -> None:
        if self.retain_turns is None:
            # Unbounded: ``turns`` is the whole history, so it is the truth.
            self._rebuild_locked(self.turns)
        else:
            # Windowed: the aggregates are the truth; only re-adopt the list.
            self._synced_list = self.turns
            self._synced_len = len(self.turns)
            self._trim_locked()

    def _trim_locked(self) -> None:
        turns = self.turns
        retain = self.retain_turns
        if retain is not None and len(turns) > retain:
            del turns[: len(turns) - retain]
        self._synced_list = turns
        self._synced_len = len(turns)

    def _aggregates(self) -> tuple[int, list[_TotalsRow]]:
        """Consistent copy of (turn count, per-(model, provider) sums) in first-seen order."""
        with self._lock:
            if self.turns is not self._synced_list or len(self.turns) != self._synced_len:
                self._resync_locked()
            rows = [_row(model, provider, t) for (model, provider), t in self._models.items()]
            return self._turn_count, rows

    # -- totals --------------------------------------------------------------

    @property
    def turn_count(self) -> int:
        """Number of turns ever recorded (not capped by ``retain_turns``)."""
        return self._aggregates()[0]

    @property
    def total_input_tokens(self) -> int:
        """Sum of ``input_tokens`` (uncached input) over all recorded turns."""
        return sum(row[2] for row in self._aggregates()[1])

    @property
    def total_output_tokens(self) -> int:
        """Sum of ``output_tokens`` over all recorded turns."""
        return sum(row[3] for row in self._aggregates()[1])

    def token_totals(self) -> UsageSnapshot:
        """All four token counts summed over every recorded turn (one consistent read)."""
        rows = self._aggregates()[1]
        return UsageSnapshot(
            input_tokens=sum(row[2] for row in rows),
            output_tokens=sum(row[3] for row in rows),
            cache_write_tokens=sum(row[4] for row in rows),
            cache_read_tokens=sum(row[5] for row in rows),
        )

    def cost_for_turn(self, model: str, usage: UsageSnapshot) -> float:
        """Unrounded USD cost of ``usage`` on ``model`` at current prices (no recording).

        Example::

            >>> from techrevati.runtime.usage_tracking import register_pricing, ModelPricing
            >>> register_pricing("doc-model-d", ModelPricing(3.0, 15.0, 3.75, 0.3))
            >>> UsageTracker().cost_for_turn("doc-model-d", UsageSnapshot(0, 0, 0, 1_000_000))
            0.3
        """
        return cost_of(model, usage)

    @staticmethod
    def _row_costs(rows: list[_TotalsRow]) -> dict[str, float]:
        costs: dict[str, float] = {}
        for row in rows:
            costs[row[0]] = costs.get(row[0], 0.0) + _row_cost(row)
        return costs

    def total_cost(self) -> float:
        """Unrounded USD cost of every recorded turn at current prices."""
        version = _table_version()
        with self._lock:
            if self.turns is not self._synced_list or len(self.turns) != self._synced_len:
                self._resync_locked()
            if version is not None and version == self._cost_version:
                return self._cost_total
            total = 0.0
            for (model, provider), t in self._models.items():
                total += t.cost(model, provider)
            self._cost_total = total
            self._cost_version = version
            return total

    def per_model_summary(self) -> dict[str, float]:
        """Unrounded cost per model string as recorded, in first-seen order."""
        return self._row_costs(self._aggregates()[1])

    def format_cost(self) -> str:
        """Total cost as text: 4 decimals below one cent (``"$0.0084"``), else 2 (``"$3.00"``)."""
        return _format_usd(self.total_cost())

    def budget_remaining(self, budget_usd: float) -> float:
        """``budget_usd`` minus the total cost (negative once over budget)."""
        return budget_usd - self.total_cost()

    def is_over_budget(self, budget_usd: float) -> bool:
        """True when the total cost is strictly greater than ``budget_usd``."""
        return self.total_cost() > budget_usd

    def summary(self) -> dict[str, Any]:
        """Counts and cost in one JSON-friendly dict (cost rounded to 4 decimals).

        ``total_input_tokens`` is the uncached input (0.1.0's meaning); cached
        tokens are in :meth:`token_totals`.
        """
        count, rows = self._aggregates()
        total = sum(self._row_costs(rows).values())
        return {
            "turns": count,
            "total_input_tokens": sum(row[2] for row in rows),
            "total_output_tokens": sum(row[3] for row in rows),
            "total_cost_usd": round(total, 4),
            "formatted_cost": _format_usd(total),
        }
