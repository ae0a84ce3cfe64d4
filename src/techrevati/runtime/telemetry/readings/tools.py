"""Recognising other instrumentations' tool-call spans, and what the call was.

Loop detection counts every tool call of a session, ours and those other
instrumentations describe. A span is a tool call when it says so in one of the
conventions in use:

* GenAI semantic conventions: ``gen_ai.operation.name`` = ``execute_tool``, the
  tool in ``gen_ai.tool.name``, arguments and result (only when the producer
  captures content) in ``gen_ai.tool.call.arguments`` / ``gen_ai.tool.call.result``;
* OpenInference: ``openinference.span.kind`` = ``TOOL``, ``tool.name``, and the
  call's ``input.value`` / ``output.value``.

The Anthropic SDK's own tool-runner spans follow the GenAI conventions but
record the result as ``anthropic.tool_result.content``: read where the GenAI
result is absent.

Without a recorded result a call cannot be compared, so it is not read (a loop
is never guessed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

OI_SPAN_KIND: Final = "openinference.span.kind"
_OPERATION: Final = "gen_ai.operation.name"
_EXECUTE_TOOL: Final = "execute_tool"
_ANTHROPIC_RESULT: Final = "anthropic.tool_result.content"


@dataclass(frozen=True, slots=True)
class ToolReading:
    """One finished tool call as its span described it (text as recorded)."""

    name: str
    arguments: str | None
    result: str | None
    failed: bool


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _fields(attrs: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(tool-name key, arguments key, result key) of the convention ``attrs`` follow."""
    if attrs.get(_OPERATION) == _EXECUTE_TOOL:
        return "gen_ai.tool.name", "gen_ai.tool.call.arguments", "gen_ai.tool.call.result"
    if attrs.get(OI_SPAN_KIND) == "TOOL":
        return "tool.name", "input.value", "output.value"
    return None


def _name(span_name: str, attrs: Mapping[str, Any], key: str) -> str:
    named = attrs.get(key)
    if isinstance(named, str) and named:
        return named
    return span_name.removeprefix(_EXECUTE_TOOL + " ")


def tool_start(span_name: str, attrs: Mapping[str, Any] | None) -> tuple[str, str | None] | None:
    """(tool name, arguments text or None) when a starting span is a tool call; else None.

    Example::

        >>> tool_start("execute_tool search", {"gen_ai.operation.name": "execute_tool",
        ...     "gen_ai.tool.name": "search", "gen_ai.tool.call.arguments": '{"q": "x"}'})
        ('search', '{"q": "x"}')
    """
    if not attrs:
        return None
    fields = _fields(attrs)
    if fields is None:
        return None
    name_key, arguments_key, _ = fields
    return _name(span_name, attrs, name_key), _text(attrs.get(arguments_key))


def read_tool(
    span_name: str, attrs: Mapping[str, Any] | None, *, failed: bool
) -> ToolReading | None:
    """The finished tool call a span describes (``failed``: its status is an error)."""
    if not attrs:
        return None
    fields = _fields(attrs)
    if fields is None:
        return None
    name_key, arguments_key, result_key = fields
    result = attrs.get(result_key)
    if result is None:
        result = attrs.get(_ANTHROPIC_RESULT)
    return ToolReading(
        name=_name(span_name, attrs, name_key),
        arguments=_text(attrs.get(arguments_key)),
        result=_text(result),
        failed=failed or "error.type" in attrs,
    )
