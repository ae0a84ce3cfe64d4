"""Whether prompts, completions and tool arguments/results may be recorded.

Off unless asked: message content routinely carries secrets and personal data,
so the GenAI conventions make capture opt-in through
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ...caller import log_once

ENV_VAR = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_TRUTHY = frozenset({"1", "true", "yes", "on", "span_only", "span_and_event"})

_override: bool | None = None

# Every model and tool call asks this question. ``os.environ.get`` re-encodes the
# key each time (~0.7 µs); the mapping behind it is read directly instead, so the
# answer still follows every change made through ``os.environ`` (tests and users
# set the variable at run time) at the cost of one dict lookup.
_raw_env: Mapping[object, object] | None = getattr(os.environ, "_data", None)
_encode = getattr(os.environ, "encodekey", None)
_KEY: object = _encode(ENV_VAR) if _raw_env is not None and _encode is not None else ENV_VAR
if _KEY is ENV_VAR:
    _raw_env = None
_last: tuple[object, bool] = (None, False)


def set_capture_content(value: bool | None) -> None:
    """Force content capture on or off; ``None`` goes back to the environment.

    Example::

        set_capture_content(True)   # record prompts and tool results on spans
    """
    global _override
    _override = value


def capture_content() -> bool:
    """True when message content may be put on spans (explicit setting, else env)."""
    global _last
    if _override is not None:
        return _override
    raw = _raw_env.get(_KEY) if _raw_env is not None else os.environ.get(ENV_VAR)
    if raw is None:
        return False
    seen, answer = _last
    if raw is not seen:
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        answer = text.strip().lower() in _TRUTHY
        _last = (raw, answer)
    return answer


def content_text(value: object, limit: int = 8192) -> str:
    """A bounded string form of a captured value, so one huge prompt cannot bloat a span.

    Never raises: a value whose ``repr`` fails (an ORM row detached from its
    session, a structure nested deeper than the recursion limit) is recorded as
    a placeholder naming its type and the error, and the call it describes goes
    on (see ``unreadable``).

    Example::

        >>> content_text("hi")
        'hi'
    """
    try:
        text = value if isinstance(value, str) else repr(value)
    except Exception as error:
        text = unreadable(value, error)
    return text if len(text) <= limit else text[:limit] + "…"


_MESSAGE_LIMIT = 200


def unreadable(value: object, error: Exception, how: str = "repr") -> str:
    """What a span records for a value whose ``repr`` (or ``str``) raised; logged once.

    Content capture is best effort: the tool or turn has already run, so its
    result is returned (or its own exception raised) and its span exported
    with this placeholder instead.

    Example::

        >>> class Row:
        ...     def __repr__(self): raise RuntimeError("detached")
        >>> unreadable(Row(), RuntimeError("detached"))
        '<repr of Row failed: RuntimeError: detached>'
    """
    try:
        message = str(error)
    except Exception:
        message = ""
    if len(message) > _MESSAGE_LIMIT:
        message = message[:_MESSAGE_LIMIT] + "…"
    what = type(error).__qualname__ + (f": {message}" if message else "")
    text = f"<{how} of {type(value).__qualname__} failed: {what}>"
    log_once(
        "content",
        "content capture: %s() of a %s raised (%s); its span records %r instead "
        "and the call goes on. Logged once per process.",
        how,
        type(value).__qualname__,
        what,
        text,
    )
    return text
