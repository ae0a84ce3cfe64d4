"""Money as integer nano-dollars (1e-9 USD): the one rule every limit compares with.

Floats drift when summed (0.1 + 0.1 + 0.1 == 0.30000000000000004), so a
session that spends exactly its budget would look over it. Every level of the
ledger (the local one and the fleet's Redis counters) therefore keeps and
compares integers: a cost is rounded once, to the nearest nano-dollar, when it
is booked or reserved, and sums are exact from then on.

Bounds. A budget above ``MAX_BUDGET_USD`` is a configuration error; one call's
booking or reservation above ``MAX_CALL_USD`` (a hostile or broken usage
block) is clamped to it and logged. Both keep every counter far below 2**53
nano-dollars per call and 2**63 in total, so no number ever wraps in Redis'
Lua (``%d``) or loses a whole cent in a double.

Example::

    >>> to_nano(0.1) * 3 == to_nano(0.3)
    True
    >>> booking_nano(float("inf"), "cost of gpt-4o")
    1000000000000000
"""

from __future__ import annotations

import logging
import math

from ...pricing import MAX_CALL_USD as PRICING_MAX_CALL_USD

_log = logging.getLogger("techrevati.runtime.limits")

#: Nano-dollars per dollar.
NANO = 1_000_000_000
#: The largest budget a limit accepts (USD): 1e18 nano-dollars, below 2**63.
MAX_BUDGET_USD = 1e9
#: The smallest positive budget a limit accepts (USD): one nano-dollar. A smaller
#: one would round to 0 nano-dollars and act as a budget of $0.
MIN_BUDGET_USD = 1 / NANO
#: The largest cost one call may book or reserve (USD): 1e15 nano-dollars, below 2**53.
#: Defined with pricing, which clamps a call's price to it (so every report agrees).
MAX_CALL_USD = PRICING_MAX_CALL_USD
MAX_CALL_NANO = round(MAX_CALL_USD * NANO)

_clamped: set[str] = set()


def to_nano(usd: float) -> int:
    """``usd`` (finite, validated by the caller) as whole nano-dollars, rounded to nearest.

    Example::

        >>> to_nano(0.0017)
        1700000
    """
    return round(usd * NANO)


def to_usd(nano: int) -> float:
    """Nano-dollars back to USD, for reading and reporting (never for comparing).

    Example::

        >>> to_usd(1_700_000)
        0.0017
    """
    return nano / NANO


_NO_SUBJECT = object()


def booking_nano(usd: float, what: str, subject: object = _NO_SUBJECT) -> int:
    """One call's cost or reservation in nano-dollars, clamped to ``[0, MAX_CALL_USD]``.

    ``what`` labels the amount in the log line; with ``subject`` it is a
    ``str.format`` pattern filled with it (``"cost of {!r}"``, the model) only
    when a line is logged, so the per-call path formats nothing.

    A value outside the bound (NaN, infinite, negative, or above
    ``MAX_CALL_USD``) never disables a limit: it is clamped (NaN and
    negatives to 0, the rest to the maximum) and logged at WARNING, once per
    ``what`` label and at DEBUG after that.

    Example::

        >>> booking_nano(0.25, "cost")
        250000000
    """
    if type(usd) is float and 0.0 <= usd <= MAX_CALL_USD:  # the usual case
        return round(usd * NANO)
    if isinstance(usd, int | float) and not isinstance(usd, bool):
        value = float(usd) if not isinstance(usd, int) or usd <= 2**63 else math.inf
        if 0.0 <= value <= MAX_CALL_USD:
            return round(value * NANO)
        clamped = MAX_CALL_NANO if value > MAX_CALL_USD else 0
    else:
        clamped = 0
    _warn_clamp(what if subject is _NO_SUBJECT else what.format(subject), usd, clamped)
    return clamped


def _warn_clamp(what: str, usd: object, clamped: int) -> None:
    log = _log.debug if what in _clamped else _log.warning
    if len(_clamped) < 1024:  # bounded: labels name models, which come from responses
        _clamped.add(what)
    log(
        "%s is out of range (%r USD); booked as %s USD so the limit still counts it",
        what,
        usd,
        to_usd(clamped),
    )


def check_budget(name: str, value: object) -> float | None:
    """Validate a budget: None, 0, or a finite number in ``[MIN_BUDGET_USD, MAX_BUDGET_USD]``.

    A positive budget below one nano-dollar would round to 0 and act as $0 (every
    priced call refused, with a message comparing $0.0 against the budget as given),
    so it is refused here. 0 stays valid: no priced call may run. Digits below a
    nano-dollar are rounded off, as the ledger counts the budget: a message printing
    the budget as given would compare against a budget no limit holds
    ("$0.123456789 ... >= $0.1234567894").

    Raises ``TypeError`` / ``ValueError`` naming ``name`` and the value.

    Example::

        >>> check_budget("budget_usd", 5)
        5.0
        >>> check_budget("budget_usd", 0), check_budget("budget_usd", 1e-9)
        (0.0, 1e-09)
        >>> check_budget("budget_usd", 0.1234567894)
        0.123456789
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or not 0 <= value <= MAX_BUDGET_USD:
        raise ValueError(
            f"{name} must be a finite number in [0, {MAX_BUDGET_USD:g}], got {value!r}"
        )
    if 0 < value < MIN_BUDGET_USD:
        raise ValueError(
            f"{name} must be 0 or at least ${MIN_BUDGET_USD:.9f} (one nano-dollar, the "
            f"smallest amount a limit counts), got {value!r}"
        )
    nano = value * NANO
    if nano != round(nano):
        return round(nano) / NANO  # (a budget without such digits reads back as given)
    return float(value)
