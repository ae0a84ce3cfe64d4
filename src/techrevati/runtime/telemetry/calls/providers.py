"""Which TracerProvider our spans go through, in the three set-ups users have.

1. The user set a global SDK provider (or ``configure()`` did): use it, with our
   limits processor added once, so our spans reach their exporters and our
   processor sees third-party GenAI spans with no extra wiring.
2. An explicit provider was passed to the Orchestrator / ``agent_session``: the
   same. So is a provider ``configure()`` was given or built without making it
   global (``tracer_provider=``, ``set_global=False``), while that set-up is
   live (``use_by_default``): a session naming none uses it, and our metrics
   go to such a set-up's meter provider.
3. Nothing is configured: a private SDK provider that has only the limits
   processor. Spans then go nowhere, but budgets and caps are still enforced,
   because enforcement lives in span processors.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
from opentelemetry.trace import Tracer, TracerProvider

from ...version import VERSION
from .. import semconv as sc
from ..limits.processor import ensure_limits_processor

_fallback: SDKTracerProvider | None = None
# Weak: a provider the user drops (per test, per tenant) must not be kept alive here.
_tracers: weakref.WeakKeyDictionary[TracerProvider, Tracer] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


# --- the providers of a configure() set-up that is not the global one ------------------
#
# configure(tracer_provider=...), configure(meter_provider=...) and
# configure(set_global=False) build a set-up whose providers OpenTelemetry's global
# accessors never return. Sessions and decorated calls that name no provider still
# belong to it when nothing global would take them: the user configured it for them.
# A global SDK provider (the user's, or a global configure()'s) keeps them: it is the
# process's own set-up, and third-party spans of the same calls go there too. With
# several such set-ups, the last one configured that is still live (not shut down).

#: (tracer provider or None, meter provider or None, whether the set-up is still live).
_Default = tuple[TracerProvider | None, MeterProvider | None, Callable[[], bool]]
#: The set-ups configure() built that are not global, oldest first.
_defaults: list[_Default] = []


def use_by_default(
    tracer_provider: TracerProvider | None,
    meter_provider: MeterProvider | None,
    live: Callable[[], bool],
) -> None:
    """Make a set-up's providers the default for our spans and metrics while ``live()``.

    ``None`` for a provider that the global accessor already returns (or that
    the set-up has none of): the global one stays the default for it.
    """
    with _lock:
        _defaults.append((tracer_provider, meter_provider, live))


def _live() -> _Default | None:
    """The newest set-up still live; the shut-down ones are dropped on the way."""
    if not _defaults:
        return None
    with _lock:
        _defaults[:] = [found for found in _defaults if found[2]()]
        return _defaults[-1] if _defaults else None


def default_tracer_provider() -> TracerProvider | None:
    """The configured set-up's tracer provider, when it is not the global one."""
    found = _live()
    return found[0] if found is not None else None


def default_meter_provider() -> MeterProvider | None:
    """The configured set-up's meter provider, when it is not the global one."""
    found = _live()
    return found[1] if found is not None else None


def fallback_provider() -> SDKTracerProvider:
    """The private provider used when the user configured no OpenTelemetry."""
    global _fallback
    if _fallback is None:
        with _lock:
            if _fallback is None:
                provider = SDKTracerProvider()
                ensure_limits_processor(provider)
                _fallback = provider
    return _fallback


def resolve_provider(explicit: TracerProvider | None = None) -> TracerProvider:
    """The provider to use now: explicit, else the configured set-up's, else the global
    SDK one, else the fallback."""
    global_provider = trace.get_tracer_provider()
    if isinstance(global_provider, SDKTracerProvider):
        # Even with an explicit provider for our spans: other GenAI
        # instrumentations (the OpenAI one, say) make theirs on the global
        # provider, and their model calls must still be admitted and booked.
        ensure_limits_processor(global_provider)
    elif explicit is None:
        explicit = default_tracer_provider()
    provider = explicit if explicit is not None else global_provider
    if isinstance(provider, SDKTracerProvider):
        ensure_limits_processor(provider)
        return provider
    if explicit is not None:
        # A non-SDK provider the user chose on purpose: honour it; the core
        # enforces limits itself for the non-recording spans it returns.
        return provider
    return fallback_provider()


def tracer_for(explicit: TracerProvider | None = None) -> Tracer:
    """Our tracer on the resolved provider (cached per provider)."""
    provider = resolve_provider(explicit)
    try:
        found = _tracers.get(provider)
    except TypeError:  # a provider type that cannot be weakly referenced
        return provider.get_tracer(sc.INSTRUMENTATION_SCOPE, VERSION)
    if found is not None:
        return found
    tracer = provider.get_tracer(sc.INSTRUMENTATION_SCOPE, VERSION)
    with _lock:
        _tracers[provider] = tracer
    return tracer
