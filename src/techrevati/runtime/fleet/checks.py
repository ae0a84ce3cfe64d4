"""Every setting and name a fleet scope takes, validated and bounded before it reaches Redis.

Redis' Lua numbers are doubles and ``%d`` wraps past 2**63, so an absurd value
would not fail loudly there: it would quietly disable a limit for the whole
fleet. Each value is therefore checked here, with an error naming it.
"""

from __future__ import annotations

import math
from typing import Any

#: The longest window, lease or probe wait a scope accepts (ten years, in seconds):
#: far beyond any real use, and every deadline in ms stays exact in Redis' Lua doubles.
MAX_SECONDS = 10 * 366 * 86_400.0
#: The longest bound on one Redis call.
MAX_TIMEOUT_S = 3_600.0
#: The largest call cap: counts stay exact in Redis' Lua doubles.
MAX_CALLS = 2**53
#: The longest scope name (it is part of every key of the scope).
MAX_SCOPE_CHARS = 512


def number(
    name: str,
    value: object,
    *,
    positive: bool,
    optional: bool = True,
    most: float | None = None,
    owner: str = "FleetLimits",
) -> float | None:
    """``value`` as a float, or the error naming ``owner``, ``name`` and the value.

    Example::

        >>> number("lease_s", 60, positive=True)
        60.0
        >>> number("timeout", -1, positive=True, owner="configure()")
        Traceback (most recent call last):
        ...
        ValueError: configure() timeout must be a finite number > 0, got -1
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{owner} {name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        need = "a finite number > 0" if positive else "a finite number >= 0"
        raise ValueError(f"{owner} {name} must be {need}, got {value!r}")
    if most is not None and value > most:
        raise ValueError(f"{owner} {name} must be at most {most:g}, got {value!r}")
    return float(value)


def seconds(name: str, value: object, *, most: float = MAX_SECONDS) -> float:
    """A required duration in ``(0, most]`` seconds.

    Example::

        >>> seconds("window_s", 86_400)
        86400.0
    """
    return float(number(name, value, positive=True, optional=False, most=most) or 0.0)


def calls_cap(value: object) -> int | None:
    """``max_calls``: None or an int in ``[0, 2**53]``.

    Example::

        >>> calls_cap(10_000)
        10000
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"FleetLimits max_calls must be an int, got {value!r}")
    if not 0 <= value <= MAX_CALLS:
        raise ValueError(f"FleetLimits max_calls must be in [0, 2**53], got {value!r}")
    return value


def scope_name(scope: object) -> str:
    """A scope name every process and Redis can agree on, or a clear error.

    Non-empty, at most ``MAX_SCOPE_CHARS``, no braces (they pick the Redis
    Cluster hash slot), and valid UTF-8 text: a lone surrogate (say, from a
    mis-decoded header) would otherwise fail on every call with an untyped
    ``UnicodeEncodeError``.

    Example::

        >>> scope_name("tenant-42")
        'tenant-42'
    """
    if not isinstance(scope, str):
        raise TypeError(
            f"FleetLimits scope must be a non-empty string, got {type(scope).__name__}: {scope!r}"
        )
    if not scope.strip():
        raise ValueError(f"FleetLimits scope must be a non-empty string, got {scope!r}")
    if "{" in scope or "}" in scope:
        raise ValueError(f"FleetLimits scope must not contain braces, got {scope!r}")
    if len(scope) > MAX_SCOPE_CHARS:
        raise ValueError(
            f"FleetLimits scope must be at most {MAX_SCOPE_CHARS} characters, "
            f"got {len(scope)}: {scope[:40]!r}..."
        )
    try:
        scope.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"FleetLimits scope must be valid Unicode text (no lone surrogates), got {scope!r}"
        ) from exc
    if any(ord(char) < 32 or 127 <= ord(char) < 160 for char in scope):
        # A NUL or an escape sequence in a key name ends up in logs, labels and terminals.
        raise ValueError(f"FleetLimits scope must not contain control characters, got {scope!r}")
    return scope


def model_key(model: str) -> str:
    """A model name as a Redis field: names from responses that are not valid UTF-8
    (lone surrogates) are escaped instead of failing the call.

    Example::

        >>> model_key("gpt-4o")
        'gpt-4o'
    """
    try:
        model.encode("utf-8")
    except UnicodeEncodeError:
        return model.encode("utf-8", "backslashreplace").decode("utf-8")
    return model


def text(value: Any) -> str:
    """A Redis reply field as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def reason(exc: BaseException) -> str:
    """An exception as one short line for a log or an error."""
    said = str(exc).strip()
    return f"{type(exc).__name__}: {said}" if said else type(exc).__name__
