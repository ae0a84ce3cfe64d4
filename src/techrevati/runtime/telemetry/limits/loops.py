"""Loop detection: tool calls that repeat without teaching the agent anything new.

Pure bookkeeping (no OpenTelemetry): the call path and the span processor feed
it tool calls, it answers "refuse this call" or "a loop was just detected"; the
session reports detections (``calls/loops.py``).

A call's fingerprint is its normalised tool name plus its arguments as
canonical JSON (sorted keys; ``canonical`` says how other values are written),
and a hash of its result. A value with no faithful canonical form never makes
two calls look identical: such arguments leave the call unwatched, such a
result counts as new work. Fingerprints stay in memory, in the session's ``LoopWatch``,
bounded to the most recent ``window`` distinct calls; they are never exported
(a hash of content is content).

The rule, for ``repeats = n``:

* a call **repeats** when it has the fingerprint of an earlier call, returned
  the same result, and no call in between brought *new work*: a result that
  no other recent call returned (the agent learned something, so what came
  before it does not count towards a loop). Calls that raised are neither;
* when a call has repeated so that ``n`` identical calls returned the same
  result, that is a loop; the next identical call is refused before it runs
  (``on_loop="raise"``) or only reported (``"warn"``), unless new work came
  after the last of them.

Calls that return nothing new between the repeats do not break the count:
cycles (A-B-A-B, A-B-C-A-B-C) whose calls all repeat are caught within ``n``
cycles, as is ``search(x)`` repeated between other calls that return what was
seen already, or that failed. What is
never a loop: a call whose result changes (polling until done), a changing
argument (pagination), different arguments with the same result, a program's
own retry after an exception (with no model turn in between, a failed call resets
its count and never counts as a result), and a call repeated while something
else keeps changing or bringing new results (``sleep`` between polls of a job
that advances; re-reading the same plan between the pages of a listing).

Whether a result in between is new is judged when a loop is decided, over
the whole window: in A-B-A-B the first B's result is new when it returns, and
seen already once the second B returned the same.

Repetition is counted in model turns (``same_step``): identical calls that one
model reply asked for (parallel tool calls, however they overlap or finish) are
one call of the rule, so they are never a loop by themselves, up to ``FANOUT``
identical calls a turn (a reply's plausible fan-out): further identical calls of the
same turn count as repetitions (a loop driven by a model the runtime does not see, after
one it saw). A model call made inside a tool call is a turn of the tool calls made inside
that same tool call (a sub-agent run as a tool). Before the session's first model call,
only identical calls in flight together are one step (``LoopWatch.enter``). In model turns a
call that raises counts like one that returns, its error (type and message) as its
result (``LoopWatch.failed``): the model asking turn after turn for a call that fails
the same way is a loop.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import fractions
import hashlib
import itertools
import json
import logging
import pickle
import threading
import uuid
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, is_dataclass, replace
from enum import Enum
from functools import partial
from pathlib import PurePath
from types import BuiltinFunctionType, CodeType, FunctionType, ModuleType
from typing import Final, Literal, NoReturn

from .. import semconv as sc
from ..readings.tools import ToolReading
from .errors import LoopDetectedError, LoopFacts
from .ledger import Ledger

PATTERN_REPEAT: Final = "repeat"
PATTERN_CYCLE: Final = "cycle"
PATTERN_INTERLEAVED: Final = "interleaved"

OnLoop = Literal["raise", "warn"]
_log = logging.getLogger("techrevati.runtime.loops")


#: How many recent distinct calls a session remembers unless told otherwise.
DEFAULT_WINDOW: Final = 64


@dataclass(frozen=True, slots=True)
class LoopGuard:
    """How a session treats tool calls that loop.

    ``repeats``: identical calls with the same result that make a loop (the
    next identical call is the one refused). ``on_loop``: ``"raise"`` refuses
    that call with ``LoopDetectedError`` before its body runs; ``"warn"`` lets
    it run and reports the loop (one log warning per session, a span event, a
    metric). ``window``: how many recent distinct calls a session remembers.
    ``ignore``: tool names never fingerprinted (a wait or heartbeat tool).

    Every session gets ``LoopGuard(on_loop="warn")`` unless told otherwise;
    ``loop_guard=None`` turns detection off.

    Example::

        with agent_session("researcher", loop_guard=LoopGuard(repeats=3, on_loop="raise")):
            ...   # the 4th identical search returning the same hits raises LoopDetectedError
    """

    repeats: int = 3
    on_loop: OnLoop = "raise"
    window: int = DEFAULT_WINDOW
    ignore: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        repeats = self.repeats
        if isinstance(repeats, bool) or not isinstance(repeats, int):
            raise TypeError(
                f"LoopGuard repeats must be an int >= 2, got {type(repeats).__name__}: {repeats!r}"
            )
        if repeats < 2:
            raise ValueError(f"LoopGuard repeats must be an int >= 2, got {repeats!r}")
        if self.on_loop not in ("raise", "warn"):
            raise ValueError(f"LoopGuard on_loop must be 'raise' or 'warn', got {self.on_loop!r}")
        window = self.window
        need = f"LoopGuard window must be an int >= 3 * repeats ({3 * repeats})"
        if isinstance(window, bool) or not isinstance(window, int):
            raise TypeError(f"{need}, got {type(window).__name__}: {window!r}")
        if window < 3 * repeats:
            if window == DEFAULT_WINDOW:
                # Left at its default, the window is not what the caller chose: the
                # repeats they wrote is what does not fit in it.
                raise ValueError(
                    f"LoopGuard repeats must be at most {window // 3} with the default "
                    f"window={window} (window >= 3 * repeats), got {repeats!r}; pass a "
                    "larger window too"
                )
            raise ValueError(f"{need}, got {window!r}")
        ignore = self.ignore
        if isinstance(ignore, str) or not isinstance(ignore, Iterable):
            raise TypeError(f"LoopGuard ignore must be a collection of tool names, got {ignore!r}")
        names = tuple(ignore)
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"LoopGuard ignore holds tool names (str), got {name!r}")
        object.__setattr__(self, "ignore", frozenset(normalise_name(n) for n in names))


#: What every session gets unless told otherwise.
DEFAULT_LOOP_GUARD: Final = LoopGuard(on_loop="warn")


@dataclass(frozen=True, slots=True)
class Detection:
    """One loop, as reported: its pattern, the tool, the tools of its cycle."""

    pattern: str
    tool: str
    repeats: int
    #: The tools of the loop in call order (one for a repeat; 2-3 for a cycle).
    tools: tuple[str, ...]
    #: ``"raise"`` or ``"warn"``: what the next identical call meets.
    action: str
    #: True for the session's first detection (it alone is logged as a warning).
    first: bool
    #: What was seen: the loop's calls, the error it raised each time, if any.
    facts: LoopFacts = field(default_factory=LoopFacts)


# -- fingerprints ---------------------------------------------------------------------


def normalise_name(name: str) -> str:
    """Tool names as instrumentations spell them differently: ``Web-Search`` = ``web_search``."""
    return name.strip().lower().replace("-", "_").replace(" ", "_")


class NotComparable(Exception):
    """A value with no faithful canonical form: it never makes two calls look identical."""


#: Types whose ``repr`` says their whole value (a ``Decimal``, a date): safe to compare.
_BY_VALUE: Final = (
    complex,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    decimal.Decimal,
    fractions.Fraction,
    uuid.UUID,
    PurePath,
)
_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
#: What arguments may name by identity: the object itself is the argument.
_BY_IDENTITY: Final = (FunctionType, type, ModuleType)

#: Values one fingerprint walks at most (items, keys and fields, all levels together).
#: A bigger argument is not compared (a bigger result only as plain data, by ``_exact``),
#: so a tool call's fingerprint costs bounded work whatever it is given (a million rows
#: took 254 ms a call before).
MAX_VALUES: Final = 10_000
#: Text and bytes longer than this are written as their length and hash (read once, in
#: C) instead of being copied into the fingerprint (20 MB of bytes took 536 ms and
#: 280 MB through their ``repr`` before).
INLINE_TEXT: Final = 256
#: Named scalar arguments up to this many are written as they are, with no walk.
_FLAT_MAX: Final = 64


class TooBig(NotComparable):
    """A value of more than ``MAX_VALUES`` values: not compared (bounded work)."""


@dataclass(frozen=True, slots=True, eq=False)
class Bound:
    """The object a method is bound to, as an argument of its call: compared by identity.

    ``Server("db-1").health()`` and ``Server("db-2").health()`` are two calls. The
    object is known by its ``identity`` serial, which a new object never gets, even
    at a freed one's address.
    """

    target: object


def _qualname(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


# -- identity that survives address reuse ----------------------------------------------

#: Live objects compared by identity, by address: (a weak reference, the object's serial).
_SERIALS: dict[int, tuple[weakref.KeyedRef[int, object], int]] = {}
#: Addresses whose object died, dropped from ``_SERIALS`` at the next lookup: a weak
#: reference's callback may run in the middle of a dict operation, so it only appends.
_DEAD: deque[int] = deque()
_NEXT_SERIAL: Final = itertools.count(1)
_SERIALS_LOCK: Final = threading.Lock()


#: Objects that cannot be weakly referenced one watch holds at most (``Pins``): each may
#: hold a resource (a sqlite3 connection's file), so few; the same object passed again
#: and again, as a loop passes it, stays among the most recently used.
PINNED: Final = 8


class Pins:
    """Objects that cannot be weakly referenced, held (strongly) by one ``LoopWatch`` so
    that their address names them: (object, serial) by address, the most recently
    used ``limit`` of them. While pinned, no other object can take the address; once
    let go, the object gets a new serial if seen again (a repeat missed, never two
    objects taken for one)."""

    __slots__ = ("limit", "table")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.table: OrderedDict[int, tuple[object, int]] = OrderedDict()


def identity(value: object, pins: Pins | None = None) -> int:
    """A number for ``value`` that no other object ever gets, while it lives or after.

    ``id()`` is not one: a freed object's address goes to the next object made, so ten
    different ``Query`` arguments made one after another looked like one query asked
    ten times. An object that cannot be weakly referenced (a sqlite3 connection, a
    ``__slots__`` instance, an ``object()`` sentinel) is known by its address while
    ``pins`` holds it; with no ``pins`` it raises ``NotComparable``: nothing would tell
    a new object at its address from it.
    """
    address = id(value)
    with _SERIALS_LOCK:
        while _DEAD:
            _drop(_DEAD.popleft())
        found = _SERIALS.get(address)
        if found is not None and found[0]() is value:
            return found[1]
        try:
            ref = weakref.KeyedRef(value, _died, address)
        except TypeError:
            if pins is None:
                raise NotComparable(type(value).__qualname__) from None
            return _pinned(value, address, pins)
        serial = next(_NEXT_SERIAL)
        _SERIALS[address] = (ref, serial)
        return serial


def _pinned(value: object, address: int, pins: Pins) -> int:
    """``value``'s serial while ``pins`` holds it (under ``_SERIALS_LOCK``)."""
    table = pins.table
    held = table.get(address)
    if held is not None and held[0] is value:
        table.move_to_end(address)
        return held[1]
    serial = next(_NEXT_SERIAL)
    table[address] = (value, serial)
    if len(table) > pins.limit:
        table.popitem(last=False)  # bounded: the least recently used is let go
    return serial


