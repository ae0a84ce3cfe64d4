"""Whether prompts, completions and tool arguments/results may be recorded.

Off unless asked: message content routinely carries secrets and personal data,
so the GenAI conventions make capture opt-in through
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``.
"""

from __future__ import annotations

import os

ENV_VAR = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_TRUTHY = frozenset({"1", "true", "yes", "on", "span_only", "span_and_event"})

_override: bool | None = None


def set_capture_content(value: bool | None) -> None:
    """Force content capture on or off; ``None`` goes back to the environment.

    Example::

        set_capture_content(True)   # record prompts and tool results on spans
    """
    global _override
    _override = value


def capture_content() -> bool:
    """True when message content may be put on spans (explicit setting, else env)."""
    if _override is not None:
        return _override
    return os.environ.get(ENV_VAR, "").strip().lower() in _TRUTHY


def content_text(value: object, limit: int = 8192) -> str:
    """A bounded string form of a captured value, so one huge prompt cannot bloat a span."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "…"
