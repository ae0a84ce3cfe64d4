"""Token usage, model and text read from provider responses by shape, not by type.

``@agent_turn`` reads what a model call cost from whatever the decorated
function returns or yields, without importing ``openai`` or ``anthropic``:
SDK objects (attribute access) and the plain dicts of the same JSON shapes
(key access) are read alike. Recognised shapes:

* OpenAI chat completions: ``usage.prompt_tokens`` (cached tokens included),
  ``usage.prompt_tokens_details.cached_tokens`` (and ``cache_write_tokens``
  where reported), ``usage.completion_tokens``
  (reasoning included), ``usage.completion_tokens_details.reasoning_tokens``;
  streamed, the final chunk of ``stream_options={"include_usage": True}``.
* OpenAI responses: ``usage.input_tokens`` (cached included),
  ``usage.input_tokens_details.cached_tokens``, ``usage.output_tokens``,
  ``usage.output_tokens_details.reasoning_tokens``; streamed, the
  ``response.completed`` event.
* Anthropic messages: ``usage.input_tokens`` (cache *excluded*),
  ``cache_read_input_tokens``, ``cache_creation_input_tokens``,
  ``output_tokens``; streamed, ``message_start`` then cumulative
  ``message_delta`` usage.
* A ``UsageSnapshot``, or an object whose ``usage`` is one.

Everything becomes a ``UsageSnapshot``, whose counts are disjoint (plain input,
cache write, cache read, output), so each token is priced once at its own rate;
``telemetry.tokens`` turns that into the semconv attributes. Reading never
raises: an unreadable response is simply "no usage", and a count in it that
is no count (``"many"``, ``-1000``) is warned about once per field while the
block's other counts are kept.

Example::

    >>> u = extract_usage({"model": "gpt-4o", "usage": {
    ...     "prompt_tokens": 5000, "completion_tokens": 100,
    ...     "prompt_tokens_details": {"cached_tokens": 4000}}})
    >>> (u.input_tokens, u.cache_read_tokens, u.output_tokens)
    (1000, 4000, 100)
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Mapping
from typing import Any, NamedTuple, cast

from ...caller import warn_user
from ...usage_tracking import UsageSnapshot
from .tokens import MAX_TOKEN_COUNT as _MAX

__all__ = [
    "Extracted",
    "StreamReader",
    "extract",
    "extract_model",
    "extract_output",
    "extract_text",
    "extract_usage",
    "usage_of",
]


def _get(obj: object, key: str) -> Any:
    """``obj[key]`` for mappings, ``obj.key`` otherwise; None when absent.

    This runs several times per model call, so the common cases (a dict, an
    SDK object) come first and the slow ABC check only for the rare
    non-dict mapping.
    """
    kind = type(obj)
    if kind is dict:
        return obj.get(key)  # type: ignore[attr-defined]
    if obj is None:
        return None
    try:
        value = getattr(obj, key, None)
    except Exception:  # a property that raises is "absent", never the caller's error
        return None
    if value is None and _is_mapping(kind):
        return cast("Mapping[str, Any]", obj).get(key)
    return value


_MAPPING_TYPES: dict[type, bool] = {}


def _is_mapping(kind: type) -> bool:
    # isinstance(x, Mapping) is an ABC check; remember the answer per type.
    found = _MAPPING_TYPES.get(kind)
    if found is None:
        found = issubclass(kind, Mapping)
        if len(_MAPPING_TYPES) < 256:
            _MAPPING_TYPES[kind] = found
    return found


def _count(value: object, key: str = "") -> int | None:
    """A token count, or None when ``value`` is absent or not a count.

    A value that is there but is no count (junk, a bool, a negative number) is
    the provider's mistake, not ours to raise about: it is said once per field
    (``_unreadable``), a negative one read as 0 and junk as absent, so the
    block's other counts are still booked.
    """
    if type(value) is int:  # the usual case first: this runs several times per call
        return value if 0 <= value <= _MAX else (_MAX if value > 0 else _unreadable(key, value))
    if value is None:
        return None
    if isinstance(value, bool):
        _unreadable(key, value)
        return None
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        # an int subclass (an IntEnum) or a whole float becomes a plain int
        return min(int(value), _MAX) if value >= 0 else _unreadable(key, value)
    _unreadable(key, value)
    return None


#: Fields already warned about: one warning each per process (the key set is
#: the handful of usage field names, but a hostile response could invent more).
_WARNED_FIELDS: set[str] = set()
_warn_lock = threading.Lock()


def _unreadable(key: str, value: object) -> int:
    """Say once per field that a response's usage count is no count; 0 to read instead."""
    with _warn_lock:
        if key in _WARNED_FIELDS or len(_WARNED_FIELDS) >= 64:
            return 0
        _WARNED_FIELDS.add(key)
    warn_user(
        f"a response's token usage has {key or 'a count'}={value!r:.80}, which is not a "
        "token count: it was not read (the provider, a proxy or a stand-in client filled "
        "it wrongly); the call's other counts were booked, so it may be booked below its "
        "cost",
        RuntimeWarning,
    )
    return 0