def _died(ref: weakref.KeyedRef[int, object]) -> None:
    _DEAD.append(ref.key)


def _drop(address: int) -> None:
    """Forget a dead object's serial (unless a new object took its address since)."""
    found = _SERIALS.get(address)
    if found is not None and found[0]() is None:
        del _SERIALS[address]


# -- canonical forms --------------------------------------------------------------------


class _Walk:
    """One value's walk to canonical data: what it may still visit (``MAX_VALUES``)."""

    __slots__ = ("by_identity", "left", "pins")

    def __init__(self, by_identity: bool, pins: Pins | None = None) -> None:
        #: An object with no value of its own stands for itself (arguments), or is
        #: never compared (results).
        self.by_identity = by_identity
        self.left = MAX_VALUES
        #: Where objects that cannot be weakly referenced are held (``identity``).
        self.pins = pins

    def take(self, count: int) -> None:
        """Spend ``count`` values of the budget, or raise ``TooBig``."""
        self.left -= count
        if self.left < 0:
            raise TooBig(f"more than {MAX_VALUES} values")


def _long_text(text: str) -> str:
    """Long text as its length and hash (``str`` caches its hash: read once, in C)."""
    return f"\x00text:{len(text)}:{str.__hash__(text)}"


def _digest(data: bytes | bytearray) -> str:
    """Bytes by length and hash, never copied: a ``bytes`` caches its hash."""
    if isinstance(data, bytes):
        return f"{len(data)}:{bytes.__hash__(data)}"
    # SHA-256 runs on the CPU's SHA instructions where there are some: 20 MB in 17 ms
    # here, against 146 ms for BLAKE2b.
    return f"{len(data)}:{hashlib.sha256(data).hexdigest()}"


