"""The straight-line readers agree with the general rules they shortcut.

``_chat_object`` (a chat completion object's usage, read on every decorated
turn) and ``_usage_plain`` (the current GenAI usage attributes, read on every
instrumented call) exist only for speed: each answers the usual shape in
straight-line code and hands anything else to the general reader. These
properties hold them to the general reading on random shapes, so the two
cannot drift apart.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from techrevati.runtime.telemetry import semconv as sc
from techrevati.runtime.telemetry.readings import recognise, usage_extract

# Counts as producers send them, good and bad: small and huge ints, negatives,
# bools, floats, strings, None.
counts = st.one_of(
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=-5, max_value=2**70),
    st.booleans(),
    st.floats(allow_nan=True),
    st.just("12"),
    st.none(),
)


_ABSENT = object()  # a detail object without that field at all
maybe = st.one_of(counts, st.just(_ABSENT))


@st.composite
def completions(draw: st.DrawFn) -> Any:
    details = draw(
        st.one_of(
            st.none(),
            st.builds(
                lambda c, w, kind: kind(
                    **{
                        k: v
                        for k, v in {"cached_tokens": c, "cache_write_tokens": w}.items()
                        if v is not _ABSENT
                    }
                ),
                maybe,
                maybe,
                st.sampled_from([SimpleNamespace, dict]),
            ),
        )
    )
    reasoning = draw(
        st.one_of(
            st.none(),
            st.builds(
                lambda r, kind: kind(**({} if r is _ABSENT else {"reasoning_tokens": r})),
                maybe,
                st.sampled_from([SimpleNamespace, dict]),
            ),
        )
    )
    usage = SimpleNamespace(
        prompt_tokens=draw(counts),
        completion_tokens=draw(counts),
        prompt_tokens_details=details,
        completion_tokens_details=reasoning,
    )
    model = draw(st.sampled_from(["gpt-4o-mini", "", None, 7]))
    return SimpleNamespace(usage=usage, model=model)


def _general_extract(obj: Any) -> tuple[Any, ...] | None:
    block = usage_extract._usage_block(usage_extract._get(obj, "usage"))
    if block is None:
        return None
    return (block[0], usage_extract._model(obj), block[1])


@settings(max_examples=600, deadline=None)
@given(obj=completions())
def test_chat_object_reads_what_the_general_reader_reads(obj: Any) -> None:
    fast = usage_extract._chat_object(obj)
    if fast is None:
        return  # handed to the general reader
    assert tuple(fast) == _general_extract(obj)


ints = st.one_of(st.integers(min_value=0, max_value=10_000), st.integers(0, 2**70))
absent = st.none()


def _mostly(usual: st.SearchStrategy[Any], tenths: int) -> st.SearchStrategy[Any]:
    """``usual`` ``tenths`` times in ten, else any count, good or bad."""
    return st.integers(0, 9).flatmap(lambda i: usual if i < tenths else counts)


#: Mostly the usual shape (good counts, the optional ones often absent, the older
#: spellings absent), sometimes a bad value anywhere.
usual = _mostly(ints, 9)
optional = _mostly(st.one_of(ints, absent), 9)
rare = _mostly(absent, 9)


@settings(max_examples=600, deadline=None)
@given(
    current=st.tuples(usual, usual, optional, optional, optional),
    older=st.tuples(*[rare] * 6),
    scope=st.sampled_from(["opentelemetry.instrumentation.openai_v2", "openlit.otel.tracing", ""]),
    provider=st.sampled_from(["openai", "anthropic", ""]),
)
def test_plain_usage_attributes_read_what_the_general_reader_reads(
    current: tuple[Any, ...], older: tuple[Any, ...], scope: str, provider: str
) -> None:
    keys = (
        sc.GEN_AI_USAGE_INPUT_TOKENS,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS,
        sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
        sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS,
        sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
        recognise._CACHE_READ_KEYS[1],
        recognise._CACHE_WRITE_KEYS[1],
        recognise._CACHE_WRITE_KEYS[2],
        recognise._REASONING_KEYS[1],
        "llm.token_count.prompt",
        "llm.token_count.completion",
    )
    # OTel drops None values: None here means the attribute is absent.
    attrs = {k: v for k, v in zip(keys, current + older, strict=True) if v is not None}
    fast = recognise._usage_plain(attrs, scope)
    if fast is None:
        return  # handed to the general reader
    assert fast == recognise._usage(attrs, scope, provider)
