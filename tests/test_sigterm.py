"""SIGTERM ends open sessions, flushes, reports, then dies of it: by default, and chained.

Every test runs a real child process and sends it a real SIGTERM, as ``docker
stop`` / Kubernetes do.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

SCRIPT = """
import faulthandler, signal, sys, time
faulthandler.enable()  # a hang is dumped (SIGABRT from _finish) instead of lost
from techrevati.runtime.orchestrator import Orchestrator
from techrevati.runtime.telemetry.setup.configure import configure
from techrevati.runtime.usage_tracking import UsageSnapshot

if sys.argv[2] == "chained":  # the application had its own handler first
    def mine(signum, frame):
        print("USER HANDLER", flush=True)
        sys.exit(3)
    signal.signal(signal.SIGTERM, mine)
configure(service_name="stopped", handle_sigterm={"on": True, "off": False}.get(sys.argv[1]))
orch = Orchestrator(role="long-runner", phase="p")
with orch.session() as session:
    session.run_turn(lambda: "ok", model="model-a", usage=UsageSnapshot(100, 10))
    print("READY", flush=True)
    session.run_turn(lambda: time.sleep(60), model="model-a")
"""


def _run(
    tmp_path: Path,
    *argv: str,
    script: str = SCRIPT,
    timeout: float = 60,
    delay: float = 0.0,
    pythonpath_tests: bool = False,
) -> tuple[int, str, str]:
    """Run ``script`` in a fresh process, SIGTERM it ``delay`` s after READY; exit and output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.pop("TECHREVATI_SPANS_FILE", None)
    if pythonpath_tests:  # the stand-ins in tests/
        here = str(Path(__file__).resolve().parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), here]))
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *argv],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "READY"
    _wait_until_blocked(process.pid)
    time.sleep(delay)
    process.send_signal(signal.SIGTERM)
    out, err = _finish(process, timeout)
    return process.returncode, out, err


def _wait_until_blocked(pid: int) -> None:
    """Return once the child's main thread is blocked in the call it makes after READY.

    CPython runs a Python signal handler on the main thread between two
    bytecodes, or when a blocking call is interrupted. A signal whose C-level
    handler runs after the last such check but before the call blocks (the
    instants after READY, stretched by a loaded machine) is only acted on when
    the call returns: a minute later for a ``time.sleep(60)``, which is a race
    of this harness (it signals exactly then), not the hang these tests look
    for. So the signal is sent once the thread has been sleeping (state ``S``)
    for 0.1 s; where /proc is missing, half a second after READY.
    """
    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists():
        time.sleep(0.5)
        return
    asleep_since: float | None = None
    waited = 0.0
    while waited < 30.0:
        now = time.monotonic()
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return  # the child is gone: its exit status says why
        if state != "S":
            asleep_since = None
        elif asleep_since is None:
            asleep_since = now
        elif now - asleep_since >= 0.1:
            return
        time.sleep(0.01)
        waited += min(time.monotonic() - now, 0.1)


