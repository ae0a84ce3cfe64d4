"""Prices for real model names from the maintained ``genai-prices`` database.

This module is the only place that talks to ``genai-prices``. It turns the
database's entry for one (provider, model) into plain per-million rates once,
and keeps them, because asking the database costs about twice a whole span
while pricing a call from kept rates costs well under a microsecond.

How an entry becomes rates: the database's own ``ModelPrice.calc_price`` is
asked a handful of one-token questions (one more input token, one more output
token, one input token that is a cache read / a cache write instead) inside
each price band, so whatever the database knows about how token kinds nest
(e.g. a model without a cache-write price charges those tokens as input) is
carried over exactly, in ``Decimal``, without re-implementing it here.

* **Tiers** (a model whose rates change once a request's input exceeds N
  tokens) become bands: a call's band is chosen by its total input (uncached +
  cache reads + cache writes), and every token of that call is charged at the
  band's rates, as the providers bill.
* **Dated prices** (a price that starts on a given day, or an off-peak hour)
  are chosen by the clock at pricing time, as the database does for "now".
* **Reasoning tokens** are part of ``output_tokens`` (providers report and bill
  them as output), so they are priced once, as output.

Nothing here touches the network: the database ships inside the
``genai-prices`` wheel, it is imported on the first lookup (not at our
import), and its opt-in ``UpdatePrices`` fetcher is never started.

Example::

    >>> price = lookup("gpt-4o-mini", "openai")
    >>> price.flat.input_per_million, price.flat.output_per_million
    (0.15, 0.6)
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from genai_prices.types import ModelInfo, ModelPrice

__all__ = [
    "Band",
    "BundledPrice",
    "clear_cache",
    "database_version",
    "identify",
    "lookup",
    "preload",
]

logger = logging.getLogger("techrevati.runtime.pricing")
logger.addHandler(logging.NullHandler())

_MILLION = Decimal(1_000_000)
_CACHE_LIMIT = 4096
_NEVER = math.inf

#: ``gen_ai.provider.name`` values (OpenTelemetry GenAI conventions) whose
#: ``genai-prices`` provider id is spelled differently. Names not listed here
#: are passed through (the database matches ``openai``, ``anthropic``,
#: ``aws.bedrock``, ``mistral_ai``, ``azure.ai.openai`` ... by itself).
PROVIDER_ALIASES: dict[str, str] = {
    "gcp.gen_ai": "google",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "aws.bedrock": "aws",
    "x_ai": "x-ai",
    "xai": "x-ai",
    "mistral_ai": "mistral",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "azure": "azure",
    "together_ai": "together",
}


class Band(NamedTuple):
    """USD rates for one price band: per million tokens of each kind, plus per call.

    Example::

        >>> Band(3.0, 15.0, 3.75, 0.3, 0.0).cache_read_per_million
        0.3
    """

    input_per_million: float
    output_per_million: float
    cache_write_per_million: float
    cache_read_per_million: float
    per_call: float


class _Schedule(NamedTuple):
    """One of a model's prices: the input-token thresholds and the band rates between them."""

    thresholds: tuple[int, ...]  # ascending; band i applies to total input in (t[i-1], t[i]]
    bands: tuple[Band, ...]  # len(thresholds) + 1


class BundledPrice:
    """A database model's price, ready to charge calls.

    ``flat`` is the single band when the price has no tiers and cannot change
    while the process runs (most models); callers charge those calls exactly
    like a registered price. Otherwise :meth:`charge` picks the band per call.
    """

    __slots__ = (
        "_active",
        "_changes",
        "_choose",
        "_schedules",
        "_valid_until",
        "flat",
        "model_id",
        "provider_id",
        "static",
    )

    def __init__(
        self,
        model_id: str,
        provider_id: str,
        schedules: tuple[_Schedule, ...],
        choose: Callable[[datetime], int],
        changes: Callable[[datetime], float],
    ) -> None:
        self.model_id = model_id
        self.provider_id = provider_id
        self._schedules = schedules
        self._choose = choose  # the schedule in force at a time
        self._changes = changes
        now = datetime.now(UTC)
        self._active = choose(now)
        self._valid_until = changes(now)  # epoch seconds when the choice may change
        only = schedules[self._active]
        fixed = self._valid_until == _NEVER
        self.flat: Band | None = only.bands[0] if fixed and not only.thresholds else None
        #: (thresholds, bands, band keys) when the schedule can no longer change
        #: while the process runs: the hot path then bisects without a clock.
        self.static: (
            tuple[tuple[int, ...], tuple[Band, ...], tuple[tuple[int, int], ...]] | None
        ) = (
            (only.thresholds, only.bands, tuple((self._active, i) for i in range(len(only.bands))))
            if fixed
            else None
        )

    def _schedule(self) -> int:
        if time.time() >= self._valid_until:
            now = datetime.now(UTC)
            self._active = self._choose(now)
            self._valid_until = self._changes(now)
        return self._active

    def charge(self, inp: int, out: int, write: int, read: int) -> tuple[Band, tuple[int, int]]:
        """The band one call is charged at, and its key ``(schedule, band)``.

        ``inp`` is the uncached input; the band is chosen by all input tokens.
        """
        index = self._schedule()
        schedule = self._schedules[index]
        if not schedule.thresholds:
            return schedule.bands[0], (index, 0)
        band = bisect.bisect_left(schedule.thresholds, inp + write + read)
        return schedule.bands[band], (index, band)

    def band(self, key: tuple[int, int] | None) -> Band:
        """Rates of a band key from :meth:`charge`; None means the lowest band now in force."""
        if key is None:
            return self._schedules[self._schedule()].bands[0]
        return self._schedules[key[0]].bands[key[1]]

    def __repr__(self) -> str:
        return f"BundledPrice({self.provider_id}/{self.model_id})"


