"""What a model call is expected to cost, read from its request before it is sent.

Used where the client guard sees the request: a reservation holds at least
this upper bound (at once for a model the session has not learned yet, else
when another call is admitted while it runs: ``defer``), settled to the actual
cost when the response arrives. The same numbers
book a call whose usage never arrives (a stream without ``include_usage``, a
response whose usage a proxy dropped), with the output the guard saw streamed or
in the response counted as output (text, tool calls and reasoning, of every
choice: ``StreamReader.output``, ``extract_output``).

The rule, stated once:

* input tokens ≈ characters of the request's JSON body fields that carry input
  (``messages``, ``input``, ``prompt``, ``system``, ``instructions``, ``tools``)
  divided by :data:`CHARS_PER_TOKEN`, rounded up, each character outside ASCII
  counting as a token of its own (no tokenizer: a slight overestimate for
  English and for accented Latin text, which is what a reservation wants;
  Chinese, Japanese and Korean run about a token a character, four times what
  characters / 4 would say);
* output tokens = the request's own cap (``max_tokens``,
  ``max_completion_tokens``, ``max_output_tokens``), else
  :data:`DEFAULT_OUTPUT_TOKENS` for the provider (an assumption, not a bound:
  a request without a cap can produce more, and is then booked at its actual
  usage);
* priced by the normal price resolution; an unpriced model has no estimate.

Example::

    >>> from techrevati.runtime import ModelPricing, register_pricing
    >>> register_pricing("doc-est", ModelPricing(1.0, 2.0))
    >>> body = {"model": "doc-est", "max_tokens": 100,
    ...         "messages": [{"role": "user", "content": "x" * 400}]}
    >>> request_tokens(body, "openai")[1]
    100
    >>> round(request_estimate_usd("doc-est", body, "openai"), 6) > 0
    True
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ...pricing import has_pricing, price_call
from ...usage_tracking import UsageSnapshot

if TYPE_CHECKING:
    from .ledger import Claim

#: Characters per token assumed when estimating input size from a request.
CHARS_PER_TOKEN = 4

#: Output tokens assumed for a request that sets no output cap, per provider.
DEFAULT_OUTPUT_TOKENS: dict[str, int] = {"openai": 4096, "anthropic": 4096}
_FALLBACK_OUTPUT_TOKENS = 4096

_INPUT_FIELDS = ("messages", "input", "prompt", "system", "instructions", "tools")
_OUTPUT_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


#: Open calls the client guard saw the request of, reserved at what their model cost
#: before (its learned cost): the request may ask for more (a longer prompt, a higher
#: ``max_tokens``). Counting a request costs ~10 µs, and only matters to calls admitted
#: while this one runs: so a call is estimated when the next admission finds it here
#: (``estimate_deferred``), and leaves unestimated when it ends first (a loop's
#: calls one after another).
DEFERRED: dict[Claim, tuple[str, Mapping[str, Any], str]] = {}
#: Open calls raised to their request's upper bound when the client guard saw it
#: (nothing learned of the model), with what each held before: once the request is
#: answered while its call runs on (our turn's next steps), the call holds what it
#: cost, never less than that (a turn's ``usage=``). See ``booking._held_at_answer``.
RAISED_FROM: dict[Claim, float] = {}


if hasattr(os, "register_at_fork"):
    # A forked child's first admission would count its parent's calls in flight at
    # their requests' upper bounds (they never end there): it keeps what they hold.
    os.register_at_fork(after_in_child=DEFERRED.clear)


def capped(body: Mapping[str, Any]) -> bool:
    """Whether a request sets its own output cap: then its estimate is a bound, not a guess.

    Without one, the estimate assumes 4,096 output tokens: right for a first call,
    of which nothing is known, but far above what a model's calls have been seen
    to cost once they have (86 times a short answer's), which would refuse a
    fan-out of such calls on a budget many times what they cost.
    """
    return bool(
        body.get("max_tokens") or body.get("max_completion_tokens") or body.get("max_output_tokens")
    )


def defer(claim: Claim, model: str, body: Mapping[str, Any], provider: str) -> None:
    """Estimate ``claim``'s request once another call is admitted while it is open."""
    DEFERRED[claim] = (model, body, provider)


def estimate_deferred() -> None:
    """Raise each deferred call still open to its request's upper bound. Never raises.

    Runs in the admitting thread, before it takes any lock: the calls in flight
    then hold at least what their requests may cost, and the admission sees it.
    """
    while DEFERRED:
        try:
            claim, (model, body, provider) = DEFERRED.popitem()
        except KeyError:  # another thread took the last one
            return
        if not claim.open:
            continue
        try:
            estimate = request_estimate_usd(model, body, provider)
        except Exception:  # a body changed under us (a dict resized): it keeps what it holds
            continue
        if estimate:
            claim.leaf.top_up(claim, estimate)


def _chars(value: Any) -> int:
    if isinstance(value, str):
        return text_chars(value)
    try:
        return text_chars(json.dumps(value, default=str, ensure_ascii=False))
    except (TypeError, ValueError, RecursionError):
        return text_chars(str(value))


def text_chars(text: str) -> int:
    """``text``'s length for ``tokens_of_text``: a character outside ASCII counts as a token.

    Example::

        >>> text_chars("tokens"), text_chars("词元")
        (6, 8)
    """
    wide = len(text) - len(text.encode("ascii", "ignore"))
    return len(text) + (CHARS_PER_TOKEN - 1) * wide


def tokens_of_text(chars: int) -> int:
    """Tokens assumed for ``chars`` characters of text (``text_chars``; rounded up)."""
    return math.ceil(chars / CHARS_PER_TOKEN) if chars > 0 else 0


def request_tokens(body: Mapping[str, Any], provider: str) -> tuple[int, int]:
    """(input tokens, output tokens) a request is expected to use at most (see module doc)."""
    chars = sum(_chars(body[name]) for name in _INPUT_FIELDS if body.get(name) is not None)
    output = 0
    for name in _OUTPUT_CAPS:
        cap = body.get(name)
        if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0:
            output = cap
            break
    if not output:
        output = DEFAULT_OUTPUT_TOKENS.get(provider, _FALLBACK_OUTPUT_TOKENS)
    # The cap is per choice: ``n`` choices (``best_of`` generated, for the legacy
    # completions) are each billed up to it.
    choices = 1
    for name in ("n", "best_of"):
        count = body.get(name)
        if isinstance(count, int) and not isinstance(count, bool) and count > choices:
            choices = count
    return tokens_of_text(chars), output * choices


#: Request fields that bring input the body does not hold: a stored conversation.
_STORED_CONTEXT = ("previous_response_id", "conversation")
#: Content parts billed by other units than their characters (images, files, audio),
#: or standing for input stored elsewhere (a Responses item reference).
_NOT_TEXT_PARTS = frozenset(
    {
        "image_url",
        "input_image",
        "image",
        "document",
        "input_file",
        "file",
        "input_audio",
        "audio",
        "item_reference",
    }
)
#: Where a request's content parts are (``tools`` holds JSON schemas, not content).
_CONTENT_FIELDS = ("messages", "input", "prompt", "system", "instructions")


def input_known(body: Mapping[str, Any]) -> bool:
    """Whether a request's whole input is text in its body, so its estimate bounds its cost.

    Not when it refers to a stored conversation (``previous_response_id``) or has an
    image, file or audio part (billed by size or pages, not by the characters of its
    URL): the estimate may then be far below the call's cost, good to raise a
    reservation to, never to lower one.

    Example::

        >>> input_known({"messages": [{"role": "user", "content": "hi"}]})
        True
        >>> input_known({"input": "and then?", "previous_response_id": "resp_1"})
        False
    """
    if any(body.get(name) for name in _STORED_CONTEXT) or isinstance(body.get("prompt"), Mapping):
        return False  # (a Responses ``prompt`` object is a stored prompt template)
    return not any(_not_text(body.get(name), 0) for name in _CONTENT_FIELDS)


def _not_text(value: Any, depth: int) -> bool:
    if depth > 8:
        return True  # deeper than any message shape: not known to be text
    if isinstance(value, Mapping):
        kind = value.get("type")
        if isinstance(kind, str) and kind in _NOT_TEXT_PARTS:
            return True
        return any(_not_text(item, depth + 1) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_not_text(item, depth + 1) for item in value)
    return False


def request_estimate_usd(model: str, body: Mapping[str, Any], provider: str) -> float | None:
    """The upper-bound cost of a request before it is sent; None for an unpriced model."""
    if not model or not has_pricing(model, provider):
        return None
    input_tokens, output_tokens = request_tokens(body, provider)
    return price_call(model, UsageSnapshot(input_tokens, output_tokens), provider).cost


def output_estimate_usd(model: str, max_tokens: int | None, provider: str) -> float:
    """What a call's output alone is expected to cost at most (its prompt is not known yet).

    ``max_tokens`` is the request's own cap when known, else the provider's
    default output length (see the module docstring); 0.0 for an unpriced model.
    """
    if not has_pricing(model, provider):
        return 0.0
    output = max_tokens if max_tokens is not None and max_tokens > 0 else 0
    if not output:
        output = DEFAULT_OUTPUT_TOKENS.get(provider, _FALLBACK_OUTPUT_TOKENS)
    return price_call(model, UsageSnapshot(0, output), provider).cost


def seen_usage(body: Mapping[str, Any] | None, provider: str, text_chars: int) -> UsageSnapshot:
    """The usage booked for a call whose usage never arrived: its request, and the text seen."""
    input_tokens = request_tokens(body, provider)[0] if body is not None else 0
    return UsageSnapshot(input_tokens, tokens_of_text(text_chars))