def _finish(process: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """The child's output once it has exited; a child still running is dumped and failed.

    ``timeout`` counts the time the machine gave the child: each one-second wait
    counts for at most two, so a loaded machine that stalls for a minute (the
    child with it) does not fail a child that was never given the time, while a
    child that hangs still fails after ``timeout`` seconds.
    """
    waited = 0.0
    while waited < timeout:
        started = time.monotonic()
        try:
            return process.communicate(timeout=1.0)  # retried without losing output
        except subprocess.TimeoutExpired:
            waited += min(time.monotonic() - started, 2.0)
    process.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
    out, err = process.communicate(timeout=30)
    raise AssertionError(f"still running {timeout} s after SIGTERM:\n{err}\n{out}")


def _spans(tmp_path: Path, prefix: str) -> list[dict[str, object]]:
    """Attributes of the written spans whose name starts with ``prefix``."""
    path = tmp_path / "telemetry-out" / "spans.jsonl"
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        for resource_spans in json.loads(line)["resourceSpans"]:
            for scope_spans in resource_spans["scopeSpans"]:
                for span in scope_spans["spans"]:
                    if span["name"].startswith(prefix):
                        found.append({a["key"]: a["value"] for a in span.get("attributes", [])})
    return found


def _sessions(tmp_path: Path) -> list[dict[str, object]]:
    return _spans(tmp_path, "invoke_agent")


def test_sigterm_ends_the_session_writes_the_report_and_still_kills(tmp_path: Path) -> None:
    code, _out, err = _run(tmp_path, "on", "plain")
    assert code == -signal.SIGTERM
    assert "techrevati telemetry: SIGTERM: ended 1 open session; flushing" in err
    # The report: the session, its finished turn and the turn cut off mid-call (still
    # open when the signal arrives, so it has no span; the session admitted it, its
    # cap counted it, and the report counts what the cap counted).
    assert "1 session, 2 model calls" in err
    [session] = _sessions(tmp_path)
    assert session["techrevati.session.outcome"] == {"stringValue": "cancelled"}


# A call in flight when SIGTERM arrives: the provider has it and bills it.
IN_FLIGHT = """
import faulthandler, sys, time
faulthandler.enable()
from techrevati.runtime import ModelPricing, register_pricing
from techrevati.runtime.orchestrator import Orchestrator
from techrevati.runtime.telemetry.setup.configure import configure
from techrevati.runtime.usage_tracking import UsageSnapshot

register_pricing("model-sig", ModelPricing(1000.0, 0.0))  # 100 input tokens: $0.10
configure(service_name="stopped")
orch = Orchestrator(role="worker", phase="p", budget_usd=10.0, enforce_budget=True)
with orch.session() as session:
    session.run_turn(lambda: "ok", model="model-sig", usage=UsageSnapshot(100, 0))
    print("READY", flush=True)
    session.run_turn(lambda: time.sleep(60), model="model-sig")
"""


def test_a_call_in_flight_at_sigterm_is_booked_at_its_estimate(tmp_path: Path) -> None:
    # Its session ended CANCELLED with the call released: the session span and the
    # report said $0.10 while a fleet scope booked the hold it reserved ($0.20 in all).
    code, _out, err = _run(tmp_path, "on", "plain", script=IN_FLIGHT)
    assert code == -signal.SIGTERM
    [session] = _sessions(tmp_path)
    assert session["techrevati.cost.usd"] == {"doubleValue": 0.2}
    assert session["techrevati.session.turns"] == {"intValue": "2"}
    assert "was still in flight when the process was stopped (SIGTERM)" in err


# A bare client's request in flight (the server answers after a minute): the guard
# admitted it at its request's estimate, and nothing else estimates it.
BARE_IN_FLIGHT = """
import faulthandler, sys
faulthandler.enable()
import openai
from fake_openai import FakeOpenAI, serve
from techrevati.runtime import ModelPricing, agent_session, register_pricing
from techrevati.runtime.telemetry.setup.configure import configure

register_pricing("model-sig", ModelPricing(1000.0, 0.0))
configure(service_name="stopped")
with serve(FakeOpenAI({}, delay=60)) as api:
    client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0, timeout=120)
    with agent_session("w", budget_usd=10.0, enforce_budget=True):
        print("READY", flush=True)
        client.chat.completions.create(
            model="model-sig", messages=[{"role": "user", "content": "x" * 400}], max_tokens=1
        )
"""


def test_a_bare_clients_request_in_flight_at_sigterm_is_booked_at_its_reservation(
    tmp_path: Path,
) -> None:
    # Booked at $0 ("nothing to estimate it from"), which also told a fleet scope the
    # model costs $0: what it reserved is what it is booked at, here and in the fleet.
    code, _out, err = _run(tmp_path, "on", "plain", script=BARE_IN_FLIGHT, pythonpath_tests=True)
    assert code == -signal.SIGTERM
    [session] = _sessions(tmp_path)
    # Its messages as JSON, 434 characters: 109 tokens at $1,000 per million, and
    # max_tokens=1 at $0.
    assert session["techrevati.cost.usd"] == {"doubleValue": 0.109}
    assert "was still in flight when the process was stopped (SIGTERM)" in err


# A finished call, then three bare client's requests in flight on threads, in a session
# with a cap and no budget.
CAP_ONLY_IN_FLIGHT = """
import faulthandler, sys, threading, time
faulthandler.enable()
import openai
from fake_openai import FakeOpenAI, serve
from techrevati.runtime import ModelPricing, agent_session, register_pricing
from techrevati.runtime.telemetry.setup.configure import configure

register_pricing("model-sig", ModelPricing(1000.0, 0.0))
configure(service_name="stopped")
ANSWER = {
    "id": "c", "object": "chat.completion", "created": 0, "model": "model-sig",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 100, "completion_tokens": 1, "total_tokens": 101},
}
with serve(FakeOpenAI(ANSWER, delays=[0.0], delay=60)) as api:  # the first answers at once
    client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0, timeout=120)

    def ask():
        client.chat.completions.create(
            model="model-sig", messages=[{"role": "user", "content": "x" * 400}], max_tokens=1
        )

    with agent_session("w", max_iterations=20) as session:
        ask()  # $0.10: what a call of the model is known to cost
        threads = [threading.Thread(target=session.wrap(ask), daemon=True) for _ in range(3)]
        for thread in threads:
            thread.start()
        while len(api.requests) < 4:
            time.sleep(0.01)
        print("READY", flush=True)
        for thread in threads:
            thread.join()
"""


def test_calls_in_flight_at_sigterm_are_booked_without_a_budget_and_said_at_once(
    tmp_path: Path,
) -> None:
    # A session with only a cap booked them at $0, as calls with usage, and said nothing:
    # the estimate was asked before the call was marked stopped, which only a budget
    # estimates. With a budget, the one warning said "a call" for three, at threading.py.
    code, _out, err = _run(
        tmp_path, "on", "plain", script=CAP_ONLY_IN_FLIGHT, pythonpath_tests=True
    )
    assert code == -signal.SIGTERM
    [session] = _sessions(tmp_path)
    # The finished call, and each in flight at what the model is known to cost ($0.10).
    assert session["techrevati.cost.usd"] == {"doubleValue": 0.4}
    assert session["techrevati.session.calls_without_usage"] == {"intValue": "3"}
    assert session["techrevati.session.calls_estimated"] == {"intValue": "3"}
    said = [line for line in err.splitlines() if "RuntimeWarning" in line]
    assert said == [
        "<SIGTERM>:0: RuntimeWarning: 3 calls of model 'model-sig' in session 'w' were still "
        "in flight when the process was stopped (SIGTERM), so they were booked at an estimate "
        "($0.3000 in all, counted as estimated on the spans, the session span and the "
        "report): the provider has their requests and bills them"
    ]


# The case: a plain configure(), stopped half a second after the last call.
WORKLOAD = """
import faulthandler, signal, sys, time
faulthandler.enable()
from techrevati.runtime.orchestrator import Orchestrator
from techrevati.runtime.telemetry.setup.configure import configure
from techrevati.runtime.usage_tracking import UsageSnapshot

if sys.argv[2] == "before":  # the application's own handler, set before configure()
    def mine(signum, frame):
        print("USER HANDLER", flush=True)
        sys.exit(3)
    signal.signal(signal.SIGTERM, mine)
configure(service_name="stopped")
if sys.argv[2] == "after":  # ... or after it
    def mine(signum, frame):
        print("USER HANDLER", flush=True)
        sys.exit(3)
    signal.signal(signal.SIGTERM, mine)
orch = Orchestrator(role="worker", phase="p")
with orch.session() as session:
    for _ in range(3):
        session.run_turn(lambda: "ok", model="model-a", usage=UsageSnapshot(100, 10))
    if sys.argv[1] == "inside":  # stopped while the session is open
        print("READY", flush=True)
        time.sleep(60)
print("READY", flush=True)  # stopped after the session ended, spans still queued
time.sleep(60)
"""


def test_a_plain_configure_handles_sigterm_inside_a_session(tmp_path: Path) -> None:
    code, _out, err = _run(tmp_path, "inside", "plain", script=WORKLOAD, delay=0.5)
    assert code == -signal.SIGTERM  # still dies of the signal, as its supervisor expects
    assert len(_spans(tmp_path, "chat model-a")) == 3
    [session] = _sessions(tmp_path)
    assert session["techrevati.session.outcome"] == {"stringValue": "cancelled"}
    assert session["techrevati.session.turns"] == {"intValue": "3"}
    assert "SIGTERM: ended 1 open session; flushing" in err
    assert "1 session, 3 model calls" in err  # the report


def test_a_plain_configure_handles_sigterm_after_the_session(tmp_path: Path) -> None:
    code, _out, err = _run(tmp_path, "after", "plain", script=WORKLOAD, delay=0.5)
    assert code == -signal.SIGTERM
    assert len(_spans(tmp_path, "chat model-a")) == 3
    [session] = _sessions(tmp_path)
    assert session["techrevati.session.outcome"] == {"stringValue": "completed"}
    assert "SIGTERM: ended 0 open sessions; flushing" in err
    assert "1 session, 3 model calls" in err


def test_by_default_an_earlier_application_handler_is_left_alone(tmp_path: Path) -> None:
    code, out, err = _run(tmp_path, "inside", "before", script=WORKLOAD, delay=0.5)
    assert "USER HANDLER" in out and code == 3
    assert "SIGTERM: ended" not in err  # not taken: the application stops its own way
    # Its handler exits normally, so the exit-time flush still writes the run.
    assert len(_spans(tmp_path, "chat model-a")) == 3
    # Its sys.exit() leaves the session's block as SystemExit: stopped from outside.
    outcome = _sessions(tmp_path)[0]["techrevati.session.outcome"]
    assert outcome == {"stringValue": "cancelled"}


def test_a_handler_installed_after_configure_wins(tmp_path: Path) -> None:
    code, out, err = _run(tmp_path, "inside", "after", script=WORKLOAD, delay=0.5)
    assert "USER HANDLER" in out and code == 3
    assert "SIGTERM: ended" not in err


def test_without_the_option_the_library_leaves_sigterm_alone(tmp_path: Path) -> None:
    code, _out, err = _run(tmp_path, "off", "plain")
    assert code == -signal.SIGTERM
    assert "SIGTERM" not in err and "telemetry report" not in err
    assert _sessions(tmp_path) == []  # killed before anything was flushed


def test_an_earlier_handler_of_the_application_still_runs_after_ours(tmp_path: Path) -> None:
    code, out, err = _run(tmp_path, "on", "chained")
    assert "USER HANDLER" in out
    assert code == 3
    assert "SIGTERM: ended 1 open session" in err
    assert len(_sessions(tmp_path)) == 1


def _holding(lock: str, configure_args: str = "") -> str:
    """A child script: ``configure(...)``, a session that made one priced turn, then its
    main thread holding ``lock`` (printing READY) when SIGTERM lands."""
    return textwrap.dedent(
        f"""
        import faulthandler, logging, time
        faulthandler.enable()
        from techrevati.runtime.orchestrator import Orchestrator
        from techrevati.runtime.telemetry.setup.configure import configure
        from techrevati.runtime.usage_tracking import UsageSnapshot

        configure(service_name="stopped", handle_sigterm=True{configure_args})
        orch = Orchestrator(role="long-runner", phase="p")
        with orch.session() as session:
            session.run_turn(lambda: "ok", model="model-a", usage=UsageSnapshot(100, 10))
            with {lock}:
                print("READY", flush=True)
                time.sleep(60)
        """
    )


# The signal lands while this thread holds the lock that ending the session
# takes (as it would mid-admission): the handler must not wait on it forever.
LOCKED = _holding("session.tracker._lock", ", shutdown_timeout=1.0")


def test_a_signal_that_lands_inside_a_held_lock_still_ends_the_process(tmp_path: Path) -> None:
    code, _out, err = _run(tmp_path, script=LOCKED, timeout=30)  # before: hung until killed
    assert code == -signal.SIGTERM
    assert "SIGTERM: flushing did not finish in time" in err


# The signal lands while this thread is inside a log call (it holds the lock of
# the handler that prints warnings): the work must neither wait on that lock nor
# leave it held for this thread to wait on afterwards.
LOGGING = _holding("logging.lastResort.lock")


def test_a_signal_that_lands_inside_a_log_call_still_flushes_everything(tmp_path: Path) -> None:
    code, _out, err = _run(tmp_path, script=LOGGING)  # before: nothing flushed, 6 s lost
    assert code == -signal.SIGTERM
    assert "techrevati telemetry: SIGTERM: ended 1 open session; flushing finished" in err
    assert "1 session, 1 model call" in err
    [session] = _sessions(tmp_path)
    assert session["techrevati.session.outcome"] == {"stringValue": "cancelled"}


STUCK_IN_C = """
import ctypes, faulthandler, time
faulthandler.enable()
from opentelemetry.sdk.trace import SpanProcessor
from techrevati.runtime.orchestrator import Orchestrator
from techrevati.runtime.telemetry.setup.configure import configure
from techrevati.runtime.usage_tracking import UsageSnapshot


class StuckInC(SpanProcessor):
    # A C extension that blocks without releasing the GIL (PyDLL keeps it across
    # the call), as the session span ends: no Python thread can run again.
    def on_end(self, span):
        if span.name.startswith("invoke_agent"):
            ctypes.PyDLL(None).sleep(60)


telemetry = configure(service_name="stopped", handle_sigterm=True, shutdown_timeout=1.0)
telemetry.tracer_provider.add_span_processor(StuckInC())
orch = Orchestrator(role="long-runner", phase="p")
with orch.session() as session:
    session.run_turn(lambda: "ok", model="model-a", usage=UsageSnapshot(100, 10))
    print("READY", flush=True)
    time.sleep(60)
"""


def test_a_process_stuck_while_flushing_is_ended_at_the_deadline(tmp_path: Path) -> None:
    # Before: the main thread never came back from its 2 s wait (it needs the GIL),
    # so the process ran on until the stuck call returned a minute later.
    code, _out, err = _run(tmp_path, script=STUCK_IN_C, timeout=30)
    assert code == 1  # faulthandler's watchdog: _exit(1) after the dump
    assert re.search(r"^Timeout \(0:00:\d\d\)!$", err, re.MULTILINE), err  # faulthandler's
    assert "in on_end" in err  # the dump names the call that was stuck


OFF_MAIN = """
import logging, signal, sys, threading
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
from techrevati.runtime.telemetry.setup.configure import configure

def setup():
    configure(service_name="stopped", handle_sigterm={"on": True}.get(sys.argv[1]))

thread = threading.Thread(target=setup)
thread.start()
thread.join()
print("SIG_DFL" if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL else "TAKEN", flush=True)
"""


def test_off_the_main_thread_sigterm_is_left_alone_and_said_only_when_asked(
    tmp_path: Path,
) -> None:
    for mode, warned in (("default", False), ("on", True)):
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        process = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(OFF_MAIN), mode],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert process.stdout.splitlines()[0] == "SIG_DFL", mode
        warning = "signals:configure(handle_sigterm=True) must be called from the main thread"
        assert (warning in process.stderr) is warned, process.stderr


