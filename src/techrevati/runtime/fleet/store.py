"""The Redis side of fleet limits: a client with bounded timeouts and the four scripts.

Imported only when a ``FleetLimits`` is built, so the package imports without
the optional ``redis`` client installed.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import scripts

#: What a failing store raises: Redis' own errors and socket-level ones.
STORE_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError)


#: Connections one scope object may open; callers beyond it wait for a free one.
MAX_CONNECTIONS = 128
#: How long a caller waits for a free connection before it counts as a store error.
#: A healthy Redis frees one within milliseconds; only a hung one holds them all,
#: and then each is freed after ``timeout_s`` anyway.
POOL_WAIT_S = 5.0


def connect(url: str, timeout_s: float, max_connections: int = MAX_CONNECTIONS) -> redis.Redis:
    """A client for ``url`` whose connect and reply each give up after ``timeout_s``.

    redis-py retries a failed command three times with backoff by default, which
    would multiply the time an agent waits on a hung store. Here a timeout is
    never retried; a broken connection is retried once at once, so a pooled
    connection that a Redis restart closed does not refuse a call (every script
    is idempotent per hold id, so a retry after a lost reply counts once).

    The pool blocks when all ``max_connections`` are busy (redis-py's default
    pool raises "Too many connections" at 100, which a busy but healthy service
    would see as an outage): a caller waits up to ``POOL_WAIT_S`` for a free one.
    """
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=POOL_WAIT_S,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        health_check_interval=0,
    )
    return redis.Redis(connection_pool=pool)


class RedisStore:
    """The scripts of one scope, bound to one client.

    Example::

        store = RedisStore(connect("redis://127.0.0.1:6379/0", 0.5), "techrevati:fleet:{t}")
        store.peek(window_ms=0, lease_ms=600_000)
    """

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.learned_key = f"{prefix}:learned"
        #: A shared session's scope (set by ``RedisSessionStore``): its close mark, which
        #: stops admissions and any write after the close; and how long its keys live
        #: without a window to end them (kept while in use; a killed parent never closes).
        self.gate: str | None = None
        self.keep_ms = 0
        # register_script sends EVALSHA and loads the script itself after a
        # restart wiped Redis' script cache (NOSCRIPT): still one round trip normally.
        self._admit = client.register_script(scripts.ADMIT)
        self._finish = client.register_script(scripts.FINISH)
        self._peek = client.register_script(scripts.PEEK)
        self._beat = client.register_script(scripts.BEAT)

    def admit(
        self,
        *,
        window_ms: int,
        lease_ms: int,
        max_calls: int,
        budget_nano: int,
        expected_nano: int,
        model: str,
        hold_id: str,
        force: bool,
        probe_alive_ms: int = 0,
    ) -> list[Any]:
        keys = [self.prefix, self.learned_key]
        if self.gate is not None:
            keys.append(self.gate)
        reply: list[Any] = self._admit(
            keys=keys,
            args=[
                window_ms,
                lease_ms,
                max_calls,
                budget_nano,
                expected_nano,
                model,
                hold_id,
                "1" if force else "0",
                self.keep_ms,
                probe_alive_ms,
            ],
        )
        return reply

    def finish(
        self, *, window: int, hold_id: str, actual_nano: int, model: str, mode: str, ttl_ms: int
    ) -> int:
        """1: finished now; 0: finished before; -1: the window's keys are gone."""
        keys = [f"{self.prefix}:{window}", self.learned_key]
        if self.gate is not None:
            keys.append(self.gate)
        done = self._finish(
            keys=keys, args=[hold_id, actual_nano, model, mode, ttl_ms, self.keep_ms]
        )
        return int(done)

    def beat(self, *, window: int, hold_id: str, alive_ms: int) -> bool:
        """Renew a probe's liveness: True while its hold is in flight, else False."""
        return int(self._beat(keys=[f"{self.prefix}:{window}"], args=[hold_id, alive_ms])) == 1

    def peek(self, *, window_ms: int, lease_ms: int) -> list[int]:
        keys = [self.prefix] if self.gate is None else [self.prefix, self.gate]
        reply = self._peek(keys=keys, args=[window_ms, lease_ms, self.keep_ms])
        return [int(v) for v in reply]

    def learned(self, model: str) -> int | None:
        value = self.client.hget(self.learned_key, model)
        return None if value is None else int(value)

    def close(self) -> None:
        self.client.close()
