"""Fleet limits: time a model call pays for its fleet scope, and fleet throughput.

A real redis-server (Debian's) is started on 127.0.0.1 and a free port. Per
call, a fleet scope costs one ``reserve`` and one ``settle``, each one Lua
script, so about two loopback round trips: the floor here is one ``PING``
round trip through the same client. Throughput is admitted-and-settled calls
per second from 1 and from 6 processes against the one Redis, with an exact
count check (the scope's counter equals the calls made).
"""

from __future__ import annotations

import multiprocessing
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from techrevati.runtime import FleetLimits

from . import harness
from .harness import Bench, Result

CTX = multiprocessing.get_context("spawn")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """redis-server without persistence, owned by this suite."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.port = _free_port()
        self.dir = tempfile.TemporaryDirectory(prefix="bench-redis-")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
            + ["--appendonly", "no", "--dir", self.dir.name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=self.port, socket_timeout=1)
        for _ in range(500):
            try:
                client.ping()
                break
            except redis.RedisError:
                time.sleep(0.02)
        else:
            raise RuntimeError("redis-server did not start")
        client.close()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.dir.cleanup()


def _scope(url: str, name: str) -> FleetLimits:
    return FleetLimits(url, scope=name, budget_usd=1e9, max_calls=10**12, window_s=86_400)


def _calls(fleet: FleetLimits, n: int) -> None:
    reserve, settle = fleet.reserve, fleet.settle
    for _ in range(n):
        settle(reserve("gpt-4o-mini", 0.002), 0.0017)


def _worker(url: str, name: str, n: int, barrier: Any, out: Any) -> None:
    fleet = _scope(url, name)
    _calls(fleet, 20)  # connect and load the scripts before the clock starts
    barrier.wait()
    start = time.perf_counter()
    _calls(fleet, n)
    out.put(time.perf_counter() - start)


def throughput(url: str, name: str, processes: int, per_process: int) -> float:
    """Calls per second of ``processes`` processes, from the first start to the last end."""
    barrier, out = CTX.Barrier(processes), CTX.Queue()
    procs = [
        CTX.Process(target=_worker, args=(url, name, per_process, barrier, out))
        for _ in range(processes)
    ]
    for proc in procs:
        proc.start()
    slowest = max(out.get(timeout=300) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
    return processes * per_process / slowest


def main() -> None:
    quick = harness.parse_args()
    result = Result(suite="fleet", title="fleet limits on a local Redis", rounds=0)
    server = Server()
    try:
        import redis

        ping_client = redis.Redis(port=server.port, socket_timeout=1)
        fleet = _scope(server.url, "bench-latency")
        n = 300 if quick else 1500

        def ping(k: int) -> None:
            for _ in range(k):
                ping_client.ping()

        def reserve_only(k: int) -> None:
            reserve = fleet.reserve
            for _ in range(k):
                reserve("gpt-4o-mini", 0.002)

        benches = [
            Bench("ping", "one PING round trip (floor)", harness.batch(ping, n)),
            Bench(
                "fleet_call",
                "reserve + settle (one model call)",
                harness.batch(lambda k: _calls(fleet, k), n),
                floor="ping",
            ),
            Bench(
                "reserve",
                "reserve alone",
                harness.batch(reserve_only, n),
                floor="ping",
            ),
        ]
        rounds = 5 if quick else 15
        result.rounds = rounds
        samples = harness.interleave(benches, rounds, progress="fleet latency")
        harness.add_rows(result, benches, samples)

        per_process = 500 if quick else 3000
        single = throughput(server.url, "bench-tp-1", 1, per_process)
        six = throughput(server.url, "bench-tp-6", 6, per_process)
        result.add_row("tp_1", "throughput, 1 process", [single], unit="/s")
        result.add_row("tp_6", "throughput, 6 processes, one Redis", [six], unit="/s")
        counted = _scope(server.url, "bench-tp-6").usage().calls
        expected = 6 * (per_process + 20)
        result.check(
            "fleet counter exact under 6 processes",
            counted == expected,
            f"{counted:,} counted / {expected:,} calls made",
        )
        result.info.append(
            f"{sys.platform}, {multiprocessing.cpu_count()} CPUs shared by the 6 workers and Redis"
        )
        ping_client.close()
        fleet.close()
    finally:
        server.close()
    harness.emit(result)


if __name__ == "__main__":
    main()