# (provider key, model key) -> price, or None when the database has no price.
_cache: dict[tuple[str, str], BundledPrice | None] = {}
# (provider key, model key) -> the database's model id, or None (no price built).
_ids: dict[tuple[str, str], str | None] = {}
_cache_lock = threading.Lock()
_load_failed = False


def clear_cache() -> None:
    """Forget every resolved entry (e.g. after installing a custom genai-prices snapshot)."""
    with _cache_lock:
        _cache.clear()
        _ids.clear()


def database_version() -> str | None:
    """The installed ``genai-prices`` version, or None when it cannot be imported."""
    try:
        from importlib.metadata import version

        return version("genai-prices")
    except Exception:
        return None


def preload() -> bool:
    """Import the database now (about a second, once) instead of at the first lookup.

    Call it at start-up when the first model call must not pay for the import.
    Returns whether the database is available.

    Example::

        >>> preload()
        True
    """
    return _snapshot() is not None


def lookup(model: str, provider: str = "") -> BundledPrice | None:
    """The database's price for ``model`` (lowercased) at ``provider``, or None.

    With a provider the database's entry for that provider is used; when that
    provider is unknown to the database or does not list the model, the model
    is looked up on its own (an OpenAI-compatible proxy serving a Claude model
    is still priced). Results, misses included, are kept per (provider, model).
    """
    key = (provider, model)
    try:
        return _cache[key]
    except KeyError:
        pass
    found = _resolve(model, provider)
    with _cache_lock:
        if len(_cache) < _CACHE_LIMIT:
            _cache[key] = found
    return found


def identify(model: str, provider: str = "") -> str | None:
    """The database's id of the model ``model`` (lowercased) names at ``provider``, or None.

    Two names with one id are the same model to the database (``gpt-4o-mini``
    and ``gpt-4o-mini-2024-07-18``; ``claude-3.5-sonnet`` and
    ``claude-3-5-sonnet-20241022``); the registry uses this to let a registered
    price follow the model. Cheaper than :func:`lookup`: no price is built.

    Example::

        >>> identify("claude-3-5-sonnet-20241022"), identify("no-such-model")
        ('claude-3-5-sonnet', None)
    """
    key = (provider, model)
    try:
        return _ids[key]
    except KeyError:
        pass
    found = _find(model, provider)
    model_id = None if found is None else str(found[1].id)
    with _cache_lock:
        if len(_ids) < _CACHE_LIMIT:
            _ids[key] = model_id
    return model_id


def _find(model: str, provider: str) -> tuple[Any, ModelInfo] | None:
    """The database's (provider, model info) for ``model``: at ``provider`` first, then anywhere."""
    if not model:
        return None
    snapshot = _snapshot()
    if snapshot is None:
        return None
    provider_id = PROVIDER_ALIASES.get(provider, provider) or None
    attempts = [provider_id, None] if provider_id else [None]
    for attempt in attempts:
        try:
            found: tuple[Any, ModelInfo] = snapshot.find_provider_model(model, None, attempt, None)
        except LookupError:
            continue
        return found
    return _owner_of(snapshot, model)


#: Providers whose own models these are, in the order a model listed by several of
#: them (itself and resellers: Azure, Bedrock, routers) is priced at.
_MAKERS = ("openai", "anthropic", "google", "mistral", "cohere", "deepseek", "x-ai")


def _owner_of(snapshot: Any, model: str) -> tuple[Any, ModelInfo] | None:
    """A model the database's provider rules do not place (``text-embedding-3-small``
    matches no provider's pattern): the provider that lists it by that exact id, its
    maker first, or the only one; None when several resellers list it and none made it."""
    listed = _by_id(snapshot).get(model.lower(), ())
    for maker in _MAKERS:
        for provider, info in listed:
            if provider.id == maker:
                return provider, info
    return listed[0] if len(listed) == 1 else None


