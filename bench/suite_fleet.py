"""Fleet limits: time a model call pays for its fleet scope, and fleet throughput.

A real redis-server (Debian's) is started on 127.0.0.1 and a free port. Per
call, a fleet scope costs one ``reserve`` and one ``settle``, each one Lua
script, so two loopback round trips: the floor is two calls of a Lua script
that only returns (same client, same number of keys and arguments), and one
``PING`` is shown beside it. Throughput is admitted-and-settled calls
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

from techrevati.runtime import FleetLimits, UsageSnapshot, agent_session
from techrevati.runtime.fleet.sessions import RedisSessionStore
from techrevati.runtime.telemetry.limits import remote

from . import harness
from .harness import Result

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
            [
                *(binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", self.dir.name),
            ],
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
        n = 300 if quick else 1000

        # Per-call timings, the kinds interleaved call by call, summarised
        # by their median per round: on a shared machine a batch mean mostly
        # measures who else got the CPU during the batch.
        # "Two round trips" measured as such: two calls of a script that only
        # returns, with as many keys and arguments as admission sends.
        trivial = ping_client.register_script("return 1")
        trip_keys, trip_args = ["k1", "k2"], [86_400_000, 600_000, -1, -1, 0, "m", "h", "0"]

        def round_medians() -> dict[str, float]:
            timings: dict[str, list[float]] = {
                "ping": [],
                "two_trips": [],
                "fleet_call": [],
                "reserve": [],
                "local_turn": [],
                "shared_turn": [],
            }
            reserve, settle, now = fleet.reserve, fleet.settle, time.perf_counter
            usage = UsageSnapshot(10, 2)

            def local_run(model: str, body: Any, usage: UsageSnapshot) -> None:
                local.run_turn(body, model=model, usage=usage)

            def shared_run(model: str, body: Any, usage: UsageSnapshot) -> None:
                shared.run_turn(body, model=model, usage=usage)

            for _ in range(n):
                t0 = now()
                ping_client.ping()
                t1 = now()
                trivial(keys=trip_keys, args=trip_args)
                trivial(keys=trip_keys, args=trip_args)
                t2 = now()
                settle(reserve("gpt-4o-mini", 0.002), 0.0017)
                t3 = now()
                hold = reserve("gpt-4o-mini", 0.002)
                t4 = now()
                settle(hold, 0.0017)
                t5 = now()
                local_run("m", lambda: "ok", usage=usage)
                t6 = now()
                shared_run("m", lambda: "ok", usage=usage)
                t7 = now()
                timings["local_turn"].append(t6 - t5)
                timings["shared_turn"].append(t7 - t6)
                timings["ping"].append(t1 - t0)
                timings["two_trips"].append(t2 - t1)
                timings["fleet_call"].append(t3 - t2)
                timings["reserve"].append(t4 - t3)
            return {name: harness.median(values) for name, values in timings.items()}

        rounds = 5 if quick else 15
        result.rounds = rounds
        # A shared session's turn against an unshared one's, interleaved call by call.
        remote.install_store(RedisSessionStore(server.url))
        cap = 10**9
        local_cm = agent_session("bench-local", max_iterations=cap, budget_usd=1e9)
        shared_cm = agent_session("bench-shared", max_iterations=cap, budget_usd=1e9, shared=True)
        local = local_cm.__enter__()
        shared = shared_cm.__enter__()
        round_medians()  # warm-up: connections, script cache
        per_round = [round_medians() for _ in range(rounds)]
        shared_cm.__exit__(None, None, None)
        local_cm.__exit__(None, None, None)
        remote.install_store(None)
        labels = {
            "ping": ("one PING round trip", None),
            "two_trips": ("two round trips of a script that only returns", "ping"),
            "fleet_call": ("reserve + settle (one model call)", "two_trips"),
            "reserve": ("reserve alone", "ping"),
            "local_turn": ("run_turn in an unshared session", None),
            "shared_turn": ("run_turn in a shared session (shared=True)", "local_turn"),
        }
        for name, (label, floor) in labels.items():
            result.add_row(name, label, [r[name] for r in per_round], floor, note="median per call")

        per_process = 500 if quick else 2000
        runs = 1 if quick else 3
        single = [throughput(server.url, f"bench-tp-1-{i}", 1, per_process) for i in range(runs)]
        six = [throughput(server.url, f"bench-tp-6-{i}", 6, per_process) for i in range(runs)]
        result.add_row("tp_1", "throughput, 1 process", single, unit="/s")
        result.add_row("tp_6", "throughput, 6 processes, one Redis", six, unit="/s")
        counted = sum(_scope(server.url, f"bench-tp-6-{i}").usage().calls for i in range(runs))
        expected = runs * 6 * (per_process + 20)
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
