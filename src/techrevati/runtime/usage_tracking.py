"""Token usage, USD pricing and budgets.

Prices live in the process-wide :data:`PRICING_TABLE` (per million tokens, keyed
by lowercased model name). A model is priced by exact name, else by the longest
registered prefix (``"family"`` prices ``"family-20260514"``), else at $0 with a
one-time warning. Costs are computed lazily from the *current* table, so
re-registering a price re-prices history.

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

import importlib.resources
import itertools
import json
import logging
import math
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

__all__ = [
    "PRICING_TABLE",
    "BudgetExceededError",
    "ModelPricing",
    "UsageSnapshot",
    "UsageTracker",
    "has_pricing",
    "load_pricing_from_file",
    "register_pricing",
]

logger = logging.getLogger("techrevati.runtime.usage_tracking")
logger.addHandler(logging.NullHandler())

_PER_MILLION = 1_000_000
_TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens")
_REQUIRED_RATES = ("input_per_million", "output_per_million")
_OPTIONAL_RATES = ("cache_write_per_million", "cache_read_per_million")


class BudgetExceededError(Exception):
    """The session's cost went over its USD budget.

    Example::

        >>> err = BudgetExceededError(10.0, 12.5)
        >>> str(err)
        'budget exceeded: $12.5000 > $10.0000'
        >>> err.current_cost_usd
        12.5
    """

    def __init__(
        self, budget_usd: float, current_cost_usd: float, *, scope: str | None = None
    ) -> None:
        self.budget_usd = budget_usd
        self.current_cost_usd = current_cost_usd
        #: The fleet scope that refused (``FleetLimits.scope``); None for a session's own budget.
        self.scope = scope
        where = f" in fleet scope {scope!r}" if scope is not None else ""
        super().__init__(f"budget exceeded{where}: ${current_cost_usd:.4f} > ${budget_usd:.4f}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception pickling replays self.args (the message) into __init__, which
        # expects the two numbers; without this the error cannot cross processes.
        return (
            _rebuild_budget_error,
            (type(self), self.budget_usd, self.current_cost_usd, self.scope),
        )


def _rebuild_budget_error(
    cls: type[BudgetExceededError], budget: float, current: float, scope: str | None
) -> BudgetExceededError:
    error = cls.__new__(cls)
    BudgetExceededError.__init__(error, budget, current, scope=scope)
    return error


@dataclass(frozen=True)
class ModelPricing:
    """USD per million tokens for each token kind. Not validated (compatibility).

    Example::

        >>> ModelPricing(3.0, 15.0).cache_read_per_million
        0.0
    """

    input_per_million: float
    output_per_million: float
    cache_write_per_million: float = 0.0
    cache_read_per_million: float = 0.0


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
        self.version = next(_table_versions)

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
"""Lowercased names that already produced the missing-pricing warning (once per process)."""

_warn_lock = threading.Lock()

# Resolution cache: (table object, table version, lowercased name → price or None).
# Replaced wholesale on invalidation so a reader still holding the old dict can
# only write into a dict nobody consults any more.
_CACHE_LIMIT = 4096
_resolution_cache: tuple[object, int, dict[str, ModelPricing | None]] = (None, 0, {})


def _resolve_uncached(table: Mapping[str, ModelPricing], key: str) -> ModelPricing | None:
    exact = table.get(key)
    if exact is not None:
        return exact
    best: str | None = None
    # tuple() snapshots the keys so a concurrent writer cannot break the scan.
    for candidate in tuple(table):
        if key.startswith(candidate) and (best is None or len(candidate) > len(best)):
            best = candidate
    return None if best is None else table.get(best)


def _resolve(model: str) -> ModelPricing | None:
    """Return the price for ``model`` (exact, else longest prefix), or None if unpriced."""
    global _resolution_cache
    table = PRICING_TABLE
    key = model.lower()
    version = getattr(table, "version", None)
    if not isinstance(version, int):
        # Someone rebound PRICING_TABLE to a plain dict: correct but uncached.
        return _resolve_uncached(table, key)
    cache = _resolution_cache
    if cache[0] is not table or cache[1] != version:
        cache = (table, version, {})
        _resolution_cache = cache
    entries = cache[2]
    try:
        return entries[key]
    except KeyError:
        pass
    price = _resolve_uncached(table, key)
    if len(entries) < _CACHE_LIMIT:
        entries[key] = price
    return price


def _table_version() -> int | None:
    """Version stamp of the live table, or None when it is a plain (rebound) dict."""
    version = getattr(PRICING_TABLE, "version", None)
    return version if isinstance(version, int) else None


def _price_for(model: str) -> ModelPricing:
    price = _resolve(model)
    return _ZERO_PRICING if price is None else price


def register_pricing(model: str, pricing: ModelPricing) -> None:
    """Register (or replace) the price of ``model``; the name is lowercased.

    Example::

        >>> register_pricing("Doc-Model-B", ModelPricing(1.0, 2.0))
        >>> has_pricing("doc-model-b")
        True
    """
    with _pricing_lock:
        PRICING_TABLE[model.lower()] = pricing


def has_pricing(model: str) -> bool:
    """Return whether ``model`` is priced by exact name or by a registered prefix.

    Example::

        >>> register_pricing("doc-family", ModelPricing(1.0, 2.0))
        >>> has_pricing("Doc-Family-20260514"), has_pricing("unknown-model")
        (True, False)
    """
    return _resolve(model) is not None


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


def _parse_pricing_document(text: str, source: str) -> dict[str, ModelPricing]:
    """Validate a pricing document completely and return lowercased name → price."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}: invalid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError(
            f"{source}: top level must be a JSON object, got {type(document).__name__}"
        )
    if "models" not in document:
        raise KeyError(f"{source}: missing 'models' key")
    models = document["models"]
    if not isinstance(models, dict):
        raise ValueError(f"{source}: 'models' must be an object, got {type(models).__name__}")

    parsed: dict[str, ModelPricing] = {}
    for name, entry in models.items():
        if not isinstance(entry, dict):
            raise ValueError(
                f"{source}: models[{name!r}] must be an object, got {type(entry).__name__} "
                f"{entry!r}"
            )
        for rate in _REQUIRED_RATES:
            if rate not in entry:
                raise KeyError(f"{source}: models[{name!r}] is missing required rate {rate!r}")
        rates = {rate: _parse_rate(source, name, entry, rate) for rate in _REQUIRED_RATES}
        for rate in _OPTIONAL_RATES:
            rates[rate] = _parse_rate(source, name, entry, rate) if rate in entry else 0.0
        parsed[name.lower()] = ModelPricing(**rates)
    return parsed


