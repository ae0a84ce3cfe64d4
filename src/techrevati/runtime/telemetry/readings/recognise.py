"""The one place that decides whether a span is a model call, and what it used.

Every door that admits or books a call asks here: the limits processor (for
our spans and other instrumentations'), the core's fallback for spans no
processor sees, and the report when it replays a file. Producers differ, so
their vocabularies and quirks are decided here, by attribute and
instrumentation scope, and nowhere else:

* the GenAI semantic conventions (``gen_ai.operation.name``, ``gen_ai.usage.*``
  with input including both cache counts; the older ``cache_creation``
  spelling and ``gen_ai.system``);
* OpenInference (``openinference.span.kind`` = ``LLM``/``EMBEDDING``,
  ``llm.token_count.prompt`` including cache, ``.completion``,
  ``.prompt_details.cache_read``/``cache_write``,
  ``.completion_details.reasoning``; model in ``llm.request.model_name`` /
  ``llm.model_name``; provider in ``llm.provider`` / ``llm.system``);
* OpenLLMetry (``llm.request.type``, ``openai.chat``-style span names, the
  ``gen_ai.usage.prompt_tokens`` / ``cache_read_input_tokens`` spellings; its
  Responses API span ``openai.response`` is a model call only at its end);
* producer quirks by scope: OpenLIT's Anthropic spans leave cache tokens out of
  ``gen_ai.usage.input_tokens`` (added back here), and producers that report no
  cache count at all are priced on what they report, with one warning per scope.

The two calls the core makes::

    classify_start(span.name, span.attributes, scope_name)  # admit at start?
    read_call(span.name, span.attributes, scope_name)       # model, provider, usage
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any, Final, NamedTuple, Protocol

from ...pricing import booked_name
from ...pricing.names import same_model
from ...usage_tracking import UsageSnapshot
from .. import semconv as sc
from . import tokens
from .sdk_attributes import span_attributes
from .tokens import usage_from_totals

__all__ = [
    "READ_ATTRIBUTES",
    "CallReading",
    "classify_start",
    "is_model_call",
    "is_same_call",
    "model_from_attributes",
    "more_exact",
    "provider_from_attributes",
    "read_call",
    "read_span",
    "same_model",
    "span_attributes",
    "usage_from_attributes",
    "warn_no_cache",
]

_log = logging.getLogger("techrevati.runtime.telemetry")

# --- other vocabularies (read only; we never emit these) ---------------------------
OI_SPAN_KIND: Final = "openinference.span.kind"
OI_MODEL_KINDS: Final = frozenset({"LLM", "EMBEDDING"})
OI_PROMPT: Final = "llm.token_count.prompt"
OI_COMPLETION: Final = "llm.token_count.completion"
OI_CACHE_READ: Final = "llm.token_count.prompt_details.cache_read"
OI_CACHE_WRITE: Final = "llm.token_count.prompt_details.cache_write"
OI_REASONING: Final = "llm.token_count.completion_details.reasoning"
OI_MODEL_KEYS: Final = (
    "llm.request.model_name",
    "llm.model_name",
    "llm.response.model_name",
    "embedding.model_name",
)
OI_PROVIDER_KEYS: Final = ("llm.provider", "llm.system")

#: OpenLLMetry's request type, and its span names for model calls.
LLM_REQUEST_TYPE: Final = "llm.request.type"
_REQUEST_TYPES: Final = frozenset({"chat", "completion", "embedding"})
_NAMES_AT_START: Final = frozenset(
    {
        "openai.chat",
        "openai.completion",
        "openai.embeddings",
        "anthropic.chat",
        "anthropic.completion",
    }
)
#: Spans that start after the request returned: known as model calls only at their end.
_NAMES_AT_END: Final = frozenset({"openai.response"})
#: OpenLLMetry's LangChain instrumentation starts a model span with no attributes, named
#: ``<ChatModelClass>.chat`` (``.completion`` for plain LLMs); its chains and tools end
#: in ``.task`` / ``.workflow`` / ``.tool``. By scope and suffix it is known at start.
LANGCHAIN_OPENLLMETRY_SCOPE: Final = "opentelemetry.instrumentation.langchain"
_LANGCHAIN_MODEL_SUFFIXES: Final = frozenset({"chat", "completion"})
#: Producers that start a model span from a framework callback, which an async run
#: calls in a task of its own: the client's span of the same request starts beside it
#: in another task (siblings under one parent, on the event loop's thread).
CALLBACK_SCOPES: Final = frozenset(
    {
        LANGCHAIN_OPENLLMETRY_SCOPE,
        "openinference.instrumentation.langchain",
        "opentelemetry.instrumentation.genai.langchain",
    }
)

# Older spellings of the GenAI usage attributes (read in this order, first found wins).
_INPUT_KEYS: Final = (sc.GEN_AI_USAGE_INPUT_TOKENS, "gen_ai.usage.prompt_tokens")
_OUTPUT_KEYS: Final = (sc.GEN_AI_USAGE_OUTPUT_TOKENS, "gen_ai.usage.completion_tokens")
_CACHE_READ_KEYS: Final = (
    sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    "gen_ai.usage.cache_read_input_tokens",
)
_CACHE_WRITE_KEYS: Final = (
    sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS,
    sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
    "gen_ai.usage.cache_creation_input_tokens",
)
_REASONING_KEYS: Final = (sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, "gen_ai.usage.reasoning_tokens")

#: Every attribute the decisions and readings here look at (a reader that keeps only
#: these, like the report's in-memory copy, still recognises every vocabulary).
READ_ATTRIBUTES: Final = frozenset(
    {
        sc.GEN_AI_OPERATION_NAME,
        sc.GEN_AI_REQUEST_MODEL,
        sc.GEN_AI_RESPONSE_MODEL,
        sc.GEN_AI_PROVIDER_NAME,
        sc.GEN_AI_SYSTEM,
        OI_SPAN_KIND,
        OI_PROMPT,
        OI_COMPLETION,
        OI_CACHE_READ,
        OI_CACHE_WRITE,
        OI_REASONING,
        LLM_REQUEST_TYPE,
        *OI_MODEL_KEYS,
        *OI_PROVIDER_KEYS,
        *_INPUT_KEYS,
        *_OUTPUT_KEYS,
        *_CACHE_READ_KEYS,
        *_CACHE_WRITE_KEYS,
        *_REASONING_KEYS,
    }
)

# --- producer quirks, by instrumentation scope ----------------------------------------
#: OpenLIT's scope prefix; its Anthropic spans count input without cache tokens.
OPENLIT_SCOPE_PREFIX: Final = "openlit"
#: Producers that report no cache count at all (as of the versions in the README table).
NO_CACHE_SCOPES: Final = frozenset(
    {
        "opentelemetry.instrumentation.openai_v2",
        "openinference.instrumentation.openai_agents",
        "openinference.instrumentation.smolagents",
    }
)

_warned_scopes: set[str] = set()
_warn_lock = threading.Lock()


class CallReading(NamedTuple):
    """What a model-call span says about its call.

    ``usage`` is None while the span carries no usage (at start, or a failed
    call). ``reasoning_tokens`` are already inside ``usage.output_tokens``.
    ``cache_reported`` is False for a producer that reports no cache count, so
    cached input was priced at the full input rate. (A named tuple: one is made
    per model call, and a frozen dataclass costs several times more to build.)
    """

    model: str
    provider: str
    usage: UsageSnapshot | None
    reasoning_tokens: int = 0
    cache_reported: bool = True


def is_model_call(operation: object, span_name: str) -> bool:
    """True for spans that are model calls (by operation attribute, else name).

    Example::

        >>> is_model_call("chat", "whatever")
        True
        >>> is_model_call(None, "execute_tool lookup")
        False
    """
    if isinstance(operation, str):
        return operation in sc.MODEL_OPERATIONS
    return span_name.split(" ", 1)[0] in sc.MODEL_OPERATIONS


def model_from_attributes(attrs: Mapping[str, Any] | None) -> str:
    """The model a span names: GenAI request/response model, else OpenInference's."""
    if not attrs:
        return ""
    # The GenAI request model first, inline: read at the start and end of every call.
    model = attrs.get(sc.GEN_AI_REQUEST_MODEL)
    if type(model) is str and model:
        return model
    return tokens.model_from_attributes(attrs) or _first_str(attrs, OI_MODEL_KEYS)