def _n(obj: object, key: str) -> int:
    if obj is None:
        return 0
    value = _get(obj, key)
    if type(value) is int and 0 <= value <= _MAX:  # the usual case, without a second call
        return value
    return _count(value, key) or 0


class Extracted(NamedTuple):
    """What one response says about itself; any part may be missing."""

    usage: UsageSnapshot | None = None
    model: str | None = None
    reasoning_tokens: int = 0


_NOTHING = Extracted()
_tuple_new = tuple.__new__
#: Every count below comes from ``_count`` / ``_n``: already a non-negative int.
_snapshot = UsageSnapshot._checked
_SCALARS = frozenset({str, bytes, int, float, bool})


def _openai_snapshot(total_input: int, details: object, output: int) -> UsageSnapshot:
    """Split OpenAI's total input into the disjoint plain / cache-read / cache-write counts.

    Cache reads (``cached_tokens``) and, where reported, cache writes
    (``cache_write_tokens``) are parts of the total, so they are taken out of
    it; clamped so inconsistent numbers can never price below zero.
    """
    if details is None:
        return _snapshot(total_input, output, 0, 0)
    cached = min(_n(details, "cached_tokens"), total_input)
    written = min(_n(details, "cache_write_tokens"), total_input - cached)
    return _snapshot(total_input - cached - written, output, written, cached)


def _usage_block(usage: object) -> tuple[UsageSnapshot, int, bool] | None:
    """Read one provider ``usage`` block: (snapshot, reasoning tokens, chat shape), or None."""
    if usage is None:
        return None
    if isinstance(usage, UsageSnapshot):
        return usage, 0, False
    raw_prompt = _get(usage, "prompt_tokens")
    prompt = _count(raw_prompt, "prompt_tokens")
    if (
        prompt is None
        and raw_prompt is not None
        and _get(usage, "input_tokens") is None
        and _get(usage, "completion_tokens") is not None
    ):
        prompt = 0  # unreadable (said once): the completion count is still the call's
    if prompt is not None:
        # OpenAI chat completions: prompt_tokens contains the cached tokens.
        return (
            _openai_snapshot(
                prompt, _get(usage, "prompt_tokens_details"), _n(usage, "completion_tokens")
            ),
            _n(_get(usage, "completion_tokens_details"), "reasoning_tokens"),
            not isinstance(usage, Mapping),
        )
    inp = _count(_get(usage, "input_tokens"), "input_tokens")
    out = _count(_get(usage, "output_tokens"), "output_tokens")
    if inp is None and out is None:
        return None
    inp = inp or 0
    input_details = _get(usage, "input_tokens_details")
    if input_details is not None:
        # OpenAI responses: input_tokens contains the cached tokens, like prompt_tokens.
        return (
            _openai_snapshot(inp, input_details, out or 0),
            _n(_get(usage, "output_tokens_details"), "reasoning_tokens"),
            False,
        )
    # Anthropic: input_tokens excludes both cache counts, which are disjoint already.
    return (
        _snapshot(
            inp,
            out or 0,
            _n(usage, "cache_creation_input_tokens"),
            _n(usage, "cache_read_input_tokens"),
        ),
        0,
        False,
    )


