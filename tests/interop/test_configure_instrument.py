"""configure(instrument=[...]): the recommended instrumentations and the guard, in one line."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor
from opentelemetry.sdk.trace import TracerProvider

from techrevati.runtime import configure
from techrevati.runtime.telemetry.limits import guard
from techrevati.runtime.telemetry.setup.autoinstrument import switch_on


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    yield
    guard.uninstall_guard()
    instrumentor = OpenAIInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


def test_openai_switches_on_the_official_instrumentation_and_the_guard() -> None:
    provider = TracerProvider()
    handle = configure(
        tracer_provider=provider, set_global=False, spans_file=False, instrument=["openai"]
    )
    try:
        assert OpenAIInstrumentor().is_instrumented_by_opentelemetry
        assert guard.is_installed("openai")
    finally:
        handle.shutdown()


@pytest.mark.parametrize(
    ("instrument", "error", "match"),
    [
        ("openai", TypeError, "list of client names"),
        (["openai", "cohere"], ValueError, "unknown client 'cohere'"),
        ([3], ValueError, "unknown client 3"),
    ],
)
def test_bad_lists_are_refused_before_anything_is_set_up(
    instrument: object, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        configure(set_global=False, spans_file=False, instrument=instrument)  # type: ignore[arg-type]
    assert not OpenAIInstrumentor().is_instrumented_by_opentelemetry
    assert not guard.is_installed("openai")


def test_a_missing_package_names_what_to_install_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes the import fail exactly as if it were not installed.
    monkeypatch.setitem(sys.modules, "opentelemetry.instrumentation.genai.openai", None)
    with pytest.raises(
        ImportError, match=r"pip install 'opentelemetry-instrumentation-genai-openai'"
    ):
        configure(set_global=False, spans_file=False, instrument=["anthropic", "openai"])
    assert not guard.is_installed("anthropic")
    assert not guard.is_installed("openai")


def test_anthropic_uses_the_sdks_own_tracing_and_the_guard() -> None:
    handle = configure(set_global=False, spans_file=False, instrument=["anthropic"])
    try:
        assert guard.is_installed("anthropic")
        assert not guard.is_installed("openai")
    finally:
        handle.shutdown()


def test_switch_on_is_idempotent() -> None:
    provider = TracerProvider()
    assert switch_on(["openai", "openai"], provider) == ("openai",)
    assert switch_on(["openai"], provider) == ("openai",)
    assert OpenAIInstrumentor().is_instrumented_by_opentelemetry