def _plain(value: object, walk: _Walk) -> object:
    """``value`` as JSON data that says all of it (raises ``NotComparable``).

    Dicts with keys that are not all strings become sorted ``[key, value]`` pairs
    keyed by each key's own canonical form (``1`` and ``"1"`` stay apart);
    dataclasses and pydantic models are their fields, tagged with their type.
    """
    walk.take(1)
    kind = type(value)
    if kind is str:
        return value if len(value) <= INLINE_TEXT else _long_text(value)  # type: ignore[arg-type]
    if kind is int or kind is float or kind is bool or value is None:
        return value
    if kind is list or kind is tuple:
        return _items(value, walk)  # type: ignore[arg-type]
    if isinstance(value, dict):
        return _mapping(value, walk)
    if isinstance(value, Enum):
        return {"\x00enum": _qualname(kind), "value": _plain(value.value, walk)}
    if isinstance(value, str):  # a subclass: its text, tagged with its type
        return {"\x00value": _qualname(kind), "text": _plain(str.__str__(value), walk)}
    if isinstance(value, int | float):  # subclasses: their value
        return {"\x00value": _qualname(kind), "repr": repr(value)}
    if isinstance(value, list | tuple):
        return _items(value, walk)
    if isinstance(value, set | frozenset):
        walk.take(len(value))
        return {"\x00set": sorted(_dumps(_plain(item, walk)) for item in value)}
    if isinstance(value, bytes | bytearray):
        return {"\x00bytes": _qualname(kind), "digest": _digest(value)}
    return _object(value, kind, walk)


def _object(value: object, kind: type, walk: _Walk) -> object:
    """A value that is not JSON data: by its fields, its value, or its identity."""
    if is_dataclass(value) and not isinstance(value, type):
        return {
            "\x00dataclass": _qualname(kind),
            "fields": {f.name: _plain(getattr(value, f.name), walk) for f in fields(value)},
        }
    declared = getattr(kind, "model_fields", None)
    if isinstance(declared, dict) and hasattr(value, "model_dump"):  # a pydantic model
        # Its fields walked, not ``model_dump()``: a dump copies all of it before the
        # budget could stop the walk.
        found = {name: getattr(value, name, None) for name in declared}
        found.update(getattr(value, "model_extra", None) or {})
        return {"\x00model": _qualname(kind), "fields": _plain(found, walk)}
    if isinstance(value, _BY_VALUE):
        return {"\x00value": _qualname(kind), "repr": repr(value)}
    if kind is Bound:
        return {"\x00bound": identity(value.target, walk.pins)}  # type: ignore[attr-defined]
    if walk.by_identity:
        return _by_identity(value, kind, walk.pins)
    raise NotComparable(kind.__qualname__)


def _by_identity(value: object, kind: type, pins: Pins | None) -> object:
    """An argument with no value of its own (``object``'s ``repr``, a function, a class)."""
    if isinstance(value, BuiltinFunctionType):
        owner = value.__self__
        if owner is None or isinstance(owner, ModuleType):  # ``len``: its name says which
            return {"\x00builtin": f"{value.__module__}.{value.__qualname__}"}
        return {"\x00builtin": value.__qualname__, "self": identity(owner, pins)}  # ``[].append``
    if isinstance(value, _BY_IDENTITY) or type(value).__repr__ is object.__repr__:
        return {"\x00identity": _qualname(kind), "serial": identity(value, pins)}
    raise NotComparable(kind.__qualname__)


def _items(value: list[object] | tuple[object, ...], walk: _Walk) -> list[object]:
    if len(value) > walk.left:
        raise TooBig(f"more than {MAX_VALUES} values")  # before walking any of it
    return [_plain(item, walk) for item in value]


def _mapping(value: dict[object, object], walk: _Walk) -> object:
    walk.take(len(value))  # its keys, before walking any of it
    if all(type(k) is str for k in value):
        return {_key(k): _plain(v, walk) for k, v in value.items()}  # type: ignore[arg-type]
    pairs = [(_dumps(_plain(k, walk)), _plain(v, walk)) for k, v in value.items()]
    pairs.sort(key=lambda pair: pair[0])
    return {"\x00dict": [list(pair) for pair in pairs]}


