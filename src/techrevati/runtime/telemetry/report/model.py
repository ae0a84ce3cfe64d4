"""The report as data: sessions, model calls, tools and events, rebuilt from span records.

Which spans are model calls, and whether a model span is the same call as the
one enclosing it, is decided by :mod:`.recognise` (the rule the limits use
live), never here. The report agrees with itself by construction:

* a session's row shows its own roll-ups when its span carries them (they
  count calls whose spans were dropped or sampled away), else what its calls
  add up to;
* the header total is the sessions' costs plus calls outside any session;
* the model table prices every counted call (the cost on the span, else the
  price of its usage, as the live ledger did), and whatever a session's
  roll-up holds beyond its exported calls is shown on its own row, so the
  table always sums to the header.

The tree walk is iterative and cycle-proof: a corrupt file whose parent links
loop is reported, not followed forever.

Example::

    report = build_report(records)
    report.total_cost_usd, [row.model for row in report.models]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import semconv as sc
from ..readings.recognise import CallReading, is_same_call, read_call, same_model
from .read import SpanRecord

_Key = tuple[str, str]
#: Below this a difference in USD is rounding (the report prints 6 decimals).
_CENT_FRACTION = 5e-7


@dataclass(frozen=True)
class LoopRow:
    """One loop detected in a session (its ``techrevati.loop.detected`` event)."""

    pattern: str
    #: The tools of the loop in call order.
    tools: tuple[str, ...]
    #: ``raise`` (the next identical call was refused) or ``warn``.
    action: str


@dataclass
class SessionRow:
    """One agent session (an ``invoke_agent`` span)."""

    role: str
    outcome: str
    duration_s: float
    turns: int = 0
    #: ``gen_ai.usage.input_tokens``: all input, cached tokens included.
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    limit_hits: list[str] = field(default_factory=list)
    start_ns: int = 0
    calls_without_usage: int = 0
    unpriced_calls: int = 0
    #: Calls without usage that a budget booked at an estimate, and their cost.
    calls_estimated: int = 0
    estimated_cost_usd: float = 0.0
    #: The session span's ids: what the HTML report's session tree links by.
    trace_id: str = ""
    span_id: str = ""
    #: A shared session (``shared=True``): sessions opened under it in other
    #: processes, and what its whole tree spent, there included.
    shared: bool = False
    remote_children: int = 0
    tree_cost_usd: float | None = None
    #: A session opened under a shared session of another process: the parent's role.
    remote_parent: str | None = None
    loops: list[LoopRow] = field(default_factory=list)


@dataclass
class ModelRow:
    """Model calls of one model across the run."""

    model: str
    calls: int = 0
    #: All input, cached tokens included (``gen_ai.usage.input_tokens``).
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    errors: int = 0
    calls_without_usage: int = 0
    unpriced_calls: int = 0
    #: Of ``calls``, those only a session's roll-up counts (a bare client's unpriced
    #: calls): their tokens are in the session's row, not in this one.
    rollup_calls: int = 0

    @property
    def tokens_known(self) -> bool:
        """False when no call of the row has a span: its tokens show as "-"."""
        return self.rollup_calls < self.calls


@dataclass
class ToolRow:
    """Calls of one tool across the run, with their permission decisions."""

    tool: str
    calls: int = 0
    allowed: int = 0
    denied: int = 0
    errors: int = 0
    blocked: int = 0


@dataclass
class FleetRow:
    """One fleet scope: the sessions that counted against it, their spend, its refusals."""

    scope: str
    sessions: int = 0
    #: The sessions' own spend (children counted once, in their own row).
    cost_usd: float = 0.0
    refusals: Counter[str] = field(default_factory=Counter)


@dataclass
class RunReport:
    """Everything the terminal report shows, as data."""

    sessions: list[SessionRow]
    models: list[ModelRow]
    tools: list[ToolRow]
    breakers: dict[str, Counter[str]]
    limit_hits: Counter[tuple[str, str]]
    guardrail_violations: Counter[tuple[str, str]]
    other_events: Counter[str]
    services: list[str]
    span_count: int
    evicted: int = 0
    #: The sessions' costs plus the calls outside any session.
    total_cost_usd: float = 0.0
    #: Cost in sessions' roll-ups that no exported call span carries.
    unattributed_cost_usd: float = 0.0
    #: Calls in sessions' roll-ups that no exported call span carries (a bare client's
    #: calls the guard booked, or call spans dropped or sampled away).
    unattributed_calls: int = 0
    #: Model calls whose response carried no usage (their tokens and cost are unknown).
    calls_without_usage: int = 0
    #: Models with no known price, and how many calls each made: calls with a span
    #: of their own, and those only a session's roll-up names (a bare client's).
    unpriced_models: dict[str, int] = field(default_factory=dict)
    #: Calls without usage that a budget booked at an estimate, and their cost.
    calls_estimated: int = 0
    estimated_cost_usd: float = 0.0
    #: Notes about the span tree itself (parent cycles).
    notes: list[str] = field(default_factory=list)
    #: Fleet scopes the sessions counted against, by name.
    fleet: dict[str, FleetRow] = field(default_factory=dict)
    #: Sessions counted in the totals but not listed: the embedded report folds old
    #: traces into totals to keep its memory bounded (see report/fold.py).
    earlier_sessions: int = 0

    @property
    def model_calls(self) -> int:
        """Every model call: those with a span of their own, and those only sessions'
        roll-ups count (``unattributed_calls``)."""
        return sum(row.calls for row in self.models) + self.unattributed_calls


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return 0.0
    if isinstance(value, int | float):
        number = float(value)
        return number if number == number and abs(number) != float("inf") else 0.0
    return 0.0


class _Tree:
    """Parent links resolved once: each span's session and enclosing model call.

    Iterative (a chain 100,000 spans deep is fine) and cycle-proof.
    """

    def __init__(self, records: Iterable[SpanRecord]) -> None:
        self.by_id: dict[_Key, SpanRecord] = {(r.trace_id, r.span_id): r for r in records}
        self.session: dict[_Key, _Key | None] = {}
        self.enclosing_call: dict[_Key, _Key | None] = {}
        #: What recognise reads from each model-call span (the same reading the limits use).
        self.readings: dict[_Key, CallReading] = {}
        for key, record in self.by_id.items():
            if record.operation == sc.OP_INVOKE_AGENT:
                continue
            reading = read_call(record.name, record.attributes, record.scope)
            if reading is not None:
                self.readings[key] = reading
        self.cycles = 0
        for key in self.by_id:
            if key not in self.session:
                self._resolve(key)

    def _parent_key(self, key: _Key) -> _Key | None:
        record = self.by_id[key]
        if record.parent_id is None:
            return None
        parent = (record.trace_id, record.parent_id)
        return parent if parent in self.by_id and parent != key else None

    def _resolve(self, start: _Key) -> None:
        chain: list[_Key] = []
        on_chain: set[_Key] = set()
        node: _Key | None = start
        while node is not None and node not in self.session:
            if node in on_chain:  # the parents loop: cut the link here
                self.cycles += 1
                break
            chain.append(node)
            on_chain.add(node)
            node = self._parent_key(node)
        top = node if node in self.session else None
        for key in reversed(chain):
            self._settle(key, top)
            top = key

    def _settle(self, key: _Key, parent: _Key | None) -> None:
        record = self.by_id[key]
        is_session = record.operation == sc.OP_INVOKE_AGENT
        if parent is None:
            self.session[key] = key if is_session else None
            self.enclosing_call[key] = None
            return
        self.session[key] = key if is_session else self.session[parent]
        parent_is_session = self.by_id[parent].operation == sc.OP_INVOKE_AGENT
        if parent_is_session:
            self.enclosing_call[key] = None
        elif parent in self.readings:
            self.enclosing_call[key] = parent
        else:
            self.enclosing_call[key] = self.enclosing_call[parent]


@dataclass
class _Call:
    """One counted model call, priced."""

    model: str
    input_tokens: int
    output_tokens: int
    cost: float
    error: bool
    without_usage: bool
    unpriced: bool
    #: Booked at an estimate: its usage never arrived (``techrevati.cost.source``).
    estimated: bool = False
    #: Priced here from its tokens (another instrumentation's span, no cost on it).
    repriced: bool = False


def _price(record: SpanRecord, reading: CallReading) -> _Call:
    attrs = record.attributes
    response_model = attrs.get(sc.GEN_AI_RESPONSE_MODEL)
    model = str(
        (response_model if isinstance(response_model, str) else "")
        or reading.model
        or record.subject
        or "(unknown)"
    )
    usage = reading.usage
    without_usage = attrs.get(sc.USAGE_MISSING) is True or (usage is None and not record.ours)
    source = attrs.get(sc.COST_SOURCE)
    if sc.COST_USD in attrs:
        cost = _number(attrs.get(sc.COST_USD))
    elif usage is not None:
        # Another instrumentation's call: priced as the live ledger priced it.
        from ...pricing import price_call

        priced = price_call(model, usage, reading.provider)
        cost, source = priced.cost, priced.source
    else:
        cost = 0.0
    return _Call(
        model=model,
        # Input as the GenAI conventions count it: uncached plus cache reads and writes.
        input_tokens=(
            usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
            if usage is not None
            else 0
        ),
        output_tokens=usage.output_tokens if usage is not None else 0,
        cost=cost,
        error=record.error or sc.ERROR_TYPE in attrs,
        without_usage=without_usage,
        unpriced=source == sc.COST_SOURCE_UNPRICED,
        estimated=source == sc.COST_SOURCE_ESTIMATED,
        repriced=sc.COST_USD not in attrs and usage is not None,
    )


def _as_booked(calls: list[tuple[_Key, _Call]], tree: _Tree) -> None:
    """Price other instrumentations' calls as their session's ledger booked them.

    Such a span carries no cost: read back, its tokens would be priced at the
    reading process's prices (a negotiated rate registered in the agent's
    process, or a model only it knew, would read as the bundled price or as
    unpriced). A session span lists what its own calls of each model cost
    (``techrevati.cost.models`` / ``.model_usd``); what our own call spans of
    that model carry is taken out, and the rest is shared by its repriced calls.
    """
    by_session: dict[_Key, list[tuple[_Key, _Call]]] = {}
    for key, call in calls:
        owner = tree.session[key]
        if owner is not None:
            by_session.setdefault(owner, []).append((key, call))
    for owner, owned in by_session.items():
        attrs = tree.by_id[owner].attributes
        models, costs = attrs.get(sc.COST_MODELS), attrs.get(sc.COST_MODEL_USD)
        if not isinstance(models, list | tuple) or not isinstance(costs, list | tuple):
            continue
        for model, booked in zip(models, costs, strict=False):
            if not isinstance(model, str) or not isinstance(booked, int | float):
                continue
            mine = [c for _, c in owned if same_model(c.model, model)]
            repriced = [c for c in mine if c.repriced]
            if not repriced:
                continue
            left = float(booked) - sum(c.cost for c in mine if not c.repriced)
            if left < 0:
                continue  # the roll-up does not cover them: keep the prices read here
            for call in repriced:
                call.cost = left / len(repriced)
                call.unpriced = False


def build_report(
    records: Iterable[SpanRecord], *, evicted: int = 0, tree: _Tree | None = None
) -> RunReport:
    """Aggregate span records into a :class:`RunReport`.

    ``tree``: the :class:`SpanTree` of the same records, when the caller has it already.
    """
    spans = list(records)
    tree = tree if tree is not None else _Tree(spans)
    sessions: dict[_Key, SessionRow] = {}
    computed: dict[_Key, SessionRow] = {}
    models: dict[str, ModelRow] = {}
    tools: dict[str, ToolRow] = {}
    breakers: dict[str, Counter[str]] = {}
    limit_hits: Counter[tuple[str, str]] = Counter()
    fleet: dict[str, FleetRow] = {}
    violations: Counter[tuple[str, str]] = Counter()
    other_events: Counter[str] = Counter()
    unpriced: Counter[str] = Counter()
    #: Unpriced calls with a span of their own, by session and model.
    unpriced_spans: dict[_Key, Counter[str]] = {}
    reported_violations: set[_Key | None] = set()
    blocked: list[tuple[_Key | None, str, str]] = []
    outside = _Call("", 0, 0, 0.0, False, False, False)
    outside_without_usage = 0
    estimated_calls = 0
    estimated_cost = 0.0
    services = sorted({r.service for r in spans if r.service})

    for key, record in tree.by_id.items():
        if record.operation != sc.OP_INVOKE_AGENT:
            continue
        role = record.attributes.get(sc.GEN_AI_AGENT_NAME) or record.subject
        outcome = record.attributes.get(sc.SESSION_OUTCOME) or (
            sc.OUTCOME_FAILED if record.error else "ended"
        )
        attrs = record.attributes
        sessions[key] = SessionRow(
            role=str(role),
            outcome=str(outcome),
            duration_s=max(0, record.end_ns - record.start_ns) / 1e9,
            start_ns=record.start_ns,
            trace_id=record.trace_id,
            span_id=record.span_id,
            shared=attrs.get(sc.SESSION_SHARED) is True,
            remote_children=_count(attrs.get(sc.SESSION_REMOTE_CHILDREN)),
            tree_cost_usd=_amount(attrs.get(sc.COST_TREE_USD)),
            remote_parent=_name(attrs.get(sc.SESSION_REMOTE_PARENT_ROLE)),
        )
        computed[key] = SessionRow(role="", outcome="", duration_s=0)

    # Model calls in start order, so "the first library span in our turn" is well defined.
    taken: set[_Key] = set()
    model_keys = sorted(tree.readings, key=lambda k: (tree.by_id[k].start_ns, k))
    counted: list[tuple[_Key, _Call]] = []
    for key in model_keys:
        record = tree.by_id[key]
        enclosing = tree.enclosing_call[key]
        enclosing_ours = tree.by_id[enclosing].ours if enclosing is not None else None
        if is_same_call(
            ours=record.ours,
            enclosing_ours=enclosing_ours,
            enclosing_taken=enclosing in taken,
        ):
            if enclosing is not None and enclosing_ours:
                taken.add(enclosing)
            continue
        counted.append((key, _price(record, tree.readings[key])))
    _as_booked(counted, tree)
    for key, call in counted:
        row = models.setdefault(call.model, ModelRow(call.model))
        row.calls += 1
        row.input_tokens += call.input_tokens
        row.output_tokens += call.output_tokens
        row.cost_usd += call.cost
        row.errors += int(call.error)
        row.calls_without_usage += int(call.without_usage)
        row.unpriced_calls += int(call.unpriced)
        unpriced[call.model] += int(call.unpriced)
        if call.estimated:
            estimated_calls += 1
            estimated_cost += call.cost
        owner = tree.session[key]
        if owner is not None:
            total = computed[owner]
            total.turns += 1
            total.input_tokens += call.input_tokens
            total.output_tokens += call.output_tokens
            total.cost_usd += call.cost
            total.calls_without_usage += int(call.without_usage)
            total.unpriced_calls += int(call.unpriced)
            if call.unpriced:
                unpriced_spans.setdefault(owner, Counter())[call.model] += 1
            if call.estimated:
                total.calls_estimated += 1
                total.estimated_cost_usd += call.cost
        else:
            outside.cost += call.cost
            outside_without_usage += int(call.without_usage)

    for key, record in tree.by_id.items():
        owner_key = tree.session[key]
        role = sessions[owner_key].role if owner_key in sessions else "(no session)"
        attrs = record.attributes

        if record.operation == sc.OP_EXECUTE_TOOL:
            tool = str(attrs.get(sc.GEN_AI_TOOL_NAME) or record.subject)
            tool_row = tools.setdefault(tool, ToolRow(tool))
            tool_row.calls += 1
            decision = attrs.get(sc.PERMISSION_DECISION)
            tool_row.allowed += int(decision == sc.PERMISSION_ALLOW)
            tool_row.denied += int(decision == sc.PERMISSION_DENY)
            tool_row.errors += int(record.error or sc.ERROR_TYPE in attrs)
            tool_row.blocked += int(attrs.get(sc.GUARDRAIL_OUTCOME) == sc.GUARDRAIL_BLOCKED)

        # States seen on model calls only: a session span's breaker attributes are the
        # state at its end, not a call (the decorated demo's 2 calls read "closed x3").
        breaker = attrs.get(sc.BREAKER_NAME) if key in tree.readings else None
        if breaker:
            state = str(attrs.get(sc.BREAKER_STATE) or "unknown")
            breakers.setdefault(str(breaker), Counter())[state] += 1

        for event in record.events:
            if event.name == sc.EVENT_LIMIT_HIT:
                kind = str(event.attributes.get(sc.LIMIT_KIND) or "unknown")
                limit_hits[(kind, role)] += 1
                fleet_scope = event.attributes.get(sc.FLEET_SCOPE)
                if isinstance(fleet_scope, str):
                    fleet.setdefault(fleet_scope, FleetRow(fleet_scope)).refusals[kind] += 1
                if owner_key in sessions:
                    sessions[owner_key].limit_hits.append(kind)
            elif event.name == sc.EVENT_LOOP_DETECTED:
                if owner_key in sessions:
                    sessions[owner_key].loops.append(_loop_row(event.attributes))
            elif event.name == sc.EVENT_GUARDRAIL:
                reported_violations.add(owner_key)
                violations[(_guardrail_label(event.attributes, record), role)] += 1
            else:
                other_events[event.name] += 1
        if attrs.get(sc.GUARDRAIL_OUTCOME) == sc.GUARDRAIL_BLOCKED:
            blocked.append((owner_key, _guardrail_label(attrs, record), role))

    # A blocked span is the same violation as the session's event about it; it is
    # counted on its own only for sources that do not emit the event.
    for owner_key, label, role in blocked:
        if owner_key not in reported_violations:
            violations[(label, role)] += 1

    unattributed = 0.0
    unattributed_calls = 0
    for key, session in sessions.items():
        attrs = tree.by_id[key].attributes
        totals = computed[key]
        # The session span's own roll-ups win: they still count turns whose spans
        # were dropped or sampled away. Children are the fallback for sessions
        # written by other instrumentations.
        # Calls the session admitted count too when nothing booked them: a client
        # call that failed (a 404) still counted against the cap, with no span.
        session.turns = max(
            int(_rollup(attrs, sc.SESSION_TURNS, totals.turns)),
            int(_rollup(attrs, sc.SESSION_ITERATION, 0)),
        )
        session.input_tokens = int(
            _rollup(attrs, sc.GEN_AI_USAGE_INPUT_TOKENS, totals.input_tokens)
        )
        session.output_tokens = int(
            _rollup(attrs, sc.GEN_AI_USAGE_OUTPUT_TOKENS, totals.output_tokens)
        )
        session.cost_usd = _rollup(attrs, sc.COST_USD, totals.cost_usd)
        session.calls_without_usage = int(
            _rollup(attrs, sc.SESSION_CALLS_WITHOUT_USAGE, totals.calls_without_usage)
        )
        session.unpriced_calls = int(
            _rollup(attrs, sc.SESSION_UNPRICED_CALLS, totals.unpriced_calls)
        )
        # Estimated calls with no span of their own (booked by the client guard)
        # are known only from the session's roll-up.
        rolled_estimated = int(_rollup(attrs, sc.SESSION_CALLS_ESTIMATED, 0))
        session.calls_estimated = max(rolled_estimated, totals.calls_estimated)
        session.estimated_cost_usd = max(
            _rollup(attrs, sc.SESSION_ESTIMATED_USD, 0.0), totals.estimated_cost_usd
        )
        if rolled_estimated > totals.calls_estimated:
            estimated_calls += rolled_estimated - totals.calls_estimated
            estimated_cost += session.estimated_cost_usd - totals.estimated_cost_usd
        unattributed += session.cost_usd - totals.cost_usd
        beyond = max(session.turns - totals.turns, 0)
        # Unpriced calls only the roll-up counts (a bare client's: no span of their
        # own) are named by it: listed as unpriced, and given their model's row.
        for model, count in _unpriced_beyond(attrs, unpriced_spans.get(key), session, totals):
            unpriced[model] += count
            if model == UNNAMED_MODEL:
                continue
            moved = min(count, beyond)
            beyond -= moved
            if moved:
                row = models.setdefault(model, ModelRow(model))
                row.calls += moved
                row.unpriced_calls += moved
                row.rollup_calls += moved
        unattributed_calls += beyond
        scopes = attrs.get(sc.FLEET_SCOPES)
        if isinstance(scopes, list | tuple):
            for name in scopes:
                if isinstance(name, str):
                    fleet_row = fleet.setdefault(name, FleetRow(name))
                    fleet_row.sessions += 1
                    fleet_row.cost_usd += session.cost_usd

    total_cost = sum(row.cost_usd for row in sessions.values()) + outside.cost
    return RunReport(
        sessions=sorted(sessions.values(), key=lambda row: row.start_ns),
        models=sorted(models.values(), key=lambda row: (-row.cost_usd, row.model)),
        tools=sorted(tools.values(), key=lambda row: (-row.calls, row.tool)),
        breakers=breakers,
        limit_hits=limit_hits,
        guardrail_violations=violations,
        other_events=other_events,
        services=services,
        span_count=len(spans),
        evicted=evicted,
        total_cost_usd=total_cost,
        unattributed_cost_usd=unattributed if abs(unattributed) >= _CENT_FRACTION else 0.0,
        unattributed_calls=unattributed_calls,
        calls_without_usage=sum(row.calls_without_usage for row in sessions.values())
        + outside_without_usage,
        unpriced_models={model: count for model, count in sorted(unpriced.items()) if count},
        calls_estimated=estimated_calls,
        estimated_cost_usd=estimated_cost,
        notes=(
            [f"{tree.cycles} span parent cycle(s) found; the loops were cut"] if tree.cycles else []
        ),
        fleet=dict(sorted(fleet.items())),
    )


#: The model of unpriced calls a session's roll-up counts but does not name (a file
#: written before sessions named them).
UNNAMED_MODEL = "(model not named)"


def _unpriced_beyond(
    attributes: Mapping[str, Any],
    spans: Counter[str] | None,
    session: SessionRow,
    totals: SessionRow,
) -> list[tuple[str, int]]:
    """A session's unpriced calls that no exported call span carries, by model.

    ``techrevati.session.unpriced_models`` / ``.unpriced_model_calls`` name them;
    the calls of each model with a span of their own (``spans``) are taken out.
    What the count holds beyond the names (an older file) is ``UNNAMED_MODEL``'s.
    """
    beyond = session.unpriced_calls - totals.unpriced_calls
    if beyond <= 0:
        return []
    left = Counter(spans) if spans else Counter()
    found: list[tuple[str, int]] = []
    models = attributes.get(sc.SESSION_UNPRICED_MODELS)
    counts = attributes.get(sc.SESSION_UNPRICED_MODEL_CALLS)
    if isinstance(models, list | tuple) and isinstance(counts, list | tuple):
        for model, count in zip(models, counts, strict=False):
            if not isinstance(model, str) or not model:
                continue
            rest = _count(count)
            for seen in [m for m in left if same_model(m, model)]:
                taken = min(rest, left[seen])
                rest -= taken
                left[seen] -= taken
            rest = min(rest, beyond)
            if rest:
                found.append((model[:256], rest))
                beyond -= rest
    if beyond:
        found.append((UNNAMED_MODEL, beyond))
    return found


def unpriced_note(report: RunReport, names: int = 3) -> str:
    """What the header total leaves out: the unpriced models' calls ("" when none).

    Example::

        >>> note = unpriced_note(RunReport([], [], [], {}, Counter(), Counter(), Counter(), [], 0,
        ...     unpriced_models={"my-private-model": 10}))
        >>> note.split(" — ")[0]
        '10 calls of unpriced models not counted: my-private-model'
    """
    if not report.unpriced_models:
        return ""
    calls = sum(report.unpriced_models.values())
    listed = ", ".join(list(report.unpriced_models)[:names])
    if len(report.unpriced_models) > names:
        listed += f" and {len(report.unpriced_models) - names} more"
    what = "call of an unpriced model" if calls == 1 else "calls of unpriced models"
    return f"{calls} {what} not counted: {listed} — price them with register_pricing()"


def _loop_row(attributes: Mapping[str, Any]) -> LoopRow:
    tools = attributes.get(sc.LOOP_TOOLS)
    if isinstance(tools, list | tuple) and tools:
        names = tuple(str(t) for t in tools)
    else:
        names = (str(attributes.get(sc.GEN_AI_TOOL_NAME) or "?"),)
    return LoopRow(
        pattern=str(attributes.get(sc.LOOP_PATTERN) or "?"),
        tools=names,
        action=str(attributes.get(sc.LOOP_ACTION) or "?"),
    )


def _rollup(attributes: Mapping[str, Any], key: str, fallback: float) -> float:
    return _number(attributes[key]) if key in attributes else fallback


def _guardrail_label(attributes: Mapping[str, Any], record: SpanRecord) -> str:
    name = attributes.get(sc.GUARDRAIL_NAME) or record.subject
    stage = attributes.get(sc.GUARDRAIL_STAGE)
    return f"{name} ({stage})" if stage else str(name)


#: The resolved span tree, for renderers that show more than the report's rows (HTML).
SpanTree = _Tree

__all__ = [
    "UNNAMED_MODEL",
    "ModelRow",
    "RunReport",
    "SessionRow",
    "SpanTree",
    "ToolRow",
    "build_report",
    "unpriced_note",
]


def _count(value: Any) -> int:
    # From a file nobody vouches for: only a plain non-negative int counts.
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _amount(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e15:
        return float(value)
    return None


def _name(value: Any) -> str | None:
    return value[:256] if isinstance(value, str) and value else None