def load_pricing_from_file(path: str | os.PathLike[str]) -> None:
    """Merge prices from a JSON file (same schema as the bundled ``pricing.json``).

    The whole file is validated before anything is merged, so a bad file leaves
    :data:`PRICING_TABLE` untouched. Malformed content raises ``ValueError``
    naming the file and entry; a missing ``"models"`` key or required rate
    raises ``KeyError``.

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
        _warned_unpriced_models.add(key)
    logger.warning(
        "no pricing registered for model=%s; cost will be $0. "
        "Call register_pricing() or load_pricing_from_file().",
        model,
    )


def _cost(price: ModelPricing, inp: int, out: int, write: int, read: int) -> float:
    return (
        inp * price.input_per_million / _PER_MILLION
        + out * price.output_per_million / _PER_MILLION
        + write * price.cache_write_per_million / _PER_MILLION
        + read * price.cache_read_per_million / _PER_MILLION
    )


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


def cost_of(model: str, usage: UsageSnapshot) -> float:
    """USD cost of ``usage`` on ``model`` at the currently registered prices.

    Example::

        >>> from techrevati.runtime.usage_tracking import register_pricing, ModelPricing
        >>> register_pricing("doc-model-e", ModelPricing(2.0, 8.0))
        >>> cost_of("doc-model-e", UsageSnapshot(500_000, 0))
        1.0
    """
    return _cost(
        _price_for(model),
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_write_tokens,
        usage.cache_read_tokens,
    )


#: (cost in USD, pricing-table version read before pricing, whether the model has a price).
PricedTurn = tuple[float, int | None, bool]


def price_turn(model: str, usage: UsageSnapshot) -> PricedTurn:
    """Price one turn at the current table, for ``UsageTracker.record_priced``.

    Example::

        >>> from techrevati.runtime.usage_tracking import register_pricing, ModelPricing
        >>> register_pricing("doc-model-f", ModelPricing(2.0, 8.0))
        >>> price_turn("doc-model-f", UsageSnapshot(500_000, 0))[::2]
        (1.0, True)
    """
    version = _table_version()
    price = _resolve(model)
    known = price is not None
    if price is None:
        price = _ZERO_PRICING
    cost = _cost(
        price,
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_write_tokens,
        usage.cache_read_tokens,
    )
    return cost, version, known


class _ModelTotals:
    """Running token sums for one recorded model string."""

    __slots__ = ("cache_read", "cache_write", "input", "output", "turns")

    def __init__(self) -> None:
        self.input = 0
        self.output = 0
        self.cache_write = 0
        self.cache_read = 0
        self.turns = 0

    def add(self, usage: UsageSnapshot) -> None:
        self.input += usage.input_tokens
        self.output += usage.output_tokens
        self.cache_write += usage.cache_write_tokens
        self.cache_read += usage.cache_read_tokens
        self.turns += 1


# (model, input, output, cache_write, cache_read) copied out under the lock.
_TotalsRow = tuple[str, int, int, int, int]


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
    _models: dict[str, _ModelTotals] = field(
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

    def record_and_price(self, model: str, usage: UsageSnapshot) -> float:
        """Record one turn and return that turn's cost, with a single lock acquisition.

        This is the hot path the telemetry core calls on every model call.
        """
        return self.record_priced(model, usage, price_turn(model, usage))

    def record_priced(self, model: str, usage: UsageSnapshot, priced: PricedTurn) -> float:
        """Record one turn that ``price_turn`` already priced; returns its cost.

        The telemetry core prices a turn once, for its span, and hands the
        result here, so a turn is never priced twice. The table version inside
        ``priced`` was read before pricing: a price change in between makes the
        running total stale (recomputed later) instead of silently wrong.
        """
        cost, version, known = priced
        if not known and model:
            _warn_unpriced_once(model)
        with self._lock:
            turns = self.turns
            if turns is not self._synced_list or len(turns) != self._synced_len:
                self._resync_locked()
                turns = self.turns
            turns.append((model, usage))
            totals = self._models.get(model)
            if totals is None:
                totals = self._models[model] = _ModelTotals()
            totals.add(usage)
            self._turn_count += 1
            self._trim_locked()
            if version is not None and version == self._cost_version:
                self._cost_total += cost
            else:
                self._cost_version = None
        return cost

    # -- internal bookkeeping ------------------------------------------------

    def _rebuild_locked(self, source: Iterable[tuple[str, UsageSnapshot]]) -> None:
        models: dict[str, _ModelTotals] = {}
        count = 0
        for model, usage in source:
            totals = models.get(model)
            if totals is None:
                totals = models[model] = _ModelTotals()
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
        """Consistent copy of (turn count, per-model sums) in first-seen order."""
        with self._lock:
            if self.turns is not self._synced_list or len(self.turns) != self._synced_len:
                self._resync_locked()
            rows = [
                (model, t.input, t.output, t.cache_write, t.cache_read)
                for model, t in self._models.items()
            ]
            return self._turn_count, rows

    # -- totals --------------------------------------------------------------

    @property
    def turn_count(self) -> int:
        """Number of turns ever recorded (not capped by ``retain_turns``)."""
        return self._aggregates()[0]

    @property
    def total_input_tokens(self) -> int:
        """Sum of ``input_tokens`` over all recorded turns."""
        return sum(row[1] for row in self._aggregates()[1])

    @property
    def total_output_tokens(self) -> int:
        """Sum of ``output_tokens`` over all recorded turns."""
        return sum(row[2] for row in self._aggregates()[1])

    def token_totals(self) -> UsageSnapshot:
        """All four token counts summed over every recorded turn (one consistent read)."""
        rows = self._aggregates()[1]
        return UsageSnapshot(
            input_tokens=sum(row[1] for row in rows),
            output_tokens=sum(row[2] for row in rows),
            cache_write_tokens=sum(row[3] for row in rows),
            cache_read_tokens=sum(row[4] for row in rows),
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
        return {row[0]: _cost(_price_for(row[0]), *row[1:]) for row in rows}

    def total_cost(self) -> float:
        """Unrounded USD cost of every recorded turn at current prices."""
        version = _table_version()
        with self._lock:
            if self.turns is not self._synced_list or len(self.turns) != self._synced_len:
                self._resync_locked()
            if version is not None and version == self._cost_version:
                return self._cost_total
            total = 0.0
            for model, t in self._models.items():
                total += _cost(_price_for(model), t.input, t.output, t.cache_write, t.cache_read)
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
        """Counts and cost in one JSON-friendly dict (cost rounded to 4 decimals)."""
        count, rows = self._aggregates()
        total = sum(self._row_costs(rows).values())
        return {
            "turns": count,
            "total_input_tokens": sum(row[1] for row in rows),
            "total_output_tokens": sum(row[2] for row in rows),
            "total_cost_usd": round(total, 4),
            "formatted_cost": _format_usd(total),
        }