def _key(key: str) -> str:
    return key if len(key) <= INLINE_TEXT else _long_text(key)


def _dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _flat(value: object) -> bool:
    """Named arguments that are short scalars: written as they are, nothing to walk."""
    if type(value) is not dict or len(value) > _FLAT_MAX:
        return False
    for k, v in value.items():
        if type(k) is not str or len(k) > INLINE_TEXT:
            return False
        kind = type(v)
        if kind is str:
            if len(v) > INLINE_TEXT:
                return False
        elif kind not in _SCALARS:
            return False
    return True


def canonical(value: object, pins: Pins | None = None) -> str:
    """Arguments as canonical JSON (sorted keys, no spaces), or ``NotComparable``.

    What JSON cannot carry is written by content where it is known to be all of
    the value (dataclasses, pydantic models, sets, dates, decimals; bytes and
    long text by length and hash); an object with ``object``'s own ``repr``, a
    function or a class by its ``identity`` (one that cannot be weakly referenced
    only while ``pins`` holds it). Any other object (one whose ``repr``
    may hide what changed, like an HTTP response's ``<Response [200 OK]>``), one
    that cannot be weakly referenced when there are no ``pins``, and a value of more
    than ``MAX_VALUES`` values raise ``NotComparable``: they must never make two
    calls look identical.

    Example::

        canonical({"b": 1, "a": [1, 2]}) == canonical({"a": [1, 2], "b": 1})
    """
    if type(value) is str:
        return value  # the common case: hashed once, in C, with the tool's name
    try:
        if _flat(value):
            return _dumps(value)  # flat named arguments: nothing to walk
        return _dumps(_plain(value, _Walk(True, pins)))
    except (RecursionError, ValueError) as exc:  # a value that contains itself; NaN keys
        raise NotComparable(type(value).__qualname__) from exc


def canonical_result(value: object) -> str:
    """A result as ``canonical`` writes it, but no object stands for itself.

    A result object compared by identity would be the same only while the tool
    returns that very object (a cache), which says nothing about what changed, so a
    result with no faithful form raises ``NotComparable`` (the watch counts it as
    new work).

    Plain data too big to walk (more than ``MAX_VALUES`` values: a table of rows) is
    written exactly, in C (``_exact``), up to ``MAX_RESULT_BYTES``.
    """
    if type(value) is str:
        return value
    try:
        return _dumps(_plain(value, _Walk(False)))
    except TooBig:
        return _exact(value)
    except (RecursionError, ValueError) as exc:
        raise NotComparable(type(value).__qualname__) from exc


#: A result too big to walk is compared by the hash of its pickle, up to this many bytes
#: (a million ints pickle to 4.9 MB, read in ~19 ms); a bigger one raises ``TooBig``
#: (never compared: new work, never a repeat).
MAX_RESULT_BYTES: Final = 8 << 20


class _PlainOnly(pickle.Pickler):
    """Pickles plain data only (the builtin containers and scalars, exactly those types):
    the C pickler asks this hook about every other object, and it refuses them all."""

    def reducer_override(self, obj: object) -> NoReturn:
        raise TypeError(type(obj).__qualname__)


class _Sink:
    """Where ``_exact`` pickles to: hashed as it comes, never kept; at most
    ``MAX_RESULT_BYTES``."""

    __slots__ = ("digest", "size")

    def __init__(self) -> None:
        self.digest = hashlib.blake2b(digest_size=16)
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > MAX_RESULT_BYTES:
            raise TooBig(f"more than {MAX_RESULT_BYTES} bytes")
        self.digest.update(data)
        return len(data)


def _exact(value: object) -> str:
    """Plain data by the hash of its pickle: exact (types kept: ``1`` and ``"1"``, a list
    and a tuple, stay apart) and read in C (2,500 rows of 4 fields: ~0.7 ms). Equal data
    built in another order (a dict's keys) may differ: a repeat missed, never invented.
    Raises ``NotComparable`` for any other object, ``TooBig`` past ``MAX_RESULT_BYTES``."""
    sink = _Sink()
    pickler = _PlainOnly(sink, protocol=5)
    # No memo: a third faster on rows of dicts, and a shared row is written like a copy
    # of it (a value that contains itself raises ValueError: not compared).
    pickler.fast = True
    try:
        pickler.dump(value)
    except TooBig:
        raise
    except (TypeError, ValueError, RecursionError, pickle.PicklingError) as exc:
        raise NotComparable(type(value).__qualname__) from exc
    return f"\x00pickle:{sink.size}:{sink.digest.hexdigest()}"


def canonical_text(text: str) -> str:
    """A JSON string another instrumentation recorded, made canonical (else as given)."""
    try:
        return canonical(json.loads(text))
    except ValueError:
        return text


#: Keys a framework writes into a recorded tool result that name the request, not the
#: result (LangChain's ToolMessage carries the model's tool_call_id): left out, or every
#: call would look new. Ids that are data (``id``) stay.
_PER_CALL_KEYS: Final = frozenset({"tool_call_id"})


def _without_call_ids(value: object) -> object:
    if isinstance(value, dict):
        return {k: _without_call_ids(v) for k, v in value.items() if k not in _PER_CALL_KEYS}
    if isinstance(value, list):
        return [_without_call_ids(v) for v in value]
    return value


def canonical_arguments_text(text: str) -> str:
    """Arguments another instrumentation recorded, canonical.

    A LangChain callback's record (``{"input_str": ..., "tags": ..., "metadata": ...}``,
    what OpenLLMetry writes) is reduced to the call's input: its tags and metadata
    describe the graph step, which changes on every call. Per-call ids go too.
    """
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, dict) and "input_str" in value:
        value = {k: v for k, v in value.items() if k not in ("tags", "metadata")}
    return canonical(_without_call_ids(value))


