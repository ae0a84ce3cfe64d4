"""Model prices: the registry you fill, the bundled database, and one call's cost.

A model call is priced by the first of these that knows the model (names are
lowercased):

1. a price registered under the exact name, by :func:`register_pricing` or
   :func:`load_pricing_from_file`;
2. a registered price for the same model under another spelling
   (:mod:`techrevati.runtime.pricing.names`): the name without its route
   prefix (``openai/gpt-4o-mini``, ``azure/...``, ``models/...``), without its
   version tag (``gpt-4o-mini-2024-07-18``, ``claude-3-5-sonnet-20241022``,
   ``-latest``, ``@20241022``), or a name the ``genai-prices`` database maps
   to the same model;
3. the ``genai-prices`` database (see :mod:`techrevati.runtime.pricing.database`),
   for the provider when it is known (a route prefix or a Bedrock id serves as
   the provider);
4. the longest registered name that is a prefix of the model (``"family"``
   prices ``"family-20260514"``), the 0.1.0 rule, after the database so that
   registering ``gpt`` does not reprice every OpenAI model;
5. nothing: the call costs $0, :func:`has_pricing` is False, and the first
   recorded turn logs one warning per model.

So registering ``gpt-4o-mini`` prices what the API answers with
(``gpt-4o-mini-2024-07-18``), while ``gpt-4o`` registered leaves
``gpt-4o-mini`` at the database's own price. The resolution is cached per
(provider, model) and the cache is dropped whenever :data:`PRICING_TABLE`
changes, so a call at a known model costs one dict lookup.

The package holds the registry and its resolution (here) and the reader of the
bundled database (:mod:`.database`). It sits among the plain-Python primitives:
it may import ``usage_tracking`` (for types) and nothing of OpenTelemetry.

Example::

    >>> from techrevati.runtime.pricing import ModelPricing, price_call, register_pricing
    >>> from techrevati.runtime.usage_tracking import UsageSnapshot
    >>> register_pricing("my-model", ModelPricing(input_per_million=3.0, output_per_million=15.0))
    >>> price_call("my-model", UsageSnapshot(1_000_000, 0)).cost
    3.0
    >>> price_call("gpt-4o-mini", UsageSnapshot(1_000_000, 0), provider="openai").source
    'bundled'
"""

from __future__ import annotations

import importlib.resources
import itertools
import json
import logging
import math
import os
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Self

from . import database as price_db
from .database import Band, BundledPrice
from .names import RegisteredNames, route_free, same_model, split_route

if TYPE_CHECKING:
    from ..usage_tracking import UsageSnapshot

__all__ = [
    "PRICING_TABLE",
    "CostSource",
    "ModelPricing",
    "PricedCall",
    "PricedTurn",
    "booked_name",
    "cost_of",
    "has_pricing",
    "load_pricing_from_file",
    "price_call",
    "price_source",
    "price_turn",
    "register_pricing",
]

# The warn-once line and the 0.1.0 contract both name this logger.
logger = logging.getLogger("techrevati.runtime.usage_tracking")
logger.addHandler(logging.NullHandler())

_PER_MILLION = 1_000_000
_REQUIRED_RATES = ("input_per_million", "output_per_million")
_OPTIONAL_RATES = ("cache_write_per_million", "cache_read_per_million")

#: Where a call's price came from; the values of ``semconv.COST_SOURCE_*``.
CostSource = Literal["registered", "bundled", "unpriced", "estimated", "no_usage", "clamped"]
REGISTERED: CostSource = "registered"
BUNDLED: CostSource = "bundled"
UNPRICED: CostSource = "unpriced"
#: A call whose usage never arrived, booked at an estimate (the limits' rule).
ESTIMATED: CostSource = "estimated"
#: A call whose usage prices above :data:`MAX_CALL_USD` (a hostile or broken usage
#: block): booked at that bound, the amount every limit and report then agrees on.
CLAMPED: CostSource = "clamped"
#: The largest cost one call may book or reserve (USD). Far below 2**53 nano-dollars,
#: so no counter of a limit wraps or loses a cent (``telemetry/limits/money.py``).
MAX_CALL_USD = 1e6