def _model(obj: object) -> str | None:
    model = _get(obj, "model")
    return model if isinstance(model, str) and model else None


def extract(obj: object) -> Extracted:
    """Usage, model and reasoning tokens of a whole (non-streamed) response.

    Example::

        >>> e = extract({"model": "claude-x", "usage": {"input_tokens": 10,
        ...     "cache_creation_input_tokens": 2000, "output_tokens": 5}})
        >>> e.model, e.usage.cache_write_tokens, e.usage.input_tokens
        ('claude-x', 2000, 10)
    """
    kind = type(obj)
    if kind in _CHAT_OBJECTS:
        found = _chat_object(obj)
        if found is not None:
            return found
    if obj is None or kind in _SCALARS:
        return _NOTHING
    if isinstance(obj, UsageSnapshot):
        return Extracted(obj)
    try:
        block = _usage_block(_get(obj, "usage"))
        if block is None and _get(obj, "type") == "message_start":
            return extract(_get(obj, "message"))
        if block is None:
            response = _get(obj, "response")  # a responses-API stream event
            if response is not None and response is not obj:
                return extract(response)
        model = _model(obj)
    except Exception:
        return _NOTHING
    if block is None:
        return Extracted(None, model) if model else _NOTHING
    if block[2] and not isinstance(obj, Mapping) and len(_CHAT_OBJECTS) < 256:
        _CHAT_OBJECTS.add(kind)
    return Extracted(block[0], model, block[1])


#: Response types (not mappings) whose usage was last read as a chat completion's:
#: the next response of the type is read straight through by ``_chat_object``.
_CHAT_OBJECTS: set[type] = set()


def _chat_object(obj: Any) -> Extracted | None:
    """A chat completion object read in straight-line attribute access, or None.

    The same reading as ``extract``'s for this shape (``_usage_block``'s first
    branch), without its per-field dispatch; this runs on every turn of an
    OpenAI-style client. Anything unexpected (no usage, a count that is not a
    non-negative int, a property that raises) returns None, and the caller
    takes the general path.
    """
    try:
        usage = obj.usage
        prompt = usage.prompt_tokens
        output = usage.completion_tokens
        details = getattr(usage, "prompt_tokens_details", None)
        reasoning_details = getattr(usage, "completion_tokens_details", None)
        model = getattr(obj, "model", None)
    except Exception:
        return None
    if not (
        type(prompt) is int and type(output) is int and 0 <= prompt <= _MAX and 0 <= output <= _MAX
    ):
        return None  # a count the general reader clamps or refuses
    named = model if type(model) is str and model else None
    if details is None and reasoning_details is None:
        return _tuple_new(Extracted, (_snapshot(prompt, output, 0, 0), named, 0))
    try:
        # The detail counts read straight too (what _n reads, for an SDK object).
        cached = None if details is None else getattr(details, "cached_tokens", None)
        written = None if details is None else getattr(details, "cache_write_tokens", None)
        reasoning = (
            None
            if reasoning_details is None
            else getattr(reasoning_details, "reasoning_tokens", None)
        )
    except Exception:
        return None  # a property that raises: the general reading, which calls it absent
    if (
        (cached is None or (type(cached) is int and 0 <= cached <= _MAX))
        and (written is None or (type(written) is int and 0 <= written <= _MAX))
        and (reasoning is None or (type(reasoning) is int and 0 <= reasoning <= _MAX))
        # An absent count of a mapping is read with .get by _get: left to it.
        and (
            (cached is not None and written is not None)
            or details is None
            or not _is_mapping(type(details))
        )
        and (
            reasoning is not None
            or reasoning_details is None
            or not _is_mapping(type(reasoning_details))
        )
    ):
        # Every count a plain int in range or absent: the numbers _openai_snapshot
        # and _n give (an absent count is 0; the cache counts clamped to the input).
        cached = 0 if cached is None else cached if cached <= prompt else prompt
        written = 0 if written is None else min(written, prompt - cached)
        snapshot = _snapshot(prompt - cached - written, output, written, cached)
        return _tuple_new(Extracted, (snapshot, named, reasoning or 0))
    # Anything else (a count that is None, junk, or a mapping's): the general readers.
    if details is None:
        snapshot = _snapshot(prompt, output, 0, 0)
    else:
        snapshot = _openai_snapshot(prompt, details, output)
    found = 0 if reasoning_details is None else _n(reasoning_details, "reasoning_tokens")
    return _tuple_new(Extracted, (snapshot, named, found))  # Extracted(...), minus a call