def canonical_result_text(text: str) -> str:
    """A result another instrumentation recorded, canonical and without per-call ids."""
    try:
        return canonical(_without_call_ids(json.loads(text)))
    except ValueError:
        return text


def callable_arguments(fn: object) -> object:
    """What a zero-argument callable was bound to, as the arguments of ``run_tool(name, fn)``.

    ``lambda: lookup(term)`` carries ``term`` in its closure, ``partial(lookup, term)``
    in its arguments; the code object tells two lambdas with different literals
    apart. Pass ``arguments=`` to ``run_tool`` to say it exactly.
    """
    if isinstance(fn, partial):
        # The function is the tool, not an argument: its identity, not its closure.
        return {"partial": _function(fn.func), "args": list(fn.args), "keywords": fn.keywords}
    unbound = getattr(fn, "__func__", None)
    if unbound is not None:  # a bound method (which also answers ``__code__``): its object too
        return {"method": callable_arguments(unbound), "self": Bound(getattr(fn, "__self__", None))}
    code = getattr(fn, "__code__", None)
    if code is None:
        # A callable object: by its fields if it is data, else by its identity.
        return {"callable": fn}
    cells = getattr(fn, "__closure__", None) or ()
    values = []
    for cell in cells:
        try:
            values.append(cell.cell_contents)
        except ValueError:  # an empty cell
            values.append(None)
    # A lambda written at a script's or a notebook's top level reads its loop variable
    # as a module global, not from a closure: the plain values it reads are its
    # arguments too (functions, modules and objects it names are not).
    found = getattr(fn, "__globals__", None)
    read: dict[str, object] = {}
    if isinstance(found, dict):
        for name in code.co_names:
            value = found.get(name)
            if type(value) in _PLAIN:
                read[name] = value
    return [_code_identity(code), values, getattr(fn, "__defaults__", None), read]


def _function(func: object) -> object:
    """A partial's function by identity; a bound method by its function and its object."""
    unbound = getattr(func, "__func__", None)
    if unbound is not None:
        return {"function": unbound, "self": Bound(getattr(func, "__self__", None))}
    return func


#: Global values a callable's fingerprint reads (what a loop variable holds).
_PLAIN = frozenset({str, int, float, bool, bytes})


def _code_identity(code: CodeType) -> int:
    """What a function's code does, not where it is written.

    ``hash(code)`` covers line and column positions (3.11+), so the same
    ``lambda: search("x")`` written twice would look like two different calls.
    """
    consts = tuple(_code_identity(c) if isinstance(c, CodeType) else c for c in code.co_consts)
    return hash((code.co_code, consts, code.co_names))


# -- the watch ------------------------------------------------------------------------


#: Where a call stands among its session's model turns (``step_of``): ``(turn, where)``.
#: In model turns (``turn > 0``): the model calls the session made before it, and
#: ``where`` 0; or, for a call made inside a tool call that made model calls (a
#: sub-agent run as a tool), that tool call's last model call's serial and ``where`` 1.
#: Before any model call (``turn == 0``): ``where`` is the batch of identical calls in
#: flight together (``LoopWatch.enter``; 0: none, a step of its own).
Step = tuple[int, int]

#: Identical calls one model turn's step absorbs at most: a reply's plausible parallel
#: fan-out (the OpenAI Agents SDK's reply asking ``get_weather("Paris")`` 5 times). Further
#: identical calls of that turn count as repetitions: a loop whose model calls the
#: runtime does not see after one it saw is caught within ``FANOUT + repeats`` calls.
FANOUT: Final = 5

#: Serials of batches of identical calls in flight together before any model call
#: (``LoopWatch.enter``).
_BATCHES: Final = itertools.count(1)


def same_step(one: Step | None, other: Step | None) -> bool:
    """Whether two identical calls are one repetition step: asked for by one model turn.

    After the session's first model call, the calls between two model calls are one
    turn's (a reply's parallel tool calls, however they overlap or finish; at most
    ``FANOUT`` of them, which ``LoopWatch`` counts). Before any (a program calling tools
    itself, or a model the runtime does not see) there is no turn to go by: a call is
    its own step, unless it was admitted while an identical call was in flight (calls
    made in parallel, as ``asyncio.gather`` does), never by which task or thread made it.
    """
    if one is None or other is None:
        return False
    return one == other and (one[0] > 0 or one[1] != 0)


def step_of(ledger: Ledger, inside: int = 0) -> Step:
    """The step of a tool call starting now in the session of ``ledger``.

    ``inside``: the serial of the last model call made inside the tool call this one is
    made in (``SpanEntry.turn``; 0: none), which is then its turn.
    """
    if inside:
        return (inside, 1)
    return (ledger.turns, 0)


class _Flight:
    """Identical calls in flight together before any model call (``LoopWatch.enter``)."""

    __slots__ = ("batch", "count", "ended_in")

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.count = 0
        #: The asyncio task its last call ended in, while none is in flight (None: some are).
        self.ended_in: weakref.ref[asyncio.Task[object]] | None = None


def _task() -> asyncio.Task[object] | None:
    """The asyncio task running this code, if any."""
    try:
        return asyncio.current_task()
    except RuntimeError:  # no event loop running in this thread
        return None


def _absorbs(seen: _Seen, step: Step | None) -> bool:
    """Whether an identical call of ``step`` is of ``seen``'s last step, which may take it:
    any number in flight together before turns are known; in a model turn ``FANOUT``, or
    any number while it fails the same way (a program's own retries within the turn)."""
    return (
        step is not None
        and same_step(seen.step, step)
        and (step[0] == 0 or seen.folded < FANOUT or seen.raised is not None)
    )


