"""Logging for failures of user-supplied sinks and exporters, once per object.

A sink that fails on every call would otherwise flood the log of a long
session; one traceback per failing object says everything there is to say.
"""

from __future__ import annotations

import logging
import threading

_seen: set[tuple[int, str]] = set()
_lock = threading.Lock()
_MAX_REMEMBERED = 10_000  # bounded: ids of short-lived sinks must not pile up


def log_failure_once(logger: logging.Logger, culprit: object, message: str) -> None:
    """``logger.exception(message)`` the first time ``culprit`` fails this way; later, debug."""
    key = (id(culprit), message)
    with _lock:
        first = key not in _seen
        if first:
            if len(_seen) >= _MAX_REMEMBERED:
                _seen.clear()
            _seen.add(key)
    if first:
        logger.exception(message)
    else:
        logger.debug(message, exc_info=True)