#: (the snapshot it was built from, model id -> the providers that list it).
_IDS: list[tuple[Any, dict[str, tuple[tuple[Any, ModelInfo], ...]]]] = []


def _by_id(snapshot: Any) -> dict[str, tuple[tuple[Any, ModelInfo], ...]]:
    """Every listed model by its exact id, built once per snapshot (a name the rules do
    not place is looked up once, then cached with the rest; this keeps it one dict get)."""
    if _IDS and _IDS[0][0] is snapshot:
        return _IDS[0][1]
    index: dict[str, list[tuple[Any, ModelInfo]]] = {}
    for provider in snapshot.providers:
        for info in getattr(provider, "models", ()):
            ident = getattr(info, "id", None)
            if isinstance(ident, str):
                index.setdefault(ident.lower(), []).append((provider, info))
    built = {ident: tuple(found) for ident, found in index.items()}
    _IDS[:] = [(snapshot, built)]
    return built


def _snapshot() -> Any:
    global _load_failed
    if _load_failed:
        return None
    try:
        from genai_prices import data_snapshot
    except Exception as exc:  # a broken install must not break pricing by name
        _load_failed = True
        logger.warning("genai-prices could not be imported (%s); only registered prices", exc)
        return None
    return data_snapshot.get_snapshot()


def _resolve(model: str, provider: str) -> BundledPrice | None:
    found = _find(model, provider)
    if found is None:
        return None
    found_provider, info = found
    try:
        return _build(info, found_provider.id)
    except Exception as exc:  # an entry we cannot read is treated as unknown
        logger.debug("genai-prices entry %s unusable: %s", info.id, exc)
        return None


def _build(info: ModelInfo, provider_id: str) -> BundledPrice:
    from genai_prices.types import ModelPrice, StartDateConstraint

    if isinstance(info.prices, ModelPrice):
        entries: list[tuple[Any, ModelPrice]] = [(None, info.prices)]
    else:
        entries = [(c.constraint, c.prices) for c in info.prices]
    schedules = tuple(_schedule_of(price) for _, price in entries)
    constraints = [constraint for constraint, _ in entries]

    def choose(now: datetime) -> int:
        # The database's own rule: the last price whose constraint holds, else the first.
        for index in range(len(constraints) - 1, -1, -1):
            constraint = constraints[index]
            if constraint is None or constraint.active(now):
                return index
        return 0

    starts = sorted(c.start_date for c in constraints if isinstance(c, StartDateConstraint))
    clocked = any(c is not None and not isinstance(c, StartDateConstraint) for c in constraints)

    def changes(now: datetime) -> float:
        if clocked:  # an hour-of-day price: choose again on every call
            return 0.0
        today = now.date()
        later = [d for d in starts if d > today]
        return _midnight(later[0]) if later else _NEVER

    return BundledPrice(info.id, provider_id, schedules, choose, changes)


def _midnight(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def _schedule_of(price: ModelPrice) -> _Schedule:
    from genai_prices.types import TieredPrices

    thresholds = sorted(
        {
            tier.start
            for value in vars(price).values()
            if isinstance(value, TieredPrices)
            for tier in value.tiers
        }
    )
    lows = [-1, *thresholds]
    return _Schedule(tuple(thresholds), tuple(_probe(price, low + 1) for low in lows))


def _probe(price: ModelPrice, n: int) -> Band:
    """Rates of the band holding calls of ``n`` and ``n + 1`` total input tokens."""
    from genai_prices.types import Usage

    def total(inp: int, out: int = 0, write: int = 0, read: int = 0) -> Decimal:
        usage = Usage(
            input_tokens=inp, output_tokens=out, cache_write_tokens=write, cache_read_tokens=read
        )
        result: Decimal = price.calc_price(usage)["total_price"]
        return result

    base = total(n)
    bigger = total(n + 1)
    per_input = bigger - base
    fixed = base - per_input * n
    per_output = total(n, out=1) - base
    # One of the n + 1 input tokens is a cache write (read) instead of uncached input.
    per_write = total(n + 1, write=1) - bigger + per_input
    per_read = total(n + 1, read=1) - bigger + per_input
    rates = [per_input, per_output, per_write, per_read]
    if any(not r.is_finite() or r < 0 for r in [*rates, fixed]):
        raise ValueError(f"negative or non-finite rate in {price!r}")
    per_million = [float(r * _MILLION) for r in rates]
    return Band(per_million[0], per_million[1], per_million[2], per_million[3], float(fixed))
