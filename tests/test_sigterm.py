"""configure(handle_sigterm=True): SIGTERM ends open sessions, flushes, reports, then dies of it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
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
configure(service_name="stopped", handle_sigterm=sys.argv[1] == "on")
orch = Orchestrator(role="long-runner", phase="p")
with orch.session() as session:
    session.run_turn(lambda: "ok", model="model-a", usage=UsageSnapshot(100, 10))
    print("READY", flush=True)
    session.run_turn(lambda: time.sleep(60), model="model-a")
"""


def _run(
    tmp_path: Path, *argv: str, script: str = SCRIPT, timeout: float = 60
) -> tuple[int, str, str]:
    """Run ``script`` in a fresh process, SIGTERM it once it says READY; its exit and output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.pop("TECHREVATI_SPANS_FILE", None)
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
    process.send_signal(signal.SIGTERM)
    out, err = _finish(process, timeout)
    return process.returncode, out, err


def _finish(process: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """The child's output once it has exited; a child still running is dumped and failed."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
        out, err = process.communicate(timeout=30)
        raise AssertionError(f"still running {timeout} s after SIGTERM:\n{err}\n{out}") from None


def _sessions(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "telemetry-out" / "spans.jsonl"
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        for resource_spans in json.loads(line)["resourceSpans"]:
            for scope_spans in resource_spans["scopeSpans"]:
                for span in scope_spans["spans"]:
                    if span["name"].startswith("invoke_agent"):
                        found.append({a["key"]: a["value"] for a in span.get("attributes", [])})
    return found


def test_sigterm_ends_the_session_writes_the_report_and_still_kills(tmp_path: Path) -> None:
    code, _out, err = _run(tmp_path, "on", "plain")
    assert code == -signal.SIGTERM
    assert "techrevati telemetry: SIGTERM: ended 1 open session; flushing" in err
    # The report: the session and its finished turn (the turn cut off mid-call is
    # still open when the signal arrives; its session is what gets ended).
    assert "1 session, 1 model call" in err
    [session] = _sessions(tmp_path)
    assert session["techrevati.session.outcome"] == {"stringValue": "cancelled"}


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


LOCKED = """
import faulthandler, sys, time
faulthandler.enable()
from techrevati.runtime.orchestrator import Orchestrator
from techrevati.runtime.telemetry.setup.configure import configure
from techrevati.runtime.usage_tracking import UsageSnapshot

configure(service_name="stopped", handle_sigterm=True, shutdown_timeout=1.0)
orch = Orchestrator(role="long-runner", phase="p")
with orch.session() as session:
    session.run_turn(lambda: "ok", model="model-a", usage=UsageSnapshot(100, 10))
    # The signal lands while this thread holds the lock that ending the session
    # takes (as it would mid-admission): the handler must not wait on it forever.
    with session.tracker._lock:
        print("READY", flush=True)
        time.sleep(60)
"""


def test_a_signal_that_lands_inside_a_held_lock_still_ends_the_process(tmp_path: Path) -> None:
    code, _out, err = _run(tmp_path, script=LOCKED, timeout=30)  # before: hung until killed
    assert code == -signal.SIGTERM
    assert "SIGTERM: flushing did not finish in time" in err
