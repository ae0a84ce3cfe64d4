"""``techrevati-runtime report`` on broken or hostile files: one line per bad record.

Every case runs the real command in a subprocess with a timeout, so a hang or a
traceback fails the test; memory and output sizes are measured on it too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from techrevati.runtime.telemetry import semconv as sc

TRACE = "0af7651916cd43dd8448eb211c80319c"


def _span(span_id: str, name: str, parent: str | None = None, **attrs: Any) -> dict[str, Any]:
    span: dict[str, Any] = {
        "traceId": TRACE,
        "spanId": span_id,
        "name": name,
        "startTimeUnixNano": "1000",
        "endTimeUnixNano": "2000",
        "attributes": [{"key": key, "value": _value(value)} for key, value in attrs.items()],
    }
    if parent:
        span["parentSpanId"] = parent
    return span


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": value}


def _request(*spans: dict[str, Any], scope: str = "techrevati.runtime") -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": []},
                "scopeSpans": [{"scope": {"name": scope}, "spans": list(spans)}],
            }
        ]
    }


def _session(span_id: str = "00000000000000a1", role: str = "worker") -> dict[str, Any]:
    return _span(
        span_id,
        f"invoke_agent {role}",
        **{sc.GEN_AI_OPERATION_NAME: "invoke_agent", sc.GEN_AI_AGENT_NAME: role},
    )


_lines_made = 0


def _good_line() -> str:
    """One valid request holding one session, with a span id of its own."""
    global _lines_made
    _lines_made += 1
    return json.dumps(_request(_session(f"{_lines_made:016x}")))


def _report(path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run the command; also return its peak RSS in KiB.

    Read from /proc (VmHWM), which starts afresh at exec; ``ru_maxrss`` would
    carry over the peak of the test process that forked it.
    """
    script = (
        "import sys\n"
        "from techrevati.runtime.__main__ import main\n"
        "code = main(sys.argv[1:])\n"
        "sys.stdout.flush()\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
        "print('MAXRSS', hwm, file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "report", str(path), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in done.stderr, done.stderr
    rss = int(done.stderr.rsplit("MAXRSS ", 1)[1].split()[0]) if "MAXRSS" in done.stderr else 0
    return done, rss


def _problems(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [
        line.removeprefix("techrevati-runtime: ")
        for line in done.stderr.splitlines()
        if line.startswith("techrevati-runtime: ")
    ]


def test_a_parent_cycle_is_cut_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "cycle.jsonl"
    looped = _request(
        _session(),
        _span("00000000000000b1", "chat m", "00000000000000b2", **{sc.COST_USD: 0.5}),
        _span("00000000000000b2", "chat m", "00000000000000b1", **{sc.COST_USD: 0.25}),
        _span("00000000000000b3", "execute_tool t", "00000000000000b3"),  # its own parent
    )
    path.write_text(json.dumps(looped) + "\n")
    done, _ = _report(path)
    assert done.returncode == 0
    # Our own model spans are each a call (the loop is cut, not followed forever).
    assert "1 session, 2 model calls, 1 tool call, total cost $0.750000" in done.stdout
    assert "note: 1 span parent cycle(s) found; the loops were cut" in done.stdout


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ({"resourceSpans": "many"}, ": not an OTLP trace request (no resourceSpans list); skipped"),
        ({"resourceMetrics": []}, ": not an OTLP trace request (no resourceSpans list); skipped"),
        ([1, 2, 3], ": not an OTLP trace request (no resourceSpans list); skipped"),
        (
            {"resourceSpans": [{"scopeSpans": "abc"}]},
            ": scopeSpans is 'abc', not a list; its spans skipped",
        ),
        (
            _request({**_session("00000000000000c1"), "attributes": 5}),
            ", span 1 ('invoke_agent worker'): attributes is 5, not a list; span skipped",
        ),
        (
            _request({**_session("00000000000000c1"), "startTimeUnixNano": "soon"}),
            ", span 1 ('invoke_agent worker'): startTimeUnixNano is 'soon', not a time in "
            "nanoseconds; span skipped",
        ),
        (
            _request({**_session("00000000000000c1"), "spanId": 42}),
            ", span 1 ('invoke_agent worker'): spanId is 42, not a string; span skipped",
        ),
        (
            _request({**_session("00000000000000c1"), "events": {"name": "x"}}),
            ", span 1 ('invoke_agent worker'): events is {'name': 'x'}, not a list; span skipped",
        ),
        (_request("not a span"), ", span 1: a span is 'not a span', not an object; span skipped"),
    ],
)
def test_a_wrong_type_costs_its_record_and_one_line(
    tmp_path: Path, broken: Any, message: str
) -> None:
    path = tmp_path / "types.jsonl"
    path.write_text(_good_line() + "\n" + json.dumps(broken) + "\n" + _good_line() + "\n")
    done, _ = _report(path)
    assert done.returncode == 1
    assert _problems(done) == [f"{path}:2{message}"]
    assert "2 sessions" in done.stdout


