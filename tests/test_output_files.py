"""The embedded mode's files: owner-only, never through a symlink, appended, failures said once.

Each scenario is a real script run in a subprocess with ``configure()`` and an
Orchestrator session, as a user runs it.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from techrevati.runtime.telemetry.export.jsonl import (
    OutputFileError,
    open_for_append,
    read_json_lines,
)

SCRIPT = """
import sys
from techrevati.runtime.orchestrator import Orchestrator
from techrevati.runtime.telemetry.setup.configure import configure
from techrevati.runtime.usage_tracking import UsageSnapshot

handle = configure(service_name="files")
orch = Orchestrator(role=sys.argv[1] if len(sys.argv) > 1 else "writer", phase="p")
with orch.session() as session:
    session.run_turn(lambda: "ok", model="model-a", usage=UsageSnapshot(100, 20))
print("RUN", handle.run_id)
"""


def _run(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    clean.pop("TECHREVATI_SPANS_FILE", None)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_directory_is_owner_only_and_so_are_the_files(tmp_path: Path) -> None:
    done = _run(tmp_path)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "telemetry-out"
    assert _mode(out) == 0o700
    assert _mode(out / "spans.jsonl") == 0o600
    assert _mode(out / "metrics.jsonl") == 0o600


def test_an_existing_wider_file_of_ours_is_narrowed(tmp_path: Path) -> None:
    path = tmp_path / "old.jsonl"
    path.write_text("")
    path.chmod(0o644)
    os.close(open_for_append(path))
    assert _mode(path) == 0o600


def test_a_symlink_at_the_output_path_is_refused_and_its_target_untouched(
    tmp_path: Path,
) -> None:
    out = tmp_path / "telemetry-out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (out / "spans.jsonl").symlink_to(victim)

    done = _run(tmp_path)
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "precious\n"
    assert (out / "spans.jsonl").is_symlink()
    lines = [line for line in done.stderr.splitlines() if line.startswith("techrevati telemetry")]
    assert lines == [
        f"techrevati telemetry: 2 spans were dropped (local: 2 not written to "
        f"telemetry-out/spans.jsonl: {Path('telemetry-out/spans.jsonl')} is a symbolic link; "
        "telemetry refuses to write through it (remove it or choose another file))"
    ]
    # The report printed at exit does not send anyone to the link.
    assert "replay with" not in done.stderr
    assert "spans: NOT written to telemetry-out/spans.jsonl" in done.stderr
    with pytest.raises(OutputFileError, match="is a symbolic link"):
        open_for_append(out / "spans.jsonl")


def test_a_write_failure_at_exit_is_one_line_and_no_replay_hint(tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.fail("this test needs /dev/full (Linux)")
    done = _run(tmp_path, TECHREVATI_SPANS_FILE="/dev/full")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("techrevati telemetry")]
    assert lines == [
        "techrevati telemetry: 2 spans were dropped (local: 2 not written to /dev/full: "
        "No space left on device)"
    ]
    assert "replay with" not in done.stderr
    assert "spans: NOT written to /dev/full: No space left on device" in done.stderr
    # Nothing is created beside a device.
    assert not Path("/dev/full.metrics.jsonl").exists() and not Path("/dev/metrics.jsonl").exists()


def test_runs_append_and_are_told_apart_by_their_run_id(tmp_path: Path) -> None:
    first = _run(tmp_path, "first")
    second = _run(tmp_path, "second")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    runs = [done.stdout.split("RUN ")[1].split()[0] for done in (first, second)]
    assert runs[0] != runs[1]
    spans_file = tmp_path / "telemetry-out" / "spans.jsonl"
    seen: list[tuple[str, str]] = []
    for request in read_json_lines(spans_file):
        for resource_spans in request["resourceSpans"]:
            resource = {
                a["key"]: a["value"].get("stringValue")
                for a in resource_spans["resource"]["attributes"]
            }
            for scope_spans in resource_spans["scopeSpans"]:
                for span in scope_spans["spans"]:
                    if span["name"].startswith("invoke_agent"):
                        seen.append((resource["techrevati.run.id"], span["name"]))
    assert seen == [(runs[0], "invoke_agent first"), (runs[1], "invoke_agent second")]
    # Each run's exit report points at its own run in the shared file.
    assert f"--run {runs[1]}" in second.stderr


def test_named_spans_files_keep_their_metrics_apart(tmp_path: Path) -> None:
    """What `make demo` does: two examples, two spans files, two metrics files."""
    for name in ("tiny-agent", "decorated-agent"):
        done = _run(tmp_path, name, TECHREVATI_SPANS_FILE=f"telemetry-out/{name}.jsonl")
        assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in (tmp_path / "telemetry-out").iterdir())
    assert names == [
        "decorated-agent.jsonl",
        "decorated-agent.metrics.jsonl",
        "tiny-agent.jsonl",
        "tiny-agent.metrics.jsonl",
    ]