@dataclass(eq=False, slots=True)
class _Seen:
    """What one fingerprint did last."""

    tool: str
    result: int | None = None
    streak: int = 0
    reported: bool = False
    #: The step of its last counted call (None: no turn known).
    step: Step | None = None
    #: Its identical calls with the same result in that step (at most ``FANOUT`` are
    #: one step in model turns; past it, each counts).
    folded: int = 0
    #: A call of its current streak was counted past ``FANOUT`` in its turn: its loop is
    #: not "in model turns" (one turn asked for it that often).
    crowded: bool = False
    #: The error its last call raised (``"ConnectionError: refused"``), counted as its
    #: result in model turns (``LoopWatch.failed``); None: it returned.
    raised: str | None = None
    #: The pattern of the loop this call was last reported in, its tools, their
    #: fingerprints and what was seen (``LoopFacts``).
    pattern: str = PATTERN_REPEAT
    tools: tuple[str, ...] = ()
    members: tuple[int, ...] = ()
    facts: LoopFacts = field(default_factory=LoopFacts)


#: Hashes for results that cannot be compared, each one unlike any other result (a
#: ``hash`` of text is a random 64-bit value: these sit past its range).
_UNCOMPARED: Final = itertools.count(1 << 64)

#: An error's message in a loop's message is cut to this many characters.
_ERROR_TEXT: Final = 200


def _error_text(kind: type, message: str) -> str:
    """An exception as a loop's message names it: ``ConnectionError: refused``."""
    if len(message) > _ERROR_TEXT:
        message = message[: _ERROR_TEXT - 3] + "..."
    return f"{kind.__qualname__}: {message}" if message else kind.__qualname__


#: A recent call: its fingerprint and its result's hash (None: it raised, no turn known).
_Entry = tuple[int, int | None]


#: Called with each detection (the session reports it as a span event and metric).
DetectionListener = Callable[[Detection], None]


