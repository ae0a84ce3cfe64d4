"""The fleet level contract (reserve / settle / release) against a real redis-server."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from techrevati.runtime import (
    BudgetExceededError,
    FleetLimits,
    FleetUnavailableError,
    MaxIterationsExceededError,
)
from techrevati.runtime.fleet import FleetHold

from .redis_server import RedisServer


def wait_until(predicate: object, what: str, limit_s: float = 20.0) -> None:
    """Poll until ``predicate()`` holds; a deadline only turns a hang into a failure."""
    deadline = time.monotonic() + limit_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_reserve_counts_and_reserves_settle_replaces_once(redis_server: RedisServer) -> None:
    fleet = FleetLimits(redis_server.url, scope="t1", budget_usd=5.0)
    hold = fleet.reserve("gpt-4o-mini", 0.3)
    assert hold.backed and hold.reserved_usd == 0.3 and hold.scope == "t1"
    usage = fleet.usage()
    assert (usage.calls, usage.spent_usd, usage.reserved_usd, usage.in_flight) == (1, 0.0, 0.3, 1)

    fleet.settle(hold, 0.4)
    usage = fleet.usage()
    assert (usage.calls, usage.spent_usd, usage.reserved_usd, usage.in_flight) == (1, 0.4, 0.0, 0)

    fleet.settle(hold, 0.4)  # a second settlement books nothing
    fleet.release(hold)  # nor does a release after it
    usage = fleet.usage()
    assert (usage.calls, usage.spent_usd, usage.reserved_usd) == (1, 0.4, 0.0)


def test_call_cap_is_exact_and_names_the_scope(redis_server: RedisServer) -> None:
    fleet = FleetLimits(redis_server.url, scope="capped", max_calls=3)
    holds = [fleet.reserve("m") for _ in range(3)]
    with pytest.raises(MaxIterationsExceededError) as refused:
        fleet.reserve("m")
    assert refused.value.scope == "capped" and refused.value.max_iterations == 3
    assert fleet.usage().calls == 3

    # A call refused by another level never ran: releasing it gives its slot back.
    fleet.release(holds[0], ran=False)
    assert fleet.usage().calls == 2
    again = fleet.reserve("m")
    # A call that ran and failed stays counted (the default).
    fleet.release(again)
    assert fleet.usage().calls == 3
    with pytest.raises(MaxIterationsExceededError):
        fleet.reserve("m")


def test_budget_admission_lets_the_crossing_call_run(redis_server: RedisServer) -> None:
    fleet = FleetLimits(redis_server.url, scope="b", budget_usd=1.0)
    first = fleet.reserve("m", 0.6)
    second = fleet.reserve("m", 0.6)  # spent + reserved = 0.6 < 1.0: admitted, crosses
    with pytest.raises(BudgetExceededError) as refused:
        fleet.reserve("m", 0.6)  # 1.2 reserved has reached the budget
    error = refused.value
    assert (error.scope, error.budget_usd, error.current_cost_usd) == ("b", 1.0, 1.2)
    # All of it is held by the two calls in flight: the message says so.
    assert error.reserved_usd == pytest.approx(1.2)
    assert "Of that, $0.0000 was spent and $1.2000 is reserved by calls still in flight" in str(
        error
    )
    assert fleet.usage().calls == 2  # a refused call is not counted

    fleet.settle(first, 0.5)
    fleet.settle(second, 0.4)
    usage = fleet.usage()
    assert (usage.spent_usd, usage.reserved_usd) == (0.9, 0.0)
    third = fleet.reserve("m", 0.6)  # 0.9 < 1.0: admitted again
    fleet.settle(third, 0.6)
    with pytest.raises(BudgetExceededError) as refused:
        fleet.reserve("m", 0.0)
    assert (refused.value.current_cost_usd, refused.value.reserved_usd) == (1.5, 0.0)


def test_the_learned_cost_is_the_largest_settled_one(redis_server: RedisServer) -> None:
    fleet = FleetLimits(redis_server.url, scope="learn", budget_usd=10.0)
    assert fleet.learned_cost("m") is None
    fleet.settle(fleet.reserve("m", 0.1), 0.25)
    assert fleet.learned_cost("m") == 0.25
    assert fleet.reserve("m", 0.1).reserved_usd == 0.25  # the learned cost wins
    assert fleet.reserve("m", 0.5).reserved_usd == 0.5  # a larger estimate wins
    fleet.settle(fleet.reserve("m"), 0.1)
    assert fleet.learned_cost("m") == 0.25
    assert fleet.reserve("other", 0.0).reserved_usd == 0.0  # learned per model


def test_a_models_first_call_runs_alone_as_a_probe(redis_server: RedisServer) -> None:
    fleet = FleetLimits(redis_server.url, scope="probe", budget_usd=10.0)
    probe = fleet.reserve("new-model", 0.0)
    assert probe.reserved_usd == 0.0
    got: list[FleetHold] = []
    waiter = threading.Thread(target=lambda: got.append(fleet.reserve("new-model", 0.0)))
    waiter.start()
    time.sleep(0.3)
    # Still waiting for the probe (a wrong implementation returns at once).
    assert got == [] and fleet.usage().calls == 1
    fleet.settle(probe, 0.2)
    waiter.join(timeout=20)
    assert len(got) == 1 and got[0].reserved_usd == 0.2
    assert fleet.usage().calls == 2

    # A probe that failed without a cost hands the probe role to the next call.
    second = fleet.reserve("other-model", 0.0)
    waiter = threading.Thread(target=lambda: got.append(fleet.reserve("other-model", 0.0)))
    waiter.start()
    time.sleep(0.2)
    assert len(got) == 1
    fleet.release(second)
    waiter.join(timeout=20)
    assert len(got) == 2 and got[1].reserved_usd == 0.0
    assert fleet.learned_cost("other-model") is None


def test_probe_wait_zero_runs_unreserved_and_no_budget_means_no_probe(
    redis_server: RedisServer,
) -> None:
    impatient = FleetLimits(redis_server.url, scope="p0", budget_usd=10.0, probe_wait_s=0)
    impatient.reserve("m")
    assert impatient.reserve("m").reserved_usd == 0.0
    assert impatient.usage().calls == 2

    uncapped = FleetLimits(redis_server.url, scope="p1", max_calls=10)
    uncapped.reserve("m")
    uncapped.reserve("m")
    assert uncapped.usage().calls == 2


def test_an_expired_lease_frees_the_reservation_and_a_late_settle_books_once(
    redis_server: RedisServer,
) -> None:
    fleet = FleetLimits(redis_server.url, scope="lease", budget_usd=1.0, lease_s=0.3)
    hold = fleet.reserve("m", 1.0)  # its worker "dies": nobody settles it in time
    with pytest.raises(BudgetExceededError):
        fleet.reserve("m", 0.1)
    wait_until(lambda: fleet.usage().reserved_usd == 0.0, "the lease to run out")
    assert (fleet.usage().in_flight, fleet.usage().calls) == (0, 1)
    fleet.release(fleet.reserve("m", 0.1), ran=False)  # admitted again: the lease freed it

    late = copy.copy(hold)  # what another process retrying the settlement would hold
    fleet.settle(hold, 0.7)
    assert fleet.usage().spent_usd == 0.7
    other = FleetLimits(redis_server.url, scope="lease", budget_usd=1.0, lease_s=0.3)
    other.settle(late, 0.7)  # the store refuses a second booking of the same hold
    assert other.usage().spent_usd == 0.7


def test_window_rollover_resets_counts_and_old_keys_expire(redis_server: RedisServer) -> None:
    client = redis_server.client()

    def server_ms() -> int:
        seconds, micros = client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def spend_one_window(scope: str) -> tuple[FleetLimits, list[FleetHold]] | None:
        """Exhaust the budget inside one 2 s window; None if the machine was too slow."""
        fleet = FleetLimits(
            redis_server.url, scope=scope, budget_usd=1.0, max_calls=100, window_s=2.0, lease_s=0.5
        )
        # Start early in a window so the spending below stays inside it.
        wait_until(lambda: server_ms() % 2000 < 300, "the start of a window")
        holds = [fleet.reserve("m", 0.4) for _ in range(3)]
        for hold in holds:
            fleet.settle(hold, 0.4)
        try:
            fleet.reserve("m", 0.4)
        except BudgetExceededError:
            pass
        else:
            return None  # a window ended while spending
        if len({hold.window_start for hold in holds}) != 1:
            return None
        return fleet, holds

    for attempt in range(5):
        spent = spend_one_window(f"win{attempt}")
        if spent is not None:
            break
    else:
        raise AssertionError("never managed to spend a budget inside one 2 s window")
    fleet, holds = spent
    start = holds[0].window_start
    assert start % 2.0 == 0.0  # aligned to multiples of window_s since the epoch
    window_key = f"techrevati:fleet:{{{fleet.scope}}}:{holds[0].window}"
    ttl_ms = client.pttl(window_key)
    # The window's keys live until its end + the lease, not longer.
    assert 0 < ttl_ms <= (start + 2.0 + 0.5) * 1000 - server_ms() + 5

    wait_until(lambda: fleet.usage().window_start > start, "the next window")
    fresh = fleet.reserve("m", 0.4)  # the budget is back
    assert fresh.window_start > start and fresh.window_start % 2.0 == 0.0
    assert fresh.window == holds[0].window + round((fresh.window_start - start) / 2.0)
    wait_until(lambda: client.exists(window_key) == 0, "the old window's keys to expire")
    fleet.settle(fresh, 0.1)
    client.close()


def test_scopes_are_independent_and_a_client_can_be_passed(redis_server: RedisServer) -> None:
    client = redis_server.client()
    a = FleetLimits(client, scope="a", max_calls=1)
    b = FleetLimits(client, scope="b", max_calls=1)
    a.reserve("m")
    b.reserve("m")
    with pytest.raises(MaxIterationsExceededError) as refused:
        a.reserve("m")
    assert refused.value.scope == "a"
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(a)
    client.close()


def test_a_pickled_scope_shares_the_counts(redis_server: RedisServer) -> None:
    fleet = FleetLimits(redis_server.url, scope="pk", max_calls=2, lease_s=30.0)
    clone = pickle.loads(pickle.dumps(fleet))
    assert (clone.scope, clone.max_calls, clone.lease_s) == ("pk", 2, 30.0)
    fleet.reserve("m")
    clone.reserve("m")
    with pytest.raises(MaxIterationsExceededError):
        fleet.reserve("m")


def test_usage_of_an_unreachable_store_raises_fleet_unavailable(tmp_path: object) -> None:
    from .redis_server import free_port

    fleet = FleetLimits(f"redis://127.0.0.1:{free_port()}/0", scope="gone", timeout_s=0.2)
    with pytest.raises(FleetUnavailableError) as refused:
        fleet.usage()
    assert refused.value.scope == "gone"


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"scope": ""}, ValueError, "''"),
        ({"scope": "a{b}"}, ValueError, "a{b}"),
        ({"scope": "s", "budget_usd": -1.0}, ValueError, "-1.0"),
        ({"scope": "s", "budget_usd": float("nan")}, ValueError, "nan"),
        ({"scope": "s", "budget_usd": "5"}, TypeError, "'5'"),
        ({"scope": "s", "max_calls": 2.5}, TypeError, "2.5"),
        ({"scope": "s", "max_calls": -1}, ValueError, "-1"),
        ({"scope": "s", "max_calls": True}, TypeError, "True"),
        ({"scope": "s", "window_s": 0}, ValueError, "window_s"),
        ({"scope": "s", "lease_s": 0}, ValueError, "lease_s"),
        ({"scope": "s", "timeout_s": -0.5}, ValueError, "-0.5"),
        ({"scope": "s", "on_store_error": "ignore"}, ValueError, "'ignore'"),
    ],
)
def test_bad_options_name_the_bad_value(
    kwargs: dict[str, object], error: type[Exception], names: str
) -> None:
    with pytest.raises(error) as raised:
        FleetLimits("redis://127.0.0.1:1/0", **kwargs)  # type: ignore[arg-type]
    assert names in str(raised.value)


def test_bad_calls_name_the_bad_value(redis_server: RedisServer) -> None:
    fleet = FleetLimits(redis_server.url, scope="bad", max_calls=5)
    with pytest.raises(TypeError, match="None"):
        FleetLimits(None, scope="x")
    with pytest.raises(TypeError, match="42"):
        fleet.reserve(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"-0\.1"):
        fleet.reserve("m", -0.1)
    assert fleet.usage().calls == 0  # nothing half-recorded
    hold = fleet.reserve("m")
    with pytest.raises(ValueError, match="inf"):
        fleet.settle(hold, float("inf"))
    with pytest.raises(TypeError, match="FleetHold"):
        fleet.settle("hold", 0.1)  # type: ignore[arg-type]
    other = FleetLimits(redis_server.url, scope="other")
    with pytest.raises(ValueError, match="'bad'"):
        other.settle(hold, 0.1)
    fleet.settle(hold, 0.1)  # the hold is still open after the bad calls
    assert fleet.usage().spent_usd == 0.1


def test_the_package_imports_without_redis_and_names_the_extra() -> None:
    code = """
        import sys
        sys.modules["redis"] = None  # as if the optional client were not installed
        import techrevati.runtime as rt
        assert "FleetLimits" in rt.__all__
        try:
            rt.FleetLimits("redis://127.0.0.1:6379/0", scope="t")
        except ImportError as err:
            print(err)
        else:
            raise SystemExit("no ImportError")
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "pip install redis" in proc.stdout and "pip install '.[redis]'" in proc.stdout
    assert "techrevati-runtime[redis]" not in proc.stdout  # not on the public index