def provider_from_attributes(attrs: Mapping[str, Any] | None) -> str:
    """The provider a span names: GenAI (new or old spelling), else OpenInference's."""
    if not attrs:
        return ""
    provider = attrs.get(sc.GEN_AI_PROVIDER_NAME)
    if type(provider) is str and provider:
        return provider
    return tokens.provider_from_attributes(attrs) or _first_str(attrs, OI_PROVIDER_KEYS)


def usage_from_attributes(attrs: Mapping[str, Any] | None) -> UsageSnapshot | None:
    """The usage a span reports in any known vocabulary (no scope quirks); None if none.

    Example::

        >>> usage_from_attributes({"llm.token_count.prompt": 120,
        ...     "llm.token_count.completion": 30,
        ...     "llm.token_count.prompt_details.cache_read": 100}).cache_read_tokens
        100
    """
    if not attrs:
        return None
    return _usage(attrs, "", provider_from_attributes(attrs))[0]


def _decide(name: str, attrs: Mapping[str, Any], at_end: bool) -> bool:
    operation = attrs.get(sc.GEN_AI_OPERATION_NAME)
    if isinstance(operation, str):
        return operation in sc.MODEL_OPERATIONS
    kind = attrs.get(OI_SPAN_KIND)
    if isinstance(kind, str):
        return kind in OI_MODEL_KINDS
    request_type = attrs.get(LLM_REQUEST_TYPE)
    if isinstance(request_type, str):
        return request_type in _REQUEST_TYPES
    if name in _NAMES_AT_START or (at_end and name in _NAMES_AT_END):
        return True
    return name.split(" ", 1)[0] in sc.MODEL_OPERATIONS