TWO_SETUPS = """
import contextlib, faulthandler, sys, time
faulthandler.enable()
from techrevati.runtime.orchestrator import Orchestrator
from techrevati.runtime.telemetry.setup.configure import configure
from techrevati.runtime.usage_tracking import UsageSnapshot

# Two independent set-ups (set_global=False), e.g. two tenants: one handler, both flushed.
a = configure(service_name="a", set_global=False, spans_file="a.jsonl", report=False)
b = configure(service_name="b", set_global=False, spans_file="b.jsonl", report=False)
with contextlib.ExitStack() as stack:
    for handle in (a, b):
        orch = Orchestrator(role="worker", phase="p", tracer_provider=handle.tracer_provider)
        session = stack.enter_context(orch.session())
        session.run_turn(lambda: "ok", model="model-a", usage=UsageSnapshot(100, 10))
    print("READY", flush=True)
    time.sleep(60)
"""


def test_one_handler_flushes_every_set_up_alive_at_the_signal(tmp_path: Path) -> None:
    code, _out, err = _run(tmp_path, script=TWO_SETUPS, delay=0.5)
    assert code == -signal.SIGTERM
    assert "SIGTERM: ended 2 open sessions; flushing" in err
    for name in ("a.jsonl", "b.jsonl"):
        lines = (tmp_path / name).read_text().splitlines()
        names = [
            span["name"]
            for line in lines
            for resource_spans in json.loads(line)["resourceSpans"]
            for scope_spans in resource_spans["scopeSpans"]
            for span in scope_spans["spans"]
        ]
        assert sorted(names) == ["chat model-a", "invoke_agent worker"], name