def extract_usage(obj: object) -> UsageSnapshot | None:
    """The ``UsageSnapshot`` a response reports, or None.

    Example::

        >>> extract_usage({"usage": {"input_tokens": 7, "output_tokens": 3}})
        UsageSnapshot(input_tokens=7, output_tokens=3, cache_write_tokens=0, cache_read_tokens=0)
    """
    return extract(obj).usage


def usage_of(value: object) -> UsageSnapshot | None:
    """A snapshot from a snapshot, a provider ``usage`` block or a whole response.

    Example::

        >>> usage_of({"prompt_tokens": 10, "completion_tokens": 2}).output_tokens
        2
    """
    if isinstance(value, UsageSnapshot):
        return value
    try:
        block = _usage_block(value)
    except Exception:
        block = None
    return block[0] if block is not None else extract(value).usage


def extract_model(obj: object) -> str | None:
    """The model a response names (``model`` field), or None."""
    return extract(obj).model


def extract_text(obj: object) -> str | None:
    """The assistant text of a whole response (for content capture), or None.

    Example::

        >>> extract_text({"choices": [{"message": {"content": "hi"}}]})
        'hi'
    """
    if isinstance(obj, str):
        return obj
    try:
        choices = _get(obj, "choices")
        if isinstance(choices, list | tuple) and choices:
            content = _get(_get(choices[0], "message"), "content")
            return content if isinstance(content, str) else None
        content = _get(obj, "content")
        if isinstance(content, list | tuple):  # Anthropic content blocks
            texts = [t for t in (_get(b, "text") for b in content) if isinstance(t, str)]
            return "".join(texts) if texts else None
        text = _get(obj, "output_text")  # OpenAI responses convenience field
        return text if isinstance(text, str) else None
    except Exception:
        return None


def extract_output(obj: object) -> str | None:
    """All the output a whole response carries, what it is billed for as output; or None.

    What a response without usage is estimated from, by the rules a stream's
    chunks are read by (``StreamReader.output``): every choice's text, tool
    calls (names and arguments), refusal and reasoning (Chat Completions);
    legacy completions' text; the Responses API's output items (message text
    and refusals, function and tool call arguments or input, reasoning summary
    and text); Anthropic's text, tool input (as JSON) and thinking blocks.

    Example::

        >>> extract_output({"choices": [{"message": {"content": None, "tool_calls": [
        ...     {"function": {"name": "f", "arguments": '{"a": 1}'}}]}}]})
        'f{"a": 1}'
        >>> extract_output({"content": [{"type": "thinking", "thinking": "hm "},
        ...     {"type": "tool_use", "name": "f", "input": {"a": 1}}]})
        'hm {"a": 1}'
    """
    out: list[str] = []
    # Junk where output is expected ends the reading: what was read before it still counts.
    with contextlib.suppress(Exception):
        _response_output(obj, out)
    return "".join(out) if out else None


_RESPONSE_KEYS = ("choices", "output", "content")
_ITEM_KEYS = ("arguments", "input", "code", "content", "summary")
_PART_KEYS = ("text", "refusal")


