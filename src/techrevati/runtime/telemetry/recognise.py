"""The one place that decides whether a span is a model call, and what it used.

Every door that admits or books a call asks here: the limits processor (for
our spans and other instrumentations'), the core's fallback for spans no
processor sees, and the report when it replays a file. Producers differ (the
GenAI conventions, older ``gen_ai.system`` spellings, other vocabularies), so
their quirks are decided here, by attribute and instrumentation scope, and
nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import semconv as sc
from .tokens import model_from_attributes, usage_from_attributes

__all__ = [
    "is_model_call",
    "is_model_span",
    "is_same_call",
    "model_from_attributes",
    "usage_from_attributes",
]


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


def is_model_span(attrs: Mapping[str, Any] | None, span_name: str) -> bool:
    """``is_model_call`` for a span's attribute mapping."""
    operation = attrs.get(sc.GEN_AI_OPERATION_NAME) if attrs else None
    return is_model_call(operation, span_name)


def is_same_call(*, ours: bool, enclosing_ours: bool | None, enclosing_taken: bool) -> bool:
    """Whether a model span describes the same call as the model call enclosing it.

    ``ours`` says the span is this package's (our turn); ``enclosing_ours``
    whether the nearest model call enclosing it in its session is ours (None
    when no model call encloses it); ``enclosing_taken`` whether that enclosing
    call of ours already has the one library span that describes it.

    The rule: our own turn is always a new call; a library span inside a
    library call is that call; the *first* library span inside our turn is our
    turn (the ``@agent_turn`` around one ``client.chat.completions.create``),
    any further one is a new call.

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
