"""Exceptions raised by sessions.

They live apart from ``orchestrator`` so the telemetry core (which raises the
limit errors from a span processor) does not import the Orchestrator. The
contract's home for them is ``techrevati.runtime.orchestrator``, which
re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...circuit_breaker import CircuitOpenError
from ...guardrails import GuardrailViolatedError
from ...permissions import PermissionOutcome
from ...usage_tracking import BudgetExceededError, LimitSite, _name, usd_text
from .. import semconv as sc


class DefaultCap(int):
    """An ``int`` equal to the cap, that says it is the default: ``max_iterations=25``
    given by hand is a plain 25, so a message calls the cap "the default" only when
    nobody set it."""

    __slots__ = ()


#: ``max_iterations`` when the session does not set one (``Orchestrator``, ``agent_session``).
DEFAULT_MAX_ITERATIONS = DefaultCap(25)


class PermissionDeniedError(Exception):
    """A tool call refused by the permission policy; the tool body never ran.

    Example::

        try:
            session.run_tool("write_db", write)
        except PermissionDeniedError as err:
            print(err.outcome.reason)
    """

    def __init__(self, outcome: PermissionOutcome) -> None:
        self.outcome = outcome
        super().__init__(outcome.reason or "permission denied")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.outcome,), self.__dict__)


class TurnTimeoutError(Exception):
    """A turn that did not finish within its ``timeout`` (sync and async alike).

    Example::

        try:
            session.run_turn(call_model, model="m", timeout=30.0)
        except TurnTimeoutError as err:
            print(err.timeout_seconds)
    """

    def __init__(self, timeout_seconds: float) -> None:
        self.timeout_seconds = timeout_seconds
        super().__init__(f"turn exceeded timeout of {timeout_seconds:.3f}s")

    def __reduce__(self) -> tuple[Any, ...]:
        # The default replays the message into __init__, which wants the number; the
        # message itself (which says what became of the call) travels as state.
        return (type(self), (self.timeout_seconds,), {**self.__dict__, "args": self.args})


class MaxIterationsExceededError(Exception):
    """Raised instead of starting model call number ``max_iterations + 1``.

    The message names whose cap it is (``site``: the session's own, a parent
    session's, or a fleet scope's ``max_calls`` with ``scope`` set), says that
    the call was refused before it ran, and says when the cap is the default.

    Example::

        orch = Orchestrator(role="w", max_iterations=3)
        # the 4th run_turn of a session raises MaxIterationsExceededError(3)
    """

    def __init__(
        self, max_iterations: int, *, scope: str | None = None, site: LimitSite | None = None
    ) -> None:
        self.max_iterations = max_iterations
        #: The fleet scope that refused (``FleetLimits.scope``); None for a session's own cap.
        self.scope = scope
        #: Whose cap it was; None when not raised by a session.
        self.site = site
        super().__init__(self._message())

    def at(self, site: LimitSite) -> MaxIterationsExceededError:
        """This error, told where it happened (the message is rebuilt); returns itself."""
        self.site = site
        self.args = (self._message(),)
        return self

    def _message(self) -> str:
        cap, site = self.max_iterations, self.site
        if site is None:
            if self.scope is not None:
                return (
                    f"fleet scope {self.scope!r} reached max_calls={cap}; this call was "
                    "refused before it ran; raise max_calls (a scope with window_s counts "
                    "from zero again in its next window)"
                )
            return f"session reached max_iterations={cap}; raise the cap or shorten the loop"
        if site.level == "fleet":
            refused = f"call {cap + 1} was refused before it ran, nothing was sent or booked."
            if site.window_s is None:
                return (
                    f"{site.describe_owner()} reached max_calls={cap}: {refused} The scope has "
                    "no window_s, so its count never resets: the cap holds for the scope's "
                    "life. Raise the scope's max_calls."
                )
            return (
                f"{site.describe_owner()} reached max_calls={cap} in this window "
                f"(window_s={site.window_s:g}): {refused} Raise the scope's max_calls, or "
                "wait: its next window counts from zero."
            )
        default = f" (the default cap of {cap})" if type(cap) is DefaultCap else ""
        if site.level == "shared":
            return (
                f"{site.describe_owner()} reached max_iterations={cap}{default} across every "
                f"process it reaches: model call {cap + 1} of its tree was refused before it "
                "ran, nothing was sent or booked. Raise max_iterations where the shared "
                "session is opened, or shorten the loop."
            )
        whose = "the parent session's cap" if site.level == "parent" else "the cap"
        return (
            f"{site.describe_owner()} reached max_iterations={cap}{default}: model call "
            f"{cap + 1} was refused before it ran, nothing was sent or booked. Raise {whose} "
            "(max_iterations=...) or shorten the loop."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_cap_error,
            (type(self), self.max_iterations, self.scope, self.site),
            self.__dict__,
        )


def _rebuild_cap_error(
    cls: type[MaxIterationsExceededError],
    cap: int,
    scope: str | None,
    site: LimitSite | None = None,
) -> MaxIterationsExceededError:
    error = cls.__new__(cls)
    MaxIterationsExceededError.__init__(error, cap, scope=scope, site=site)
    return error


def _flag_owner(site: LimitSite | None) -> str:
    """The session whose ``allow_unpriced`` accepts the call (``Ledger.accepts_unpriced``)."""
    if site is not None and site.level == "parent":
        # Its flag speaks for its budget, not the child's; named, as a grandparent's
        # budget is a "parent" level too.
        return f"session {_name(site.role, site.session_id)}"
    if site is not None and site.level in ("fleet", "shared") and site.call_role:
        return "the session that makes the call"
    return "the session"


class UnpricedModelError(BudgetExceededError):
    """A call of a model with no known price, refused under an enforced budget.

    A subclass of ``BudgetExceededError``, so ``except BudgetExceededError``
    still catches it. Price the model (``register_pricing`` or
    ``load_pricing_from_file``) or open the session with ``allow_unpriced=True``
    to accept such calls at $0.

    Example::

        try:
            session.run_turn(call, model="my-finetune")
        except UnpricedModelError as err:
            print(err.model)
    """

    def __init__(
        self,
        model: str,
        budget_usd: float,
        current_cost_usd: float = 0.0,
        *,
        site: LimitSite | None = None,
        no_usage: bool = False,
    ) -> None:
        self.model = model
        #: True when the model's price is known but an earlier call of it returned no
        #: usage and nothing could estimate what it cost.
        self.no_usage = no_usage
        BudgetExceededError.__init__(self, budget_usd, current_cost_usd, site=site)

    def _message(self) -> str:
        budget = usd_text(self.budget_usd)
        owner = self.site.describe_owner() if self.site is not None else "the session"
        if getattr(self, "no_usage", False):
            return (
                f"an earlier call of model {self.model!r} returned no token usage and nothing "
                f"could estimate its cost, so the enforced budget of ${budget} of {owner} "
                "cannot hold; this call was refused before it ran: nothing was sent and "
                "nothing was booked. Return the provider's usage (or pass usage=), set "
                f"call_estimate_usd= on the session, or open {_flag_owner(self.site)} with "
                "allow_unpriced=True to accept such calls at $0"
            )
        listed = _listed_under(self.model)
        hint = (
            f" The bundled prices list it for provider {listed!r}: say so with "
            f"provider={listed!r} on @agent_turn, or provider_name={listed!r} on the "
            "Orchestrator / agent_session."
            if listed
            else ""
        )
        # An Azure deployment or a router name is unpriced until its response names
        # the model, after the refusal: say what makes such a name run, too.
        return (
            f"model {self.model!r} has no known price, so the enforced budget of ${budget} "
            f"of {owner} cannot hold; this call was refused before it ran: nothing was sent "
            f"and nothing was booked.{hint} Price it under this name with "
            f"register_pricing({self.model!r}, ModelPricing(input_per_million=..., "
            "output_per_million=...)) or load_pricing_from_file() (for an Azure deployment "
            "or a router such as 'openrouter/auto': the rate you pay through that name; its "
            "calls are then reserved and booked at it, whichever model answers), or open "
            f"{_flag_owner(self.site)} with allow_unpriced=True to accept it at $0 (a call whose "
            "response names a priced model is then booked at that model's price, and later "
            "calls of this name are reserved at what it cost)"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_unpriced_error,
            (
                type(self),
                self.model,
                self.budget_usd,
                self.current_cost_usd,
                self.site,
                getattr(self, "no_usage", False),
            ),
            self.__dict__,
        )


#: Providers whose bundled prices a model may be listed under only (an embedding
#: model, a fine-tune): named in the refusal when a call gave no provider.
_PROVIDERS = ("openai", "anthropic", "gcp.gemini", "gcp.vertex_ai", "aws.bedrock")


def _listed_under(model: str) -> str | None:
    """The provider the bundled prices list ``model`` for, when they need one."""
    from ...pricing import has_pricing

    try:
        return next((p for p in _PROVIDERS if has_pricing(model, p)), None)
    except Exception:
        return None


def _rebuild_unpriced_error(
    cls: type[UnpricedModelError],
    model: str,
    budget: float,
    current: float,
    site: LimitSite | None,
    no_usage: bool = False,
) -> UnpricedModelError:
    error = cls.__new__(cls)
    UnpricedModelError.__init__(error, model, budget, current, site=site, no_usage=no_usage)
    return error


class FleetUnavailableError(Exception):
    """The fleet store (Redis) could not be reached and the scope fails closed.

    Raised before the call starts when ``FleetLimits(on_store_error="refuse")``.

    Example::

        try:
            session.run_turn(call, model="gpt-4o-mini")
        except FleetUnavailableError as err:
            print(err.scope)
    """

    def __init__(self, scope: str, reason: str, reading: str | None = None) -> None:
        self.scope = scope
        self.reason = reason
        #: Set when a read (``usage()``, ``learned_cost()``) failed, not an admission.
        self.reading = reading
        if reading is not None:
            message = (
                f"fleet scope {scope!r} is unavailable ({reason}): {reading} could not be "
                "read. Nothing was refused or booked by this; check that its Redis answers"
            )
        else:
            message = (
                f"fleet scope {scope!r} is unavailable ({reason}): this call was refused "
                "before it ran (on_store_error='refuse'), nothing was sent or booked. Check "
                "that its Redis answers, or use on_store_error='allow' to run on the "
                "session's own limits while it is down"
            )
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.scope, self.reason, self.reading), self.__dict__)


@dataclass(frozen=True, slots=True)
class LoopFacts:
    """What a loop's message says besides its pattern and tools: what was seen.

    ``calls``: the loop's calls seen so far (for a cycle, all its calls; 0: not
    known, ``repeats`` rounds are assumed). ``raised``: the error its looping call
    raised every time (``"ConnectionError: refused"``), by the tool ``raised_by``;
    None when it returned results. ``turns``: counted in model turns (a turn's identical calls
    are one). ``alike``: a cycle's calls of one tool returned one result (else
    their results alternate too).
    """

    calls: int = 0
    raised: str | None = None
    #: The tool whose call raised ``raised`` (a cycle's other calls returned results).
    raised_by: str | None = None
    turns: bool = False
    alike: bool = True


class LoopDetectedError(Exception):
    """A call refused because a tool is looping; the refused call never ran.

    ``pattern`` is ``"repeat"`` (the same call again and again), ``"cycle"``
    (2-3 calls taking turns) or ``"interleaved"`` (the same call between other
    work); ``tool`` the looping tool; ``tools`` the tools of the loop in call
    order (those of a cycle; the one tool otherwise); ``repeats`` how many
    identical calls with the same result made the loop (``LoopGuard.repeats``);
    ``calls`` how many of the loop's calls were seen (a cycle's calls, which
    need not be whole rounds); ``raised`` the error the looping call raised each
    time (None: it returned results). ``refused`` says
    which call was refused: ``"tool"`` (the loop's next call) or ``"model"``
    (a model call of the session, refused while the loop lasts: the loop was
    seen in another instrumentation's tool spans, whose next call cannot be
    refused before it runs, or the tool was asked for again after its refusal;
    ``asked_again`` tells which).

    Example::

        try:
            search("pricing page")
        except LoopDetectedError as err:
            print(err.pattern, err.tool)   # "repeat" "search"
    """

    def __init__(
        self,
        pattern: str,
        tool: str,
        repeats: int,
        refused: str = "tool",
        asked_again: bool = False,
        tools: tuple[str, ...] = (),
        facts: LoopFacts | None = None,
    ) -> None:
        self.pattern = pattern
        self.tool = tool
        self.repeats = repeats
        self.refused = refused
        self.asked_again = asked_again
        self.tools = tuple(tools) or (tool,)
        self.facts = facts = facts if facts is not None else LoopFacts()
        self.calls = facts.calls or repeats * len(self.tools)
        self.raised = facts.raised
        loop = describe_loop(pattern, self.tools, repeats, facts=facts)
        if refused != "model":
            if facts.raised is not None:
                change = (
                    "retrying the same call fails the same way: stop retrying it, fix the "
                    "tool (or what it depends on), change the arguments, or finish with an "
                    "answer without it"
                )
            else:
                change = (
                    f"use the {'results' if len(self.tools) > 1 else 'result'}, change the "
                    "arguments, or finish with an answer"
                )
            message = (
                f"tool {tool!r} is looping {loop}, so this call was refused before it ran; "
                + change
            )
        else:
            why = (
                "it was asked for again after that call was refused"
                if asked_again
                else "the loop was seen in another instrumentation's tool spans, whose next "
                "call cannot be refused before it runs"
            )
            message = (
                f"model call refused, before it ran: tool {tool!r} is looping {loop}, "
                f"and {why}, so the "
                "session refuses its model calls until a tool call that breaks the loop (another "
                "tool, or this one with other arguments) returns; if nothing but the model can "
                "run, end the run with the results so far"
            )
        super().__init__(message)

    def at_model_call(self, *, asked_again: bool = False) -> LoopDetectedError:
        """The same loop, as the refusal the session's model calls meet while it lasts."""
        return LoopDetectedError(
            self.pattern, self.tool, self.repeats, "model", asked_again, self.tools, self.facts
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (
                self.pattern,
                self.tool,
                self.repeats,
                self.refused,
                self.asked_again,
                self.tools,
                self.facts,
            ),
            self.__dict__,
        )


def describe_loop(
    pattern: str,
    tools: tuple[str, ...],
    repeats: int,
    *,
    named: bool = False,
    facts: LoopFacts | None = None,
) -> str:
    """A loop in words, for its error and (``named``: with its tool) its log line.

    The counts are what was seen (``facts.calls``), never more.

    Example::

        >>> describe_loop("repeat", ("search",), 3)
        '(repeat): 3 identical calls returned the same result'
        >>> describe_loop("cycle", ("a", "b"), 3)
        '(cycle of a -> b): 3 rounds of its 2 calls returned the same results'
        >>> print(describe_loop("cycle", ("a", "b"), 3, facts=LoopFacts(calls=5)))
        (cycle of a -> b): 2 rounds of its 2 calls, then a again (5 calls), returned ...
    """
    facts = facts if facts is not None else LoopFacts()
    if pattern == "cycle" and len(tools) > 1:
        # A cycle's count is of rounds: "3 identical calls" of one of its tools hid the
        # others, and the calls were 3 times as many as the tools. Rounds are counted
        # as seen: a cycle is found at its 5th call (2 rounds and a half), not its 6th.
        period = len(tools)
        calls = facts.calls or repeats * period
        rounds, extra = divmod(calls, period)
        seen = f"{rounds} {'round' if rounds == 1 else 'rounds'} of its {period} calls"
        if extra:
            again = " -> ".join(_call_of(tools, i) for i in range(extra))
            seen += f", then {again} again ({calls} calls),"
        outcome = "returned the same results"
        if facts.raised is not None:
            outcome += f" ({facts.raised_by} raised {facts.raised}, each time)"
        return f"(cycle of {' -> '.join(tools)}{_same_names(tools, facts)}): {seen} {outcome}"
    of = f" of {tools[0]}" if named and tools else ""
    steps = (
        f"the same call in {repeats} model turns" if facts.turns else f"{repeats} identical calls"
    )
    if facts.raised is not None:
        return f"({pattern}{of}): {steps} raised the same error ({facts.raised})"
    return f"({pattern}{of}): {steps} returned the same result"


def refused_next(pattern: str, tools: tuple[str, ...], facts: LoopFacts) -> str:
    """The call a loop just found will refuse first, for its warning (``tools[0]`` looped).

    The loop's very next call need not be it: a cycle is found at a call of its first
    tool, the only one whose count is complete, so its other calls run first; and other
    calls run between an interleaved loop's.

    Example::

        >>> refused_next("cycle", ("search", "open_page"), LoopFacts(calls=5))
        "the loop's next call of search, at the start of its 4th round (open_page runs first),"
    """
    if pattern == "repeat":
        return "the loop's next call"
    name = _call_of(tools, 0)
    if pattern != "cycle" or len(tools) < 2:
        return f"the next identical call of {name}"
    others = [_call_of(tools, index) for index in range(1, len(tools))]
    first = f"{' and '.join(others)} {'runs' if len(others) == 1 else 'run'} first"
    rounds, extra = divmod(facts.calls, len(tools))
    if facts.calls and extra == 1:
        # Counted from a call of its first tool: the round that call started ends first.
        round_ = _ordinal(rounds + 2)
        return f"the loop's next call of {name}, at the start of its {round_} round ({first}),"
    # Counted from another tool's call, rounds would not start where the message says.
    return f"the loop's next call of {name} ({first})"


def _ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``, ``11th``, ``21st``."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _call_of(tools: tuple[str, ...], index: int) -> str:
    """A cycle's call by its tool, and which of that tool's calls when it has several."""
    name = tools[index]
    if tools.count(name) == 1:
        return name
    nth = tools[: index + 1].count(name)
    return f"{name} (its {nth}{'st' if nth == 1 else 'nd' if nth == 2 else 'rd'} arguments)"


def _same_names(tools: tuple[str, ...], facts: LoopFacts) -> str:
    """What tells a cycle's calls apart when some share a tool name (their arguments)."""
    shared = [name for name in dict.fromkeys(tools) if tools.count(name) > 1]
    if not shared:
        return ""
    which = " and ".join(
        f"{name} called with {tools.count(name)} different sets of arguments in turn"
        for name in shared
    )
    results = "all returning one result" if facts.alike else "their results alternating with them"
    return f": {which}, {results}"


def limit_kind(error: BaseException) -> str | None:
    """The ``techrevati.limit.kind`` of a limit error (``budget``, ``fleet_calls``, ...), or None.

    Example::

        >>> limit_kind(MaxIterationsExceededError(3, scope="tenant"))
        'fleet_calls'
    """
    if isinstance(error, UnpricedModelError):
        return sc.LIMIT_UNPRICED
    if isinstance(error, BudgetExceededError):
        return sc.LIMIT_FLEET_BUDGET if error.scope is not None else sc.LIMIT_BUDGET
    if isinstance(error, MaxIterationsExceededError):
        return sc.LIMIT_FLEET_CALLS if error.scope is not None else sc.LIMIT_ITERATIONS
    if isinstance(error, FleetUnavailableError):
        return "fleet_unavailable"
    if isinstance(error, LoopDetectedError):
        return "loop"
    return None


#: What the runtime's own checks raise: refusals, not failures of a provider. A call
#: that ended with one of these (a nested call over the cap, a tool the role may not
#: use, a fleet that refused) counts against no breaker and is no recovery scenario.
RUNTIME_REFUSALS: tuple[type[Exception], ...] = (
    BudgetExceededError,
    CircuitOpenError,
    FleetUnavailableError,
    GuardrailViolatedError,
    LoopDetectedError,
    MaxIterationsExceededError,
    PermissionDeniedError,
)