def _response_output(obj: object, out: list[str]) -> None:
    if isinstance(obj, str):
        if obj:
            out.append(obj)
        return
    if obj is None:
        return
    fields = _fields(obj, _RESPONSE_KEYS)
    if _choices_output(fields, out, whole=True):
        return
    items = fields.get("output")  # the Responses API
    if type(items) is list or isinstance(items, tuple):
        for item in items:
            _item_output(item, out)
        return
    blocks = fields.get("content")  # an Anthropic message
    if type(blocks) is list or isinstance(blocks, tuple):
        for block in blocks:
            _anthropic_output(_fields(block, _DELTA_KEYS), out)


def _item_output(item: object, out: list[str]) -> None:
    """One Responses output item: what its stream's ``response.*.delta`` events carry."""
    fields = _fields(item, _ITEM_KEYS)
    # function_call / mcp_call arguments, custom_tool_call input, code_interpreter_call code
    for key in ("arguments", "input", "code"):
        text = fields.get(key)
        if isinstance(text, str) and text:
            out.append(text)
    # a message's output_text and refusal parts; a reasoning item's summary and text
    for key in ("content", "summary"):
        parts = fields.get(key)
        if type(parts) is list or isinstance(parts, tuple):
            for part in parts:
                found = _fields(part, _PART_KEYS)
                for name in _PART_KEYS:
                    text = found.get(name)
                    if isinstance(text, str) and text:
                        out.append(text)


def _delta_text(chunk: object) -> str | None:
    """The assistant text of one chunk (first choice), for content capture."""
    if isinstance(chunk, str):
        return chunk
    choices = _get(chunk, "choices")
    if isinstance(choices, list | tuple) and choices:
        text = _get(_get(choices[0], "delta"), "content")
        return text if isinstance(text, str) else None
    delta = _get(chunk, "delta")
    if isinstance(delta, str):  # responses: response.output_text.delta
        return delta
    text = _get(delta, "text")  # anthropic: content_block_delta / text_delta
    return text if isinstance(text, str) else None


def _fields(obj: object, keys: tuple[str, ...]) -> Mapping[str, Any]:
    """``obj``'s keys as a mapping, for the per-chunk reads of ``_output_texts``.

    A dict or another mapping as it is; a pydantic v2 model (the SDKs' chunks)
    as its fields and extras, the dicts it keeps them in: reading an attribute
    it lacks (``reasoning_content`` of OpenAI's delta, ``choices`` of an
    Anthropic event) raises inside pydantic, microseconds on every chunk. Any
    other object: ``keys`` read by attribute.
    """
    if type(obj) is dict:
        return obj
    extra = getattr(obj, "__pydantic_extra__", None)
    if type(extra) is dict:
        fields = getattr(obj, "__dict__", None)
        if type(fields) is dict:
            return {**fields, **extra} if extra else fields
    if _is_mapping(type(obj)):
        return cast("Mapping[str, Any]", obj)
    return {key: _get(obj, key) for key in keys}


_CHUNK_KEYS = ("choices", "delta")
_CHOICE_KEYS = ("delta", "message", "text")
_DELTA_KEYS = (
    "content",
    "tool_calls",
    "function_call",
    "refusal",
    "reasoning_content",
    "reasoning",
    "type",
    "text",
    "partial_json",
    "thinking",
    "input",
)
_FUNCTION_KEYS = ("name", "arguments")

# Where Anthropic's output is, by kind: each content_block_delta a stream sends,
# and each content block of a whole message (a signature or a citation is not
# generated text; a redacted thinking block is ciphertext, no measure of it).
_ANTHROPIC_OUTPUT = {
    "text_delta": "text",
    "input_json_delta": "partial_json",
    "thinking_delta": "thinking",
    "text": "text",
    "tool_use": "input",
    "server_tool_use": "input",
    "thinking": "thinking",
}