def _check_rate(owner: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{owner}.{name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{owner}.{name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class ModelPricing:
    """USD per million tokens for each token kind.

    NaN, infinite and negative rates raise ``ValueError`` naming the field (a
    NaN or negative price would silently switch an enforced budget off); a
    non-number raises ``TypeError``. Zero is a valid price.

    Example::

        >>> ModelPricing(3.0, 15.0).cache_read_per_million
        0.0
        >>> ModelPricing(3.0, float("nan"))
        Traceback (most recent call last):
        ...
        ValueError: ModelPricing.output_per_million must be a finite number >= 0, got nan
    """

    input_per_million: float
    output_per_million: float
    cache_write_per_million: float = 0.0
    cache_read_per_million: float = 0.0

    def __post_init__(self) -> None:
        for spec in fields(self):
            _check_rate("ModelPricing", spec.name, getattr(self, spec.name))


_ZERO = Band(0.0, 0.0, 0.0, 0.0, 0.0)
_ZERO_PRICING = ModelPricing(0.0, 0.0)

# Every mutation of the pricing table takes a fresh number from here, so a price
# cache can tell in O(1) whether the table changed since it was filled.
_table_versions = itertools.count(1)


class _PricingTable(dict[str, ModelPricing]):
    """A plain dict that stamps a new version on every mutation.

    Tests and users mutate ``PRICING_TABLE`` in place (``clear()``, ``update()``,
    item assignment), so the resolution cache cannot rely on our own writers
    alone. The version is read before resolving, which makes a racing writer
    invalidate rather than poison the cache.
    """

    __slots__ = ("version",)

    def __init__(self) -> None:
        super().__init__()
        self.version = next(_table_versions)

    def _touch(self) -> None:
        global _cache
        self.version = next(_table_versions)
        _cache = _NO_CACHE  # the resolution cache describes an older table now

    def __setitem__(self, key: str, value: ModelPricing) -> None:
        super().__setitem__(key, value)
        self._touch()

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._touch()

    # typeshed types dict.__ior__ as overloads whose pairing with __or__ mypy cannot
    # match for any override; runtime behaviour is exactly dict's.
    def __ior__(  # type: ignore[override, misc]
        self, other: Mapping[str, ModelPricing] | Iterable[tuple[str, ModelPricing]]
    ) -> Self:
        self.update(other)
        return self

    def clear(self) -> None:
        super().clear()
        self._touch()

    def update(self, *args: Any, **kwargs: ModelPricing) -> None:
        super().update(*args, **kwargs)
        self._touch()

    def pop(self, key: str, *default: Any) -> Any:
        try:
            return super().pop(key, *default)
        finally:
            self._touch()

    def popitem(self) -> tuple[str, ModelPricing]:
        try:
            return super().popitem()
        finally:
            self._touch()

    def setdefault(self, key: str, default: ModelPricing = _ZERO_PRICING) -> ModelPricing:
        try:
            return super().setdefault(key, default)
        finally:
            self._touch()

    def __reduce__(self) -> tuple[type[dict[str, ModelPricing]], tuple[dict[str, ModelPricing]]]:
        # Copies and pickles are ordinary dicts; only the live table needs versions.
        return (dict, (dict(self),))


PRICING_TABLE: dict[str, ModelPricing] = _PricingTable()
"""Live model → price registry, keyed by lowercased name. Mutate in place; never rebind."""

_pricing_lock = threading.Lock()

_warned_unpriced_models: set[str] = set()
#: How many unpriced model names are remembered (each is warned about once).
_WARNED_LIMIT = 4096
"""Lowercased names that already produced the missing-pricing warning (once per process)."""

_warn_lock = threading.Lock()


class _Resolved(NamedTuple):
    """How one (provider, model) is priced right now.

    Every price is one band up to ``limit`` total input tokens and, for a
    price with one tier, ``high`` above it; both are charged inline. Anything
    else (several tiers, a price that changes with the clock) has ``high``
    None and a ``limit`` of -1, and is charged by ``tiered``.
    """

    source: CostSource
    known: bool
    low: Band
    limit: int
    high: Band | None
    low_key: tuple[int, int] | None
    high_key: tuple[int, int] | None
    tiered: BundledPrice | None
    # The rates every call is charged at when the price has no tiers (registered,
    # flat database prices, unpriced = zeros); None otherwise.
    flat: Band | None
    #: The table version read before resolving (None: a rebound plain dict, uncached).
    version: int | None = None


_NO_LIMIT = sys.maxsize  # no call has more input tokens than this


def _flat(source: CostSource, band: Band) -> _Resolved:
    return _Resolved(source, source != UNPRICED, band, _NO_LIMIT, None, None, None, None, band)


_UNPRICED = _flat(UNPRICED, _ZERO)

# Resolution cache: (table, (provider, model) → resolution), valid while its table
# is the live one. Every change of the table replaces it with an empty pair for no
# table (``_PricingTable._touch``), so the next miss installs a new pair: a reader
# still holding the old one can only write into a dict nobody consults any more
# (one pair, replaced whole: a dict made before a change is never valid after it).
# A hit is one identity test and one dict lookup, no version compared per call.
_CACHE_LIMIT = 4096
# Keys are (provider, model) as the caller spelled them, so the hot path skips
# lowercasing; two spellings of one name simply hold two equal entries.
_NO_CACHE: tuple[object, dict[tuple[str, str], _Resolved]] = (None, {})
_cache = _NO_CACHE


def _band_of(price: ModelPricing) -> Band:
    return Band(
        price.input_per_million,
        price.output_per_million,
        price.cache_write_per_million,
        price.cache_read_per_million,
        0.0,
    )


def _from_bundled(found: BundledPrice) -> _Resolved:
    if found.flat is not None:
        return _flat(BUNDLED, found.flat)
    static = found.static
    if static is not None and len(static[0]) == 1:
        (limit,), (low, high), (low_key, high_key) = static
        return _Resolved(BUNDLED, True, low, limit, high, low_key, high_key, found, None)
    return _Resolved(BUNDLED, True, _ZERO, -1, None, None, None, found, None)


# The registered names indexed for the spelling rules: (table, version, index),
# rebuilt when the table changes (only on a resolution miss, never per call).
_names_cache: tuple[object, int, RegisteredNames | None] = (None, 0, None)


def _registered_names(table: Mapping[str, ModelPricing]) -> RegisteredNames:
    global _names_cache
    version = getattr(table, "version", None)
    cached = _names_cache
    if type(version) is int and cached[0] is table and cached[1] == version:
        index = cached[2]
        if index is not None:
            return index
    # tuple() snapshots the keys so a concurrent writer cannot break the scan.
    index = RegisteredNames(tuple(table), price_db.identify)
    if type(version) is int:
        _names_cache = (table, version, index)
    return index


def _resolve_uncached(table: Mapping[str, ModelPricing], model: str, provider: str) -> _Resolved:
    exact = table.get(model)
    if exact is not None:
        return _flat(REGISTERED, _band_of(exact))
    if table:
        same = _registered_names(table).match(model, provider)
        price = None if same is None else table.get(same)
        if price is not None:
            return _flat(REGISTERED, _band_of(price))
    route, bare = split_route(model)
    found = price_db.lookup(model, provider)
    if found is None and route and not provider:
        found = price_db.lookup(model, route)  # a Bedrock id: the database needs "aws"
    if found is None and bare != model:
        found = price_db.lookup(bare, provider or route)
    if found is None and "@" in bare:
        # Vertex AI's spelling of a dated snapshot (claude-opus-4@20250514) is the
        # provider's (claude-opus-4-20250514), which the database lists.
        found = price_db.lookup(bare.replace("@", "-", 1), provider or route)
    if found is not None:
        return _from_bundled(found)
    best: str | None = None
    for candidate in tuple(table):
        if (model.startswith(candidate) or bare.startswith(candidate)) and (
            best is None or len(candidate) > len(best)
        ):
            best = candidate
    price = None if best is None else table.get(best)
    return _UNPRICED if price is None else _flat(REGISTERED, _band_of(price))


def _check_names(model: object, provider: object) -> None:
    """A model or provider that is not a name, refused with the argument it came in as."""
    for name, value in (("model", model), ("provider", provider)):
        if not isinstance(value, str):
            raise TypeError(
                f"{name} must be a str (a {name} name), got {type(value).__name__}: {value!r}"
            )


def _resolve(model: str, provider: str = "") -> _Resolved:
    """How ``model`` at ``provider`` is priced now (cached until the table changes)."""
    global _cache
    table = PRICING_TABLE
    if type(getattr(table, "version", None)) is not int:
        # Someone rebound PRICING_TABLE to a plain dict: correct but uncached.
        _check_names(model, provider)
        return _resolve_uncached(table, model.lower(), provider.lower())
    cache = _cache
    if cache[0] is not table:
        cache = _cache = (table, {})
    entries = cache[1]
    key = (provider, model)
    try:
        resolved = entries.get(key)
    except TypeError:  # (an unhashable name: said with the argument it came in as)
        _check_names(model, provider)
        raise
    if resolved is None:
        # Checked on a miss only: the cache holds names that passed, so a hit needs none.
        _check_names(model, provider)
        # The version read after the pair was taken, before resolving (see _cache).
        version: int = table.version  # type: ignore[attr-defined]
        resolved = _resolve_uncached(table, model.lower(), provider.lower())._replace(
            version=version
        )
        if len(entries) < _CACHE_LIMIT:
            entries[key] = resolved
    return resolved


def _table_version() -> int | None:
    """Version stamp of the live table, or None when it is a plain (rebound) dict."""
    version = getattr(PRICING_TABLE, "version", None)
    return version if isinstance(version, int) else None


def _charge(band: Band, inp: int, out: int, write: int, read: int, calls: int = 1) -> float:
    # Same term order as 0.1.0 so registered prices give bit-identical costs;
    # adding a zero per-call fee leaves the sum unchanged.
    return (
        inp * band.input_per_million / _PER_MILLION
        + out * band.output_per_million / _PER_MILLION
        + write * band.cache_write_per_million / _PER_MILLION
        + read * band.cache_read_per_million / _PER_MILLION
        + band.per_call * calls
    )


def _cost(price: ModelPricing, inp: int, out: int, write: int, read: int) -> float:
    """Cost of token counts at a registered price (kept for callers of 0.1.0's helper)."""
    return _charge(_band_of(price), inp, out, write, read, 0)


def register_pricing(model: str, pricing: ModelPricing) -> None:
    """Register (or replace) the price of ``model``; the name is lowercased.

    Bad prices raise before anything is stored: NaN, infinite or negative
    rates ``ValueError`` naming the field; a non-string name or a
    non-``ModelPricing`` price ``TypeError``.

    Example::

        >>> register_pricing("Doc-Model-B", ModelPricing(1.0, 2.0))
        >>> has_pricing("doc-model-b")
        True
    """
    if not isinstance(model, str):
        raise TypeError(f"register_pricing: model must be a str, got {type(model).__name__}")
    if not model.strip():
        # An empty name is a prefix of every name: it would price every unknown model.
        raise ValueError(f"register_pricing: model must be a model name, got {model!r}")
    if not isinstance(pricing, ModelPricing):
        raise TypeError(
            f"register_pricing: pricing must be a ModelPricing, got {type(pricing).__name__}"
        )
    pricing.__post_init__()  # again: object.__setattr__ can bypass the frozen check
    with _pricing_lock:
        PRICING_TABLE[model.lower()] = pricing


def has_pricing(model: str, provider: str = "") -> bool:
    """Whether ``model`` has a price: registered, in the bundled database, or by prefix.

    Example::

        >>> register_pricing("doc-family", ModelPricing(1.0, 2.0))
        >>> has_pricing("Doc-Family-20260514"), has_pricing("unknown-model")
        (True, False)
        >>> has_pricing("claude-haiku-4-5")  # from the bundled database
        True
    """
    # Asked at every admission under a budget: _resolve's cache hit inline, as in
    # price_call; anything else (a miss, a new table) goes through it.
    cache = _cache
    resolved = cache[1].get((provider, model)) if cache[0] is PRICING_TABLE else None
    return (resolved or _resolve(model, provider)).known


def price_source(model: str, provider: str = "") -> CostSource:
    """Where ``model``'s price comes from: ``"registered"``, ``"bundled"`` or ``"unpriced"``.

    Example::

        >>> register_pricing("gpt-4o", ModelPricing(1.0, 1.0))
        >>> price_source("gpt-4o"), price_source("gpt-4o-mini"), price_source("nope")
        ('registered', 'bundled', 'unpriced')
    """
    return _resolve(model, provider).source


# booked_name's answers for one table version: (version, (requested, responded,
# provider) -> name). Replaced whole when the table changes, so a stale answer is
# never read; an answer depends on nothing else (a dated database price is
# compared by its model, not by today's rates).
_booked: tuple[int | None, dict[tuple[str, str, str], str]] = (None, {})


def booked_name(requested: str, responded: str, provider: str = "") -> str:
    """The name a call is priced under when its response names another model.

    The response's model, since the provider says what answered (the model
    behind an Azure deployment name, a router's choice, a snapshot with a price
    of its own), except that the name asked for stays when:

    * the response's model has no price (a provider's label never makes a
      priced call free);
    * you registered a price for the name asked for and the response's model
      has only the database's (rule 1: your deployment's or negotiated rate is
      not replaced by a list price, and the call is booked at what reserved it);
    * it is the answered model asked for through a platform or a route
      (``global.anthropic.claude-haiku-4-5-20251001-v1:0`` answered as
      ``claude-haiku-4-5-20251001``): that route has a price of its own;
    * it is the same model at the same price (``gpt-4o-mini-2024-07-18`` for
      ``gpt-4o-mini``): booked under the name that was reserved.

    Cached per name pair until the price table changes.

    Example::

        >>> booked_name("gpt-4o", "gpt-4o-mini-2024-07-18")  # another model
        'gpt-4o-mini-2024-07-18'
        >>> booked_name("gpt-4o", "gpt-4o-2024-08-06")  # a snapshot at gpt-4o's price
        'gpt-4o'
        >>> booked_name("gpt-4o", "gpt-4o-2024-05-13")  # a snapshot with a dearer price
        'gpt-4o-2024-05-13'
    """
    global _booked
    version = _table_version()
    cache = _booked
    if cache[0] != version or version is None:
        cache = _booked = (version, {})
    key = (requested, responded, provider)
    name = cache[1].get(key)
    if name is None:
        name = _booked_uncached(requested, responded, provider)
        if len(cache[1]) < _CACHE_LIMIT:
            cache[1][key] = name
    return name


def _booked_uncached(requested: str, responded: str, provider: str) -> str:
    asked, answered = _resolve(requested, provider), _resolve(responded, provider)
    if not answered.known:
        return requested
    if asked.source == REGISTERED and answered.source != REGISTERED:
        return requested
    if asked.known and route_free(requested).lower() == responded.lower() != requested.lower():
        # The answered model asked for through a platform or route (a Bedrock profile, whose
        # response names the maker's id): the name asked for says that route's price.
        return requested
    if asked.known and same_model(requested, responded) and _alike(asked, answered):
        return requested
    return responded


def _alike(a: _Resolved, b: _Resolved) -> bool:
    """Whether two resolved prices charge every call the same."""
    if a.flat is not None or b.flat is not None:
        return a.flat == b.flat
    # Tiered or dated database prices: alike when they are one database entry.
    return (
        a.tiered is not None
        and b.tiered is not None
        and (a.tiered.provider_id, a.tiered.model_id) == (b.tiered.provider_id, b.tiered.model_id)
    )


class PricedCall(NamedTuple):
    """One call's price, as :func:`price_call` returns it.

    The first three fields are 0.1.0's ``PricedTurn`` (indexable as before):
    the cost in USD, the pricing-table version read before pricing, and
    whether the model has a price. ``band`` tells the usage tracker which
    price band of a tiered database price the call fell in (None otherwise).

    Example::

        >>> call = PricedCall(0.5, 3, True, "registered")
        >>> call.cost, call[0], call.source
        (0.5, 0.5, 'registered')
    """

    cost: float
    version: int | None
    known: bool
    source: CostSource = REGISTERED
    band: tuple[int, int] | None = None
    provider: str = ""


#: What the core hands from pricing to ``UsageTracker.record_priced``: a
#: :class:`PricedCall`, or 0.1.0's plain ``(cost, version, known)`` triple.
PricedTurn = PricedCall | tuple[float, int | None, bool]


def price_call(model: str, usage: UsageSnapshot, provider: str = "") -> PricedCall:
    """Price one call at the current prices; see the module doc for the order.

    ``usage`` counts are disjoint (``input_tokens`` excludes cached tokens);
    reasoning tokens are part of ``output_tokens`` and priced once, as output.
    A tiered price (rates that change above N input tokens) is chosen by this
    call's whole input: uncached + cache writes + cache reads.

    Example::

        >>> from techrevati.runtime.usage_tracking import UsageSnapshot
        >>> register_pricing("doc-model-g", ModelPricing(2.0, 8.0))
        >>> price_call("doc-model-g", UsageSnapshot(500_000, 0))
        PricedCall(cost=1.0, version=..., known=True, source='registered', band=None, provider='')
    """
    # This is the per-call hot path of every model call: one cache lookup and
    # the arithmetic inline (a function call here is a measurable share).
    # _resolve's cache hit, inline; anything else (a miss, a new table) goes through it.
    cache = _cache
    resolved = cache[1].get((provider, model)) if cache[0] is PRICING_TABLE else None
    if resolved is None:
        resolved = _resolve(model, provider)
    # Unpacked in one step: each named field read is a descriptor call of its own.
    source, known, low, limit, high, low_key, high_key, tiered, _, version = resolved
    inp = usage.input_tokens
    out = usage.output_tokens
    write = usage.cache_write_tokens
    read = usage.cache_read_tokens
    key: tuple[int, int] | None
    if inp + write + read <= limit:
        band = low
        key = low_key
    elif high is not None:
        band = high
        key = high_key
    elif tiered is not None:
        band, key = tiered.charge(inp, out, write, read)
    else:
        # More input than _NO_LIMIT (an absurd usage block): the one band still
        # prices it, so the call is booked (clamped by the ledger), never unbooked.
        band = low
        key = low_key
    input_rate, output_rate, write_rate, read_rate, per_call = band
    cost = (
        inp * input_rate / _PER_MILLION
        + out * output_rate / _PER_MILLION
        + write * write_rate / _PER_MILLION
        + read * read_rate / _PER_MILLION
        + per_call
    )
    if not cost <= MAX_CALL_USD:  # also NaN: the one comparison the hot path pays
        return _clamped(model, cost, version, known, key, provider)
    return tuple.__new__(PricedCall, (cost, version, known, source, key, provider))


def price_turn(model: str, usage: UsageSnapshot, provider: str = "") -> PricedCall:
    """Price one turn for ``UsageTracker.record_priced`` (same as :func:`price_call`).

    Example::

        >>> from techrevati.runtime.usage_tracking import UsageSnapshot
        >>> register_pricing("doc-model-f", ModelPricing(2.0, 8.0))
        >>> priced = price_turn("doc-model-f", UsageSnapshot(500_000, 0))
        >>> priced[0], priced[2]
        (1.0, True)
    """
    return price_call(model, usage, provider)


_clamped_models: set[str] = set()


def _clamped(
    model: str,
    cost: float,
    version: object,
    known: bool,
    band: tuple[int, int] | None,
    provider: str,
) -> PricedCall:
    """A call priced above ``MAX_CALL_USD``: booked at the bound, logged once per model.

    Every place that reports the call (its span, the session's tracker and
    summary, the ledger, the fleet) then shows the same amount.
    """
    log = logger.debug if model in _clamped_models else logger.warning
    if len(_clamped_models) < 1024:  # bounded: model names come from responses
        _clamped_models.add(model)
    log(
        "cost of a %r call is out of range (%r USD): its usage is not believable; "
        "booked as %s USD so every limit still counts it",
        model,
        cost,
        MAX_CALL_USD,
    )
    return PricedCall(
        MAX_CALL_USD, version if type(version) is int else None, known, CLAMPED, band, provider
    )


def cost_of(model: str, usage: UsageSnapshot, provider: str = "") -> float:
    """USD cost of ``usage`` on ``model`` at the current prices.

    Example::

        >>> from techrevati.runtime.usage_tracking import UsageSnapshot
        >>> register_pricing("doc-model-e", ModelPricing(2.0, 8.0))
        >>> cost_of("doc-model-e", UsageSnapshot(500_000, 0))
        1.0
    """
    return price_call(model, usage, provider).cost


def _sums_cost(
    model: str,
    provider: str,
    sums: tuple[int, int, int, int, int],
    bands: Mapping[tuple[int, int], list[int]] | None,
) -> float:
    """Cost of a model's summed usage ``(input, output, write, read, calls)`` at current prices.

    Registered and flat prices are linear, so the sums are enough. A tiered
    database price charges each call by its band, so the tracker also keeps
    the sums per band (``bands``); usage recorded while the model had another
    kind of price is charged at the lowest band now in force.
    """
    resolved = _resolve(model, provider)
    if resolved.flat is not None:
        return _charge(resolved.flat, *sums)
    tiered = resolved.tiered
    assert tiered is not None
    total = 0.0
    rest = list(sums)
    for key, part in (bands or {}).items():
        total += _charge(tiered.band(key), *part)
        for i, value in enumerate(part):
            rest[i] -= value
    if any(rest):
        total += _charge(tiered.band(None), *rest)
    return total


def _parse_rate(source: str, name: str, entry: Mapping[str, Any], rate: str) -> float:
    value = entry[rate]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(
            f"{source}: models[{name!r}].{rate} must be a number, got {type(value).__name__} "
            f"{value!r}"
        )
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(
            f"{source}: models[{name!r}].{rate} must be a finite number >= 0, got {value!r}"
        )
    return number


class _MissingPricingKey(KeyError, ValueError):
    """A pricing file without ``"models"`` or an entry without a required rate.

    A ``KeyError``, as 0.1.0 raised (and the contract keeps), and a
    ``ValueError``, as every other format error of the file is: one
    ``except ValueError`` catches any bad file.
    """

    # KeyError's str() is the repr of its key ("'prices.json: ...'"): show the
    # message as the ValueErrors beside it do.
    __str__ = BaseException.__str__


def _parse_pricing_document(text: str, source: str) -> dict[str, ModelPricing]:
    """Validate a pricing document completely and return lowercased name → price."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}: invalid JSON: {exc}") from exc
    except RecursionError:
        # json's decoder recurses once per nesting level; a hostile file must
        # give the documented error, not a RecursionError from deep inside json.
        raise ValueError(f"{source}: invalid JSON: nested too deeply") from None
    if not isinstance(document, dict):
        raise ValueError(
            f"{source}: top level must be a JSON object, got {type(document).__name__}"
        )
    if "models" not in document:
        raise _MissingPricingKey(f"{source}: missing 'models' key")
    models = document["models"]
    if not isinstance(models, dict):
        raise ValueError(f"{source}: 'models' must be an object, got {type(models).__name__}")

    parsed: dict[str, ModelPricing] = {}
    for name, entry in models.items():
        if not isinstance(entry, dict):
            raise ValueError(
                f"{source}: models[{name!r}] must be an object, got {type(entry).__name__} "
                f"{_short(entry)}"
            )
        for rate in _REQUIRED_RATES:
            if rate not in entry:
                raise _MissingPricingKey(
                    f"{source}: models[{name!r}] is missing required rate {rate!r}"
                )
        rates = {rate: _parse_rate(source, name, entry, rate) for rate in _REQUIRED_RATES}
        for rate in _OPTIONAL_RATES:
            rates[rate] = _parse_rate(source, name, entry, rate) if rate in entry else 0.0
        parsed[name.lower()] = ModelPricing(**rates)
    return parsed


def _short(value: object) -> str:
    # repr() of a deeply nested value recurses too; keep messages small and safe.
    try:
        text = repr(value)
    except RecursionError:
        return "<nested too deeply>"
    return text if len(text) <= 80 else text[:77] + "..."


def load_pricing_from_file(path: str | os.PathLike[str]) -> None:
    """Merge prices from a JSON file (same schema as the bundled ``pricing.json``).

    The whole file is validated before anything is merged, so a bad file leaves
    :data:`PRICING_TABLE` untouched. Malformed content (including JSON nested
    too deeply to parse) raises ``ValueError`` naming the file and entry; so
    does a missing ``"models"`` key or required rate, whose error is also a
    ``KeyError`` (0.1.0 raised a ``KeyError``).

    Example (file contents)::

        {"models": {"my-model": {"input_per_million": 3.0, "output_per_million": 15.0,
                                 "cache_read_per_million": 0.3}}}
    """
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{source}: not valid UTF-8: {exc}") from exc
    parsed = _parse_pricing_document(text, source)
    with _pricing_lock:
        PRICING_TABLE.update(parsed)


def _load_bundled_pricing() -> None:
    resource = importlib.resources.files("techrevati.runtime").joinpath("data/pricing.json")
    parsed = _parse_pricing_document(
        resource.read_text(encoding="utf-8"), "techrevati/runtime/data/pricing.json"
    )
    with _pricing_lock:
        PRICING_TABLE.update(parsed)


_load_bundled_pricing()


def _warn_unpriced_once(model: str) -> None:
    key = model.lower()
    if key in _warned_unpriced_models:
        return
    with _warn_lock:
        # Re-check under the lock so concurrent first turns log exactly once.
        if key in _warned_unpriced_models:
            return
        if len(_warned_unpriced_models) >= _WARNED_LIMIT:
            # Bounded: model names come from responses. Past the bound, new names
            # are logged at DEBUG instead of remembered.
            logger.debug("no pricing registered for model=%s; cost will be $0", model)
            return
        _warned_unpriced_models.add(key)
    logger.warning(
        "no pricing registered for model=%s; cost will be $0. "
        "Call register_pricing() or load_pricing_from_file().",
        model,
    )
