"""The providers of the last ``configure()`` set-up that is not the global one.

``configure(tracer_provider=...)``, ``configure(meter_provider=...)`` and
``configure(set_global=False)`` build a set-up whose providers OpenTelemetry's
global accessors never return. Sessions and decorated calls that name no
provider of their own still belong to that set-up: the user configured it for
them. So ``configure`` leaves its providers here, and our spans and metrics go
to them while the set-up is live (until its ``shutdown()``); a provider passed
to a session or ``Orchestrator`` still wins. With several such set-ups, the last
one configured is the default; pass ``tracer_provider=`` / ``meter_provider=`` to
the sessions of the others.

Example::

    handle = configure(tracer_provider=mine, set_global=False)
    with agent_session("writer"):   # its spans reach ``mine``
        ...
"""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

#: (tracer provider or None, meter provider or None, whether the set-up is still live).
_Default = tuple[TracerProvider | None, MeterProvider | None, Callable[[], bool]]
_default: _Default | None = None


def use_by_default(
    tracer_provider: TracerProvider | None,
    meter_provider: MeterProvider | None,
    live: Callable[[], bool],
) -> None:
    """Make a set-up's providers the default for our spans and metrics while ``live()``.

    ``None`` for a provider that the global accessor already returns (or that
    the set-up has none of): the global one stays the default for it.
    """
    global _default
    _default = (tracer_provider, meter_provider, live)


def _live() -> _Default | None:
    global _default
    found = _default
    if found is None:
        return None
    if not found[2]():
        _default = None  # shut down: the global providers are the default again
        return None
    return found


def default_tracer_provider() -> TracerProvider | None:
    """The configured set-up's tracer provider, when it is not the global one."""
    found = _live()
    return found[0] if found is not None else None


def default_meter_provider() -> MeterProvider | None:
    """The configured set-up's meter provider, when it is not the global one."""
    found = _live()
    return found[1] if found is not None else None