def _output_texts(chunk: object, out: list[str]) -> None:
    """Append all the output one chunk streams, what the model is billed for.

    ``extract_output``'s rules, read per chunk: every choice's text, tool calls
    (names and arguments), refusal and streamed reasoning (Chat Completions);
    legacy completions' text; any ``response.*.delta`` string (Responses: text,
    function call arguments, reasoning); Anthropic's text, tool input JSON and
    thinking deltas.
    """
    if isinstance(chunk, str):
        out.append(chunk)
        return
    if chunk is None:
        return
    fields = _fields(chunk, _CHUNK_KEYS)
    if _choices_output(fields, out, whole=False):
        return
    delta = fields.get("delta")
    if isinstance(delta, str):
        if delta:
            out.append(delta)
        return
    if delta is not None:
        _anthropic_output(_fields(delta, _DELTA_KEYS), out)


def _anthropic_output(fields: Mapping[str, Any], out: list[str]) -> None:
    """A streamed delta's or a whole message's content block's output (``_ANTHROPIC_OUTPUT``)."""
    kind = fields.get("type")
    key = _ANTHROPIC_OUTPUT.get(kind) if type(kind) is str else None
    if key is None:
        return
    text = fields.get(key)
    if isinstance(text, str):
        if text:
            out.append(text)
    elif key == "input" and text:
        # A whole message's tool input arrives parsed: the JSON the model wrote, near enough.
        out.append(json.dumps(text, ensure_ascii=False, default=str))


def _add_output(chunk: object, out: list[str]) -> None:
    # Read apart from the usage: junk where output is expected must not hide it.
    try:
        _output_texts(chunk, out)
    except Exception:
        return


def _choices_output(fields: Mapping[str, Any], out: list[str], whole: bool) -> bool:
    """Every choice's output (Chat Completions, completions); False: it has no choices."""
    choices = fields.get("choices")
    if type(choices) is list or isinstance(choices, tuple):
        for choice in choices:
            _choice_output(choice, out, whole)
        return True
    return False


def _choice_output(choice: object, out: list[str], whole: bool) -> None:
    """A choice's output: a stream chunk's ``delta``, a whole response's ``message``.

    Each only where it belongs: a server that ends a stream with a chunk carrying
    the whole ``message`` besides the deltas would have its text counted twice.
    """
    fields = _fields(choice, _CHOICE_KEYS)
    delta = fields.get("message" if whole else "delta")  # read the same way either way
    if delta is None:
        text = fields.get("text")  # legacy completions
        if isinstance(text, str) and text:
            out.append(text)
        return
    fields = _fields(delta, _DELTA_KEYS)
    text = fields.get("content")
    if isinstance(text, str) and text:  # first: most chunks stream text alone
        out.append(text)
    calls = fields.get("tool_calls")
    if type(calls) is list or isinstance(calls, tuple):
        for call in calls:
            function = _get(call, "function")
            if function is not None:
                _function_output(function, out)
    function = fields.get("function_call")  # the legacy form of one tool call
    if function is not None:
        _function_output(function, out)
    refusal = fields.get("refusal")
    if isinstance(refusal, str) and refusal:
        out.append(refusal)
    # Reasoning streamed as text (DeepSeek, vLLM: reasoning_content; OpenRouter,
    # newer vLLM: reasoning). A server sending both sends the same text twice.
    thought = fields.get("reasoning_content") or fields.get("reasoning")
    if isinstance(thought, str) and thought:
        out.append(thought)


def _function_output(function: object, out: list[str]) -> None:
    fields = _fields(function, _FUNCTION_KEYS)
    for key in _FUNCTION_KEYS:
        text = fields.get(key)
        if isinstance(text, str) and text:
            out.append(text)