class LoopWatch:
    """One session's recent tool calls and the loop rule (see the module docstring).

    Thread-safe; the only state is a bounded map of recent fingerprints and a
    bounded list of the most recent calls.

    Example::

        watch = LoopWatch(LoopGuard(repeats=3))
        key = watch.key("search", {"q": "x"})
        for _ in range(3):
            watch.admit(key, "search")
            watch.record(key, "search", ["no hits"])
        watch.admit(key, "search")   # raises LoopDetectedError
    """

    __slots__ = (
        "_flying",
        "_lock",
        "_pins",
        "_recent",
        "_results",
        "_seen",
        "detections",
        "guard",
        "on_detect",
        "raising",
    )

    def __init__(self, guard: LoopGuard, on_detect: DetectionListener | None = None) -> None:
        self.guard = guard
        self.raising = guard.on_loop == "raise"
        self.on_detect = on_detect
        #: Loops detected in this session so far.
        self.detections = 0
        self._lock = threading.Lock()
        self._seen: OrderedDict[int, _Seen] = OrderedDict()
        #: The most recent calls, oldest first, and how often each result appears
        #: among them: a result seen once is new work.
        self._recent: deque[_Entry] = deque()
        self._results: dict[int, int] = {}
        #: Fingerprints in flight: [how many calls, the batch they were admitted in].
        self._flying: dict[int, _Flight] = {}
        #: Arguments that cannot be weakly referenced, held while recent (``identity``).
        self._pins = Pins(PINNED)

    def close(self) -> None:
        """The session ended: drop the fingerprints (a finished session may be kept for
        its summary; its recent calls are no use then). ``detections`` stays."""
        with self._lock:
            self._seen.clear()
            self._recent.clear()
            self._results.clear()
            self._flying.clear()
        with _SERIALS_LOCK:
            self._pins.table.clear()
        self.on_detect = None

    def key(self, tool: str, arguments: object) -> int | None:
        """The fingerprint of a call of ``tool`` with ``arguments``; None for an ignored tool."""
        name = normalise_name(tool)
        if name in self.guard.ignore:
            return None
        try:
            return hash((name, canonical(arguments, self._pins)))
        except NotComparable:
            return None  # arguments that cannot be compared: the call is never a repeat

    def key_of_text(self, tool: str, arguments: str) -> int | None:
        """``key`` for arguments another instrumentation recorded as JSON text."""
        name = normalise_name(tool)
        if name in self.guard.ignore:
            return None
        return hash((name, canonical_arguments_text(arguments)))

    def enter(self, key: int, step: Step) -> Step:
        """A call of ``key`` starts in ``step`` (``step_of``); returns its step. Pair it
        with ``leave`` when the call ends or is refused.

        Before any model call, a call admitted while an identical call is in flight is
        of that call's batch (calls made in parallel); one admitted when none is starts
        a new batch: a step of its own, whichever task or thread makes it. One more
        case is parallel: ``asyncio.gather`` of calls that return at once runs them one
        after another in one pass of the event loop, so a batch whose last call ended
        in an asyncio task stays open until the loop's next pass, for the calls of
        *other* tasks started in this one (a task's own next call, or a task created
        once it ended, comes later: a new batch).
        """
        with self._lock:
            flying = self._flying.get(key)
            if flying is not None and not flying.count:
                ended = flying.ended_in
                if ended is None or ended() is _task():
                    flying = None  # the same task again: one call after another
            if flying is None:
                flying = self._flying[key] = _Flight(next(_BATCHES))
            flying.count += 1
            flying.ended_in = None
            batch = flying.batch
        return step if step[0] else (0, batch)

    def leave(self, key: int) -> None:
        """A call ``enter`` counted ended (returned, raised or was refused)."""
        with self._lock:
            flying = self._flying.get(key)
            if flying is None:
                return
            flying.count -= 1
            if flying.count > 0:
                return
            task = _task()
            if task is None:
                del self._flying[key]  # a thread's call: the batch ends with it
                return
            flying.ended_in = weakref.ref(task)
        # Closed at the event loop's next pass (after the callbacks already queued: the
        # other tasks a gather started).
        task.get_loop().call_soon(self._close, key, flying)

    def _close(self, key: int, flying: _Flight) -> None:
        with self._lock:
            if self._flying.get(key) is flying and not flying.count:
                del self._flying[key]

    def admit(self, key: int, tool: str, step: Step | None = None) -> None:
        """Before a call runs: raise ``LoopDetectedError`` when it would extend a loop.

        ``step`` (``step_of``): a call of the step that made the loop's last call is
        that step's, not a repetition (the same model reply asked for it twice).
        """
        if not self.raising:
            return
        refusal = self.refusal(key, tool, step)
        if refusal is not None:
            raise refusal

    def refusal(self, key: int, tool: str, step: Step | None = None) -> LoopDetectedError | None:
        """The error the next identical call meets under ``"raise"``, if ``key`` is looping."""
        seen = self._seen.get(key)
        if not self.raising or seen is None or seen.streak < self.guard.repeats:
            return None
        if _absorbs(seen, step):
            return None
        with self._lock:
            if self._new_work_since(key):
                return None
            facts = seen.facts
            if seen.pattern == PATTERN_CYCLE:
                calls = self._cycle_calls(seen.members)
                if calls > facts.calls:  # more of the cycle ran since it was reported
                    facts = replace(facts, calls=calls)
        return LoopDetectedError(
            seen.pattern, tool, self.guard.repeats, tools=seen.tools, facts=facts
        )

    def record(
        self, key: int, tool: str, result: object, step: Step | None = None
    ) -> Detection | None:
        """A call returned ``result``; returns (and reports) a loop it completes, if any.

        ``step`` (``step_of``): an identical call of the step of the last one, with the
        same result, is that step again and counts nothing (see ``same_step``).
        """
        try:
            result_hash = hash(canonical_result(result))
        except NotComparable:
            # No faithful form: never the same as another result, so new work.
            result_hash = next(_UNCOMPARED)
        return self.record_hash(key, tool, result_hash, step)

    def record_hash(
        self, key: int, tool: str, result: int, step: Step | None = None
    ) -> Detection | None:
        """``record`` with the result already hashed (a recorded text result)."""
        return self._book(key, tool, result, step, None)

    def _book(
        self, key: int, tool: str, result: int, step: Step | None, raised: str | None
    ) -> Detection | None:
        repeats = self.guard.repeats
        with self._lock:
            seen = self._seen.get(key)
            over = False
            if seen is not None and seen.result == result and same_step(seen.step, step):
                if _absorbs(seen, step):
                    # One model reply asked for the same call more than once (parallel
                    # tool calls): one repetition step, counted with its first call.
                    seen.folded += 1
                    self._seen.move_to_end(key)
                    return None
                over = True  # more than a reply's fan-out in one turn: each one counts
            seen = self._remember(key, tool)
            seen.folded = FANOUT if over else 1
            self._append((key, result))
            seen.result = result
            seen.step = step
            seen.raised = raised
            seen.streak = self._streak(key, result)
            seen.crowded = over or (seen.crowded and seen.streak > 1)
            if seen.streak < repeats:
                seen.reported = False  # below the count again: a later loop is a new one
                return None
            if seen.reported:
                return None
            detection = self._detect(key, seen)
        listener = self.on_detect
        if listener is not None:
            listener(detection)
        return detection

    def failed(
        self,
        key: int,
        step: Step | None = None,
        error: BaseException | None = None,
        tool: str | None = None,
    ) -> Detection | None:
        """A call raised ``error``; returns (and reports) a loop it completes, if any.

        In model turns (``step`` after the session's first model call) a call that
        raises an ``Exception`` the same way as before (its type and message) counts
        like a call returning the same result: the model asking again, turn after
        turn, for a call that keeps failing is a loop. A success, another error, or
        other arguments start the count over. Otherwise (no model turn known: a
        program retrying a call itself; or a cancellation) a retry after an
        exception is progress, and the call's count starts over.
        """
        if isinstance(error, Exception) and tool is not None and step is not None and step[0] > 0:
            try:
                kind, message = type(error), str(error)
            except Exception:
                pass  # an exception whose message raises: not compared
            else:
                result = hash(("\x00raised", _qualname(kind), message))
                return self._book(key, tool, result, step, _error_text(kind, message))
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None:
                seen.result = None
                seen.streak = 0
                seen.reported = False
                seen.step = step
                seen.folded = 0
                seen.raised = None
            self._append((key, None))
        return None

    # -- the window -----------------------------------------------------------------

    def _remember(self, key: int, tool: str) -> _Seen:
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = _Seen(tool)
            if len(self._seen) > self.guard.window:
                self._seen.popitem(last=False)  # bounded: the oldest gives way
        else:
            self._seen.move_to_end(key)
        return seen

    def _append(self, entry: _Entry) -> None:
        recent, results = self._recent, self._results
        if len(recent) >= self.guard.window:
            old = recent.popleft()[1]
            if old is not None:
                left = results[old] - 1
                if left:
                    results[old] = left
                else:
                    del results[old]
        recent.append(entry)
        result = entry[1]
        if result is not None:
            results[result] = results.get(result, 0) + 1

    def _is_new(self, entry: _Entry) -> bool:
        """New work: a call that returned a result no other recent call returned."""
        return entry[1] is not None and self._results.get(entry[1], 0) < 2

    def _streak(self, key: int, result: int) -> int:
        """Identical calls (this one the last) with no new work between, up to ``repeats``."""
        repeats = self.guard.repeats
        count = 1
        recent = self._recent
        for index in range(len(recent) - 2, -1, -1):
            entry = recent[index]
            if entry[0] == key:
                if entry[1] != result:
                    break  # its result changed, or it raised: counting starts after it
                count += 1
                if count >= repeats:
                    break
            elif self._is_new(entry):
                break
        return count

    def _cycle_calls(self, members: tuple[int, ...]) -> int:
        """How many of the cycle ``members``'s calls, taking turns, end the recent
        calls, each returning what its member returns now (0: the cycle is not what
        the recent calls end with)."""
        period, recent = len(members), self._recent
        size = len(recent)
        if not period or size < period:
            return 0
        if {recent[size - 1 - i][0] for i in range(period)} != set(members):
            return 0
        results = {k: (found.result if (found := self._seen.get(k)) else None) for k in members}
        calls = 0
        for index in range(size - 1, -1, -1):
            key, result = recent[index]
            if calls >= period and key != recent[index + period][0]:
                break
            if result is None or result != results.get(key):
                break
            calls += 1
        return calls

    def _new_work_since(self, key: int) -> bool:
        """Whether new work came after the last call of ``key``."""
        recent = self._recent
        for index in range(len(recent) - 1, -1, -1):
            entry = recent[index]
            if entry[0] == key:
                return False
            if self._is_new(entry):
                return True
        return False

    # -- classification -----------------------------------------------------------

    def _detect(self, key: int, seen: _Seen) -> Detection:
        pattern, members = self._classify(key)
        found = [self._seen.get(member) for member in members]
        looping = [other for other in found if other is not None] or [seen]
        tools = tuple(other.tool for other in looping)
        facts = self._facts(pattern, members, looping, seen)
        for other in (*looping, seen):
            other.reported = True  # one report per loop, not one per member
            other.pattern = pattern
            other.tools = tools
            other.members = members
            other.facts = facts
        self.detections += 1
        return Detection(
            pattern=pattern,
            tool=seen.tool,
            repeats=self.guard.repeats,
            tools=tools,
            action=self.guard.on_loop,
            first=self.detections == 1,
            facts=facts,
        )

    def _facts(
        self, pattern: str, members: tuple[int, ...], looping: list[_Seen], seen: _Seen
    ) -> LoopFacts:
        """What a loop's message says was seen: its calls, the error it raised, if any."""
        raiser = seen if seen.raised is not None else None
        if raiser is None:
            raiser = next((other for other in looping if other.raised is not None), None)
        by_name: dict[str, set[int | None]] = {}
        for other in looping:
            by_name.setdefault(normalise_name(other.tool), set()).add(other.result)
        return LoopFacts(
            calls=self._cycle_calls(members) if pattern == PATTERN_CYCLE else 0,
            raised=raiser.raised if raiser is not None else None,
            raised_by=raiser.tool if raiser is not None else None,
            turns=seen.step is not None and seen.step[0] > 0 and not seen.crowded,
            alike=all(len(results) == 1 for results in by_name.values()),
        )

    def _classify(self, key: int) -> tuple[str, tuple[int, ...]]:
        """(pattern, the fingerprints of the loop) for ``key``, from the recent calls."""
        recent = [entry[0] for entry in self._recent]
        n = self.guard.repeats
        size = len(recent)
        if size >= n and all(recent[size - 1 - i] == key for i in range(n)):
            return PATTERN_REPEAT, (key,)
        for period in (2, 3):
            span = period * (n - 1) + 1
            if size < span:
                break
            tail = [recent[size - span + i] for i in range(span)]
            if (
                tail[-1] == key
                and len(set(tail[-period:])) == period
                and all(tail[i] == tail[i + period] for i in range(span - period))
            ):
                return PATTERN_CYCLE, tuple(tail[:period])  # in call order
        return PATTERN_INTERLEAVED, (key,)