def test_deep_nesting_and_bad_bytes(tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    deep_value: dict[str, Any] = {"stringValue": "bottom"}
    for _ in range(200):  # nested attribute values, within what JSON parses
        deep_value = {"kvlistValue": {"values": [{"key": "k", "value": deep_value}]}}
    nested_attr = _session("00000000000000d1", "nested")
    nested_attr["attributes"].append({"key": sc.GEN_AI_AGENT_ID, "value": deep_value})
    bad_bytes = _good_line().replace("worker", "w\udcffrker").encode("utf-8", "surrogateescape")
    with path.open("wb") as handle:
        handle.write(b"[" * 200_000 + b"]" * 200_000 + b"\n")
        handle.write(json.dumps(_request(nested_attr)).encode() + b"\n")
        handle.write(bad_bytes + b"\n")
    done, _ = _report(path)
    assert done.returncode == 1
    assert _problems(done) == [
        f"{path}:1: JSON nested too deeply; skipped",
        f"{path}:3: bytes that are not UTF-8 were replaced",
    ]
    assert "2 sessions" in done.stdout
    assert "w\ufffdrker" in done.stdout


def test_huge_lines_are_skipped_in_bounded_memory_and_output(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    head, tail = b'{"resourceSpans": [], "pad": "', b'"}\n'
    megabyte = b"x" * (1024 * 1024)
    line_length = len(head) + 50 * len(megabyte) + len(tail)
    with path.open("wb") as handle:
        for _ in range(3):  # three 50 MB lines, written without holding one whole
            handle.write(head)
            for _ in range(50):
                handle.write(megabyte)
            handle.write(tail)
        handle.write(_good_line().encode() + b"\n")
    done, rss_kib = _report(path)
    assert done.returncode == 1
    assert _problems(done) == [
        f"{path}:{n}: line of {line_length} bytes is over the 16777216 byte limit; skipped"
        for n in (1, 2, 3)
    ]
    assert "1 session" in done.stdout
    assert len(done.stdout) + len(done.stderr) < 4_000
    # The interpreter and the package take ~50 MiB and the cap adds 16 MiB; a 50 MB
    # line held whole would add at least 50 MiB more (and parsing it several times that).
    print(f"peak RSS reading 3 x 50 MB lines: {rss_kib / 1024:.0f} MiB")
    assert rss_kib < 100 * 1024, rss_kib


def test_output_is_bounded_however_many_records_are_bad(tmp_path: Path) -> None:
    path = tmp_path / "many.jsonl"
    path.write_text("not json\n" * 1000 + _good_line() + "\n")
    done, _ = _report(path)
    assert done.returncode == 1
    problems = _problems(done)
    assert len(problems) == 21
    assert problems[-1] == "... and 980 more problems"
    assert all(len(line) <= 220 for line in problems)


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_an_unreadable_file_exits_2_with_one_line(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "nope.jsonl"
    if kind == "directory":
        path.mkdir()
    done, _ = _report(path)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if not line.startswith("MAXRSS")]
    reason = "No such file or directory" if kind == "missing" else "Is a directory"
    assert lines == [f"techrevati-runtime: cannot read {path}: {reason}"]
    assert done.stdout == ""
