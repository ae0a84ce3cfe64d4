"""``configure(instrument=[...])``: switch on the instrumentations we recommend, plus the guard.

One instrumentation per client, the one that reports what our limits need
(cache counts included) and lets a refusal reach the caller or the guard:

* ``"openai"``: the official ``opentelemetry-instrumentation-genai-openai``;
* ``"anthropic"``: the Anthropic SDK's own tracing (on by default in SDKs that
  have it), whose refusals the client guard re-raises.

Everything asked for is checked before anything is switched on, so a missing
package leaves nothing half done; the error names the package to install.

Example::

    from techrevati.runtime.telemetry import configure
    configure(instrument=["openai", "anthropic"])
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

from ..limits.guard import install_guard

__all__ = ["SUPPORTED", "prepare", "switch_on"]

_log = logging.getLogger("techrevati.runtime.telemetry")

#: Client name -> the pip package that provides its recommended instrumentation.
SUPPORTED: dict[str, str] = {
    "openai": "opentelemetry-instrumentation-genai-openai",
    "anthropic": "anthropic",
}

# Other instrumentations of the same client: two at once double-count calls.
_OTHERS: dict[str, tuple[tuple[str, str], ...]] = {
    "openai": (
        ("opentelemetry.instrumentation.openai_v2", "OpenAIInstrumentor"),
        ("opentelemetry.instrumentation.openai", "OpenAIInstrumentor"),
        ("openinference.instrumentation.openai", "OpenAIInstrumentor"),
    ),
    "anthropic": (
        ("opentelemetry.instrumentation.anthropic", "AnthropicInstrumentor"),
        ("openinference.instrumentation.anthropic", "AnthropicInstrumentor"),
    ),
}


def _names(instrument: object) -> tuple[str, ...]:
    if isinstance(instrument, str) or not isinstance(instrument, Iterable):
        raise TypeError(
            f"instrument= takes a list of client names such as ['openai', 'anthropic'], "
            f"got {instrument!r}"
        )
    names: list[str] = []
    for name in instrument:
        if not isinstance(name, str) or name not in SUPPORTED:
            raise ValueError(
                f"instrument=: unknown client {name!r}; choose from {sorted(SUPPORTED)}"
            )
        if name not in names:
            names.append(name)
    return tuple(names)


def _need(module: str, package: str, why: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"configure(instrument=[...]) {why}: pip install '{package}'", name=module
        ) from exc


def _prepare_openai() -> Callable[[Any], None]:
    _need("openai", "openai", "needs the openai client")
    module = _need(
        "opentelemetry.instrumentation.genai.openai",
        SUPPORTED["openai"],
        "instruments openai with the official OpenTelemetry instrumentation",
    )

    def switch(tracer_provider: Any) -> None:
        instrumentor = module.OpenAIInstrumentor()
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=tracer_provider)

    return switch


def _prepare_anthropic() -> Callable[[Any], None]:
    _need("anthropic", "anthropic", "needs the anthropic client")
    _need(
        "anthropic._tracing",
        "anthropic>=2.14",
        "uses the Anthropic SDK's own tracing, which this anthropic version lacks",
    )

    def switch(tracer_provider: Any) -> None:
        # On by default; the SDK traces into the global provider. Say so when it is off.
        if os.environ.get("ANTHROPIC_OPEN_TELEMETRY", "").lower() == "false":
            _log.warning(
                "ANTHROPIC_OPEN_TELEMETRY=false: the Anthropic SDK makes no spans, so its "
                "calls are neither priced nor limited by techrevati-runtime"
            )

    return switch


def _warn_doubles(name: str) -> None:
    for module_name, class_name in _OTHERS[name]:
        try:
            module = importlib.import_module(module_name)
            instrumentor = getattr(module, class_name)()
        except Exception:
            continue
        if getattr(instrumentor, "is_instrumented_by_opentelemetry", False):
            _log.warning(
                "%s.%s is also instrumenting %s: use one instrumentation per client, "
                "or calls are counted twice",
                module_name,
                class_name,
                name,
            )


def prepare(instrument: object, *, guard: bool = True) -> Callable[[Any], tuple[str, ...]]:
    """Check ``instrument`` and its packages now; return the call that switches them on.

    Raises ``TypeError``/``ValueError`` for a bad list and ``ImportError``
    naming the pip package when one is missing, before anything changes.
    ``configure()`` checks first and switches on once its provider exists.
    """
    names = _names(instrument)
    prepared = {"openai": _prepare_openai, "anthropic": _prepare_anthropic}
    switches = [prepared[name]() for name in names]

    def switch_on_all(tracer_provider: Any) -> tuple[str, ...]:
        for name, switch in zip(names, switches, strict=True):
            switch(tracer_provider)
            _warn_doubles(name)
        if guard:
            install_guard(names)
        return names

    return switch_on_all


def switch_on(instrument: object, tracer_provider: Any = None) -> tuple[str, ...]:
    """Switch on the recommended instrumentation for each named client, and the guard.

    ``tracer_provider`` None means the global one. Returns the clients switched on.

    Example::

        switch_on(["openai"], tracer_provider=provider)
    """
    return prepare(instrument)(tracer_provider)