# -- other instrumentations' tool spans (the limits processor's door) -----------------


def watch_of(ledger: Ledger) -> LoopWatch | None:
    """The loop watch of the session that owns ``ledger``, if it has one."""
    watch = getattr(ledger.session(), "loops", None)
    return watch if isinstance(watch, LoopWatch) else None


def admit_tool(ledger: Ledger, tool: str, arguments: str | None) -> None:
    """A tool span of another instrumentation starts: refuse it if it extends a loop.

    Only possible when the span carries its arguments at its start; otherwise
    the loop is refused at the next call that does (or that goes through ours).
    """
    watch = watch_of(ledger)
    if watch is None or not watch.raising or arguments is None:
        return
    try:
        key = watch.key_of_text(tool, arguments)
    except Exception:
        return
    if key is None:
        return
    try:
        watch.admit(key, tool, step_of(ledger))
    except LoopDetectedError as refusal:
        ledger._hit(sc.LIMIT_LOOP, refusal)  # once per session, like a cap
        raise


def record_tool(ledger: Ledger, reading: ToolReading) -> None:
    """A tool span of another instrumentation ended: book it. Never raises.

    A span without recorded arguments or result (content capture off) cannot
    be compared and is left out: a loop is never guessed. Under ``"raise"`` a
    call that extends a loop makes the session refuse its model calls until a
    tool call breaks the loop: most producers record a tool's arguments only
    when it ends, so the next tool call cannot be refused at its start, while
    the next model call (the agent reading this result) passes through our
    doors. Like a cap, the refusal holds for every further call, because
    frameworks catch an exception from a callback and try again.
    """
    watch = watch_of(ledger)
    if watch is None or reading.arguments is None:
        return
    try:
        key = watch.key_of_text(reading.name, reading.arguments)
        if key is None:
            return
        step = step_of(ledger)
        if reading.failed:
            watch.failed(key, step)
            ledger.pending_refusal = None
        elif reading.result is not None:
            result = hash(canonical_result_text(reading.result))
            watch.record_hash(key, reading.name, result, step)
            refusal = watch.refusal(key, reading.name)
            ledger.pending_refusal = refusal.at_model_call() if refusal is not None else None
    except Exception:
        _log.debug("tool span %r could not be fingerprinted", reading.name, exc_info=True)
