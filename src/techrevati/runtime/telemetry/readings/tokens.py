"""The one conversion between ``UsageSnapshot`` and GenAI usage attributes.

The two bookkeepings differ: a ``UsageSnapshot`` keeps plain input, cache-write
and cache-read tokens as disjoint counts (each priced at its own rate), while
``gen_ai.usage.input_tokens`` is their sum and the cache counts are breakdowns
of it. Converting in exactly one place in each direction is what keeps a cached
token from being priced twice or at the full input rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...usage_tracking import UsageSnapshot
from .. import semconv as sc
from .sdk_attributes import KnownValue


def usage_to_attributes(usage: UsageSnapshot) -> dict[str, KnownValue]:
    """Semconv usage attributes for a snapshot (input includes both cache counts)."""
    attrs: dict[str, KnownValue] = {
        sc.GEN_AI_USAGE_INPUT_TOKENS: usage.input_tokens
        + usage.cache_write_tokens
        + usage.cache_read_tokens,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: usage.output_tokens,
    }
    if usage.cache_read_tokens:
        attrs[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = usage.cache_read_tokens
    if usage.cache_write_tokens:
        attrs[sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] = usage.cache_write_tokens
    if len(attrs) > 2:
        # Mid-rename names are written under the old spelling too (semconv.MID_RENAME);
        # only cache counts are mid-rename, so a call without them (most) skips this.
        for current, old in sc.MID_RENAME.items():
            if current in attrs:
                attrs[old] = attrs[current]
    return attrs


#: The largest token count read from anywhere (OTLP ints are signed 64-bit);
#: larger values are clamped to it, so pricing still books (and bounds) the call.
MAX_TOKEN_COUNT = 2**63 - 1


def _int(attrs: Mapping[str, Any], key: str) -> int:
    value = attrs.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    if not value > 0:  # negatives and NaN
        return 0
    return MAX_TOKEN_COUNT if value >= MAX_TOKEN_COUNT else int(value)


def usage_from_totals(
    input_total: int, output: int, cache_read: int = 0, cache_write: int = 0
) -> UsageSnapshot:
    """The snapshot for counts in the conventions' bookkeeping (input includes the caches).

    Clamped so a producer that reports cache counts outside its input total
    (against the convention) is never priced below zero.

    Example::

        >>> usage = usage_from_totals(120, 30, cache_read=100)
        >>> usage.input_tokens, usage.cache_read_tokens, usage.output_tokens
        (20, 100, 30)
    """
    # Conditionals, not min()/max(): this runs on every model call another
    # instrumentation reports, and the builtins cost more than the arithmetic.
    if not (
        type(input_total) is int
        and type(output) is int
        and type(cache_read) is int
        and type(cache_write) is int
    ):
        # A bool or int subclass: the snapshot holds plain ints.
        input_total, output = int(input_total), int(output)
        cache_read, cache_write = int(cache_read), int(cache_write)
    input_total = input_total if input_total > 0 else 0
    cache_read = 0 if cache_read < 0 else input_total if cache_read > input_total else cache_read
    room = input_total - cache_read
    cache_write = 0 if cache_write < 0 else room if cache_write > room else cache_write
    return UsageSnapshot._checked(
        room - cache_write, output if output > 0 else 0, cache_write, cache_read
    )


def usage_from_attributes(attrs: Mapping[str, Any] | None) -> UsageSnapshot | None:
    """The snapshot a span's GenAI usage attributes describe, or None if it has none.

    Reads both cache-write spellings. Reasoning tokens are already inside
    ``output_tokens`` by convention, so they are not added again. Other
    vocabularies (OpenInference, producer quirks) are read by ``recognise``.
    """
    if not attrs:
        return None
    if sc.GEN_AI_USAGE_INPUT_TOKENS not in attrs and sc.GEN_AI_USAGE_OUTPUT_TOKENS not in attrs:
        return None
    return usage_from_totals(
        _int(attrs, sc.GEN_AI_USAGE_INPUT_TOKENS),
        _int(attrs, sc.GEN_AI_USAGE_OUTPUT_TOKENS),
        cache_read=_int(attrs, sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS),
        cache_write=_int(attrs, sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS)
        or _int(attrs, sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS),
    )


def model_from_attributes(attrs: Mapping[str, Any] | None) -> str:
    """The model a model-call span names: the requested one, else the response's."""
    if not attrs:
        return ""
    for key in (sc.GEN_AI_REQUEST_MODEL, sc.GEN_AI_RESPONSE_MODEL):
        value = attrs.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def provider_from_attributes(attrs: Mapping[str, Any] | None) -> str:
    """``gen_ai.provider.name``, falling back to the older ``gen_ai.system``."""
    if not attrs:
        return ""
    for key in (sc.GEN_AI_PROVIDER_NAME, sc.GEN_AI_SYSTEM):
        value = attrs.get(key)
        if isinstance(value, str) and value:
            return value
    return ""