def classify_start(
    name: str, attributes: Mapping[str, Any] | None, scope_name: str | None = None
) -> bool:
    """True if a span is a model call already at its start (so it can be refused).

    Spans known only at their end (OpenInference's LangChain spans, which get
    their kind when the call is over) are not refused here: the client guard
    stops their request, and the span is the same call as the one the guard
    or another instrumentation admitted while it was open.

    Example::

        >>> classify_start("ChatCompletion", {"openinference.span.kind": "LLM"}, None)
        True
        >>> classify_start("openai.response", {}, "opentelemetry.instrumentation.openai.v1")
        False
        >>> classify_start("ChatOpenAI.chat", {}, "opentelemetry.instrumentation.langchain")
        True
    """
    if (
        scope_name == LANGCHAIN_OPENLLMETRY_SCOPE
        and name.rpartition(".")[2] in _LANGCHAIN_MODEL_SUFFIXES
    ):
        return True
    attrs = attributes or {}
    # _decide's first rule, inline: asked at the start of every span in a session.
    operation = attrs.get(sc.GEN_AI_OPERATION_NAME)
    if type(operation) is str:
        return operation in sc.MODEL_OPERATIONS
    return _decide(name, attrs, at_end=False)


def _int(attrs: Mapping[str, Any], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = attrs.get(key)
        if value is None:
            continue
        if type(value) is int:  # the usual case first: this runs ~5 times per model call
            return value if value > 0 else 0
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        return max(0, int(value))
    return None


def _first_str(attrs: Mapping[str, Any], keys: tuple[str, ...]) -> str:
    for key in keys:
        value = attrs.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _usage(
    attrs: Mapping[str, Any], scope: str, provider: str
) -> tuple[UsageSnapshot | None, int, bool]:
    """(usage, reasoning tokens, whether a cache count was reported)."""
    total_in: int | None
    output: int | None
    total_in = attrs.get(sc.GEN_AI_USAGE_INPUT_TOKENS)
    output = attrs.get(sc.GEN_AI_USAGE_OUTPUT_TOKENS)
    if type(total_in) is int and type(output) is int:
        # The current conventions' spelling, read on every call: no key loops.
        total_in = total_in if total_in > 0 else 0
        output = output if output > 0 else 0
        semconv = True
    else:
        total_in = _int(attrs, _INPUT_KEYS)
        output = _int(attrs, _OUTPUT_KEYS)
        semconv = total_in is not None or output is not None
    if semconv:
        # Each first spelling inline too (an int there is the answer _int gives).
        value = attrs.get(sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS)
        cache_read = (
            (value if value > 0 else 0) if type(value) is int else _int(attrs, _CACHE_READ_KEYS)
        )
        value = attrs.get(sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS)
        cache_write = (
            (value if value > 0 else 0) if type(value) is int else _int(attrs, _CACHE_WRITE_KEYS)
        )
        value = attrs.get(sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS)
        reasoning = (
            (value if value > 0 else 0) if type(value) is int else _int(attrs, _REASONING_KEYS) or 0
        )
    else:
        total_in = _int(attrs, (OI_PROMPT,))
        output = _int(attrs, (OI_COMPLETION,))
        if total_in is None and output is None:
            return None, 0, True
        cache_read = _int(attrs, (OI_CACHE_READ,))
        cache_write = _int(attrs, (OI_CACHE_WRITE,))
        reasoning = _int(attrs, (OI_REASONING,)) or 0
    total_in = total_in or 0
    cached = (cache_read or 0) + (cache_write or 0)
    if (scope.startswith(OPENLIT_SCOPE_PREFIX) and provider == "anthropic") or cached > total_in:
        # OpenLIT copies Anthropic's own input_tokens, which leaves the cache out;
        # any producer whose cache counts exceed its input total did the same.
        total_in += cached
    usage = usage_from_totals(total_in, output or 0, cache_read or 0, cache_write or 0)
    return usage, reasoning, cache_read is not None or cache_write is not None


# The current spellings and the older ones _usage_plain must see absent, as names
# of this module (one global load each on every call instead of two).
_IN: Final = sc.GEN_AI_USAGE_INPUT_TOKENS
_OUT: Final = sc.GEN_AI_USAGE_OUTPUT_TOKENS
_READ: Final = sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS
_WRITE: Final = sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS
_REASONING: Final = sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS
_READ_OLD: Final = _CACHE_READ_KEYS[1]
_WRITE_OLD: Final = _CACHE_WRITE_KEYS[1]
_WRITE_OLDER: Final = _CACHE_WRITE_KEYS[2]
_REASONING_OLD: Final = _REASONING_KEYS[1]


def _usage_plain(attrs: Mapping[str, Any], scope: str) -> tuple[UsageSnapshot, int, bool] | None:
    """``_usage`` for the usual reading, in straight-line code; None for anything else.

    The usual reading: the current GenAI spellings, each count a non-negative
    int or absent in every spelling, from a producer without quirks. Then the
    cache counts cannot exceed the input total once ``_usage``'s rule added
    them back, so ``usage_from_totals``' clamps change nothing and the
    snapshot is made directly. Anything else (older spellings, negative or
    non-int counts, OpenLIT) returns None and ``_usage`` reads it.
    """
    get = attrs.get
    total_in = get(_IN)
    output = get(_OUT)
    if (
        type(total_in) is not int
        or type(output) is not int
        or total_in < 0
        or output < 0
        or scope.startswith(OPENLIT_SCOPE_PREFIX)
    ):
        return None
    # Each detail count: a non-negative int, or absent in both (all) its spellings.
    read = get(_READ)
    if type(read) is int:
        if read < 0:
            return None
    elif read is not None or _READ_OLD in attrs:
        return None
    write = get(_WRITE)
    if type(write) is int:
        if write < 0:
            return None
    elif write is not None or _WRITE_OLD in attrs or _WRITE_OLDER in attrs:
        return None
    reasoning = get(_REASONING)
    if type(reasoning) is int:
        if reasoning < 0:
            return None
    elif reasoning is not None or _REASONING_OLD in attrs:
        return None
    cache_read = read or 0
    cache_write = write or 0
    cached = cache_read + cache_write
    if cached > total_in:
        total_in += cached  # a producer that left the cache out of its input total
    usage = UsageSnapshot._checked(total_in - cached, output, cache_write, cache_read)
    return usage, reasoning or 0, read is not None or write is not None


def warn_no_cache(scope: str) -> None:
    """Say once per producer scope that its reading, the only one of a call, has no cache count.

    Called where a reading is booked, not where it is read: when an exact
    reading of the same call exists (a client instrumentation's span inside
    a framework's), that one is booked and nothing needs saying.
    """
    with _warn_lock:
        if scope in _warned_scopes:
            return
        _warned_scopes.add(scope)
    _log.warning(
        "spans from %s carry no cache-token count: cached input is priced at the full "
        "input rate (the README's support table names an instrumentation that reports it)",
        scope,
    )


def read_call(
    name: str, attributes: Mapping[str, Any] | None, scope_name: str | None = None
) -> CallReading | None:
    """Model, provider and usage of a model-call span; None if it is not one.

    Usable at start (``usage`` is then None) and at end, where spans that learn
    their operation late (OpenLLMetry's ``openai.response``) are recognised too.

    Example::

        >>> reading = read_call("ChatCompletion", {
        ...     "openinference.span.kind": "LLM", "llm.model_name": "gpt-4o",
        ...     "llm.token_count.prompt": 120, "llm.token_count.completion": 30,
        ...     "llm.token_count.prompt_details.cache_read": 100}, None)
        >>> reading.model, reading.usage.input_tokens, reading.usage.cache_read_tokens
        ('gpt-4o', 20, 100)
    """
    attrs = attributes or {}
    # Read at the end of every model call: the GenAI operation (every current client
    # instrumentation's) first, inline; anything else as _decide says.
    operation = attrs.get(sc.GEN_AI_OPERATION_NAME)
    if type(operation) is str:
        if operation not in sc.MODEL_OPERATIONS:
            return None
    elif not _decide(name, attrs, at_end=True):
        return None
    scope = scope_name or ""
    model = model_from_attributes(attrs)
    provider = provider_from_attributes(attrs)
    responded = attrs.get(sc.GEN_AI_RESPONSE_MODEL)
    if responded is not None and responded != model and type(responded) is str:
        model = booked_model(model, responded, provider)
    found = _usage_plain(attrs, scope)
    usage, reasoning, cached = found if found is not None else _usage(attrs, scope, provider)
    # tuple.__new__: a NamedTuple's own __new__ is Python code with keyword handling.
    return tuple.__new__(
        CallReading, (model, provider, usage, reasoning, cached or scope not in NO_CACHE_SCOPES)
    )


def booked_model(requested: str, responded: str | None, provider: str = "") -> str:
    """The model a finished call is booked under, from the one it asked for and its answer's.

    The one asked for when the response names none or the same; otherwise as
    :func:`techrevati.runtime.pricing.booked_name` decides (the response's
    model when it has a price, unless your registered price for the name asked
    for, or the same model at the same price, keeps that name). Only a version
    tag makes two names one model (:func:`same_model`): ``gpt-4o-mini`` is not
    ``gpt-4o``.

    Example::

        >>> booked_model("gpt-4o-mini", "gpt-4o-mini-2024-07-18")
        'gpt-4o-mini'
        >>> booked_model("prod-chat", "gpt-4o-mini-2024-07-18", "openai")
        'gpt-4o-mini-2024-07-18'
        >>> booked_model("gpt-4o", "gpt-4o-mini-2024-07-18", "openai")
        'gpt-4o-mini-2024-07-18'
        >>> booked_model("gpt-4o-mini", "acme/custom-label", "openai")
        'gpt-4o-mini'
    """
    if not responded or responded == requested or not requested:
        return requested or responded or ""
    return booked_name(requested, responded, provider)


def more_exact(candidate: UsageSnapshot | None, booked: UsageSnapshot | None) -> bool:
    """Whether ``candidate`` is the better reading of a call that ``booked`` also describes.

    Two spans of one request (a framework's and its client's) may read it
    differently: a producer that reports no cache counts prices cached input
    at the full rate. The reading with cache detail is the exact one; a
    reading beats none at all; otherwise the one already chosen stays.

    Example::

        >>> exact = UsageSnapshot(input_tokens=20, cache_read_tokens=100, output_tokens=30)
        >>> coarse = UsageSnapshot(input_tokens=120, output_tokens=30)
        >>> more_exact(exact, coarse), more_exact(coarse, exact)
        (True, False)
    """
    if candidate is None:
        return False
    if booked is None:
        return True
    cached = candidate.cache_read_tokens + candidate.cache_write_tokens
    return cached > 0 and booked.cache_read_tokens + booked.cache_write_tokens == 0


class _Scope(Protocol):
    @property
    def name(self) -> str: ...


class _SpanLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def attributes(self) -> Mapping[str, Any] | None: ...

    @property
    def instrumentation_scope(self) -> _Scope | None: ...


def read_span(span: _SpanLike) -> CallReading | None:
    """``read_call`` for an SDK span (started or finished): name, attributes, scope.

    Example::

        reading = read_span(readable_span)   # in a processor's on_end
    """
    scope = span.instrumentation_scope
    return read_call(span.name, span_attributes(span), scope.name if scope is not None else None)


def is_same_call(*, ours: bool, enclosing_ours: bool | None, enclosing_taken: bool) -> bool:
    """Whether a model span describes the same call as the model call enclosing it.

    ``ours`` says the span is this package's (our turn); ``enclosing_ours``
    whether the nearest model call enclosing it in its session is ours (None
    when no model call encloses it); ``enclosing_taken`` whether that enclosing
    call of ours already has the one library span that describes it.

    The rule: our own turn is always a new call; a library span inside a
    library call is that call; the *first* library span inside our turn is our
    turn (the ``@agent_turn`` around one ``client.chat.completions.create``),
    any further one is a new call. (Live, the limits also merge two library
    spans that overlap on one thread or task; a file does not say which thread
    a span ran on, so the report cannot.)

    Example::

        >>> is_same_call(ours=False, enclosing_ours=True, enclosing_taken=False)
        True
        >>> is_same_call(ours=False, enclosing_ours=True, enclosing_taken=True)
        False
        >>> is_same_call(ours=True, enclosing_ours=True, enclosing_taken=False)
        False
    """
    if ours or enclosing_ours is None:
        return False
    if not enclosing_ours:
        return True
    return not enclosing_taken