class StreamReader:
    """Collects usage, model and (optionally) text from the chunks of a stream.

    Feed every chunk to ``add``; read ``usage`` / ``model`` at the end.
    ``collect_text`` keeps the assistant text (``text``, content capture);
    ``collect_output`` all the output streamed (``output``: tool calls, every
    choice, reasoning too), what a stream without usage is estimated from. The
    last chunk that reports usage wins, except Anthropic's, whose
    ``message_start`` carries the input and cache counts and whose
    ``message_delta`` events carry cumulative counts that override them field
    by field.

    Example::

        >>> r = StreamReader()
        >>> r.add({"type": "message_start", "message": {"model": "claude-x",
        ...        "usage": {"input_tokens": 12, "cache_read_input_tokens": 900,
        ...                  "output_tokens": 1}}})
        >>> r.add({"type": "message_delta", "usage": {"output_tokens": 40}})
        >>> u = r.usage
        >>> (u.input_tokens, u.cache_read_tokens, u.output_tokens)
        (12, 900, 40)
    """

    __slots__ = (
        "_anthropic",
        "_final",
        "_outputs",
        "_texts",
        "model",
        "reasoning_tokens",
        "usage",
    )

    def __init__(self, *, collect_text: bool = False, collect_output: bool = False) -> None:
        self.usage: UsageSnapshot | None = None
        self.model: str | None = None
        self.reasoning_tokens = 0
        self._anthropic: dict[str, int] | None = None
        self._final = False
        self._texts: list[str] | None = [] if collect_text else None
        self._outputs: list[str] | None = [] if collect_output else None

    def add(self, chunk: object) -> None:
        """Take in one chunk; never raises."""
        outputs = self._outputs
        if outputs is not None:
            _add_output(chunk, outputs)
        try:
            self._add(chunk)
        except Exception:
            return

    def _add(self, chunk: object) -> None:
        if self._texts is not None:
            text = _delta_text(chunk)
            if text:
                self._texts.append(text)
        if chunk is None or isinstance(chunk, str | bytes):
            return
        kind = _get(chunk, "type")
        if kind == "message_start":
            message = _get(chunk, "message")
            self.model = self.model or _model(message)
            self._merge_anthropic(_get(message, "usage"))
            return
        if kind == "message_delta":
            self._final = True
            self._merge_anthropic(_get(chunk, "usage"))
            return
        found = extract(chunk)
        if found.model and not self.model:
            self.model = found.model
        if found.usage is not None:
            self.usage = found.usage
            self.reasoning_tokens = found.reasoning_tokens

    def _merge_anthropic(self, usage: object) -> None:
        if usage is None:
            return
        fields = self._anthropic if self._anthropic is not None else {}
        for key in (
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        ):
            # message_delta counts are cumulative and may be null: null keeps the start's.
            value = _count(_get(usage, key), key)
            if value is not None:
                fields[key] = value
        self._anthropic = fields
        self.usage = UsageSnapshot(
            input_tokens=fields.get("input_tokens", 0),
            output_tokens=fields.get("output_tokens", 0),
            cache_write_tokens=fields.get("cache_creation_input_tokens", 0),
            cache_read_tokens=fields.get("cache_read_input_tokens", 0),
        )

    @property
    def unfinished(self) -> bool:
        """An Anthropic stream that ended before its ``message_delta``: its usage is the
        start's (input and cache counts, a placeholder output count), not the call's."""
        return self._anthropic is not None and not self._final

    @property
    def text(self) -> str | None:
        """The streamed assistant text, when collected and any was seen."""
        return "".join(self._texts) if self._texts else None

    @property
    def output(self) -> str | None:
        """All the output streamed, when collected and any was seen."""
        return "".join(self._outputs) if self._outputs else None


def sse_payloads(body: bytes) -> list[object]:
    """The JSON data of each event of a server-sent event body, in order.

    A streamed response whose caller read its bytes itself (``iter_lines()``
    of a raw response) is read here once it ended, so its events can be fed to
    a ``StreamReader``. Data that is not JSON (OpenAI's closing ``[DONE]``) is
    left out.

    Example::

        >>> sse_payloads(b'event: ping\\ndata: {"a": 1}\\n\\ndata: [DONE]\\n\\n')
        [{'a': 1}]
    """
    found: list[object] = []
    data: list[str] = []
    for line in [*body.decode("utf-8", "replace").splitlines(), ""]:
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line and data:
            # A blank line ends an event; its data lines join with newlines.
            with contextlib.suppress(ValueError):
                found.append(json.loads("\n".join(data)))
            data = []
    return found
