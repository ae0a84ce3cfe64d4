"""``techrevati-runtime report PATH`` replays a spans file into the terminal report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from techrevati.runtime.__main__ import main
from techrevati.runtime.telemetry import semconv as sc
from techrevati.runtime.telemetry.export.jsonl import JsonLinesSpanExporter


@pytest.fixture
def spans_file(tmp_path: Path) -> Path:
    path = tmp_path / "out" / "spans.jsonl"
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
    tracer = provider.get_tracer("cli-test")
    for role, cost in (("planner", 0.25), ("coder", 0.5)):
        with (
            tracer.start_as_current_span(
                f"invoke_agent {role}",
                attributes={sc.GEN_AI_OPERATION_NAME: "invoke_agent", sc.GEN_AI_AGENT_NAME: role},
            ),
            tracer.start_as_current_span(
                "chat model-a",
                kind=SpanKind.CLIENT,
                attributes={
                    sc.GEN_AI_OPERATION_NAME: "chat",
                    sc.GEN_AI_REQUEST_MODEL: "model-a",
                    sc.GEN_AI_USAGE_INPUT_TOKENS: 100,
                    sc.GEN_AI_USAGE_OUTPUT_TOKENS: 10,
                    sc.COST_USD: cost,
                },
            ),
        ):
            pass
    provider.shutdown()
    return path


def test_report_command_prints_the_report(
    spans_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(spans_file)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "techrevati-runtime telemetry report: 2 sessions, 2 model calls, 0 tool calls, "
        "total cost $0.750000\n"
    )
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  ")}
    assert rows["planner"][-5:] == ["1", "100", "10", "0.250000", "-"]
    assert rows["coder"][-5:] == ["1", "100", "10", "0.500000", "-"]
    assert rows["model-a"] == ["model-a", "2", "200", "20", "0.750000", "0"]
    assert out.rstrip().endswith(f"spans: {spans_file}")


def test_torn_last_line_is_skipped(spans_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with spans_file.open("a", encoding="utf-8") as handle:
        handle.write('{"resourceSpans": [{"scopeSpa')  # a run killed mid-write
    # The report is still printed; the exit status (1) and one line say a record was skipped.
    assert main(["report", str(spans_file)]) == 1
    captured = capsys.readouterr()
    assert "2 sessions" in captured.out
    assert captured.err.startswith(f"techrevati-runtime: {spans_file}:5: not JSON (")
    assert len(captured.err.splitlines()) == 1


def test_missing_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "nope.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1", "many"])
def test_a_bad_line_limit_is_a_usage_error(
    value: str, spans_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # nan and inf raised a traceback (exit 1, "some records skipped"); 0 and -1 read
    # the file with a 1-byte limit and printed an empty report.
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(spans_file), "--max-line-mb", value])
    assert exit_info.value.code == 2
    assert "argument --max-line-mb: " in capsys.readouterr().err


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "usage: techrevati-runtime" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "techrevati.runtime"],
        [str(Path(sys.executable).with_name("techrevati-runtime"))],
    ],
    ids=["python -m", "console script"],
)
def test_both_entry_points_run(command: list[str], spans_file: Path) -> None:
    done = subprocess.run(
        [*command, "report", str(spans_file)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "2 sessions, 2 model calls" in done.stdout


def _two_runs(path: Path) -> None:
    from opentelemetry.sdk.resources import Resource

    for run in ("aaaa1111", "bbbb2222"):
        provider = TracerProvider(resource=Resource({sc.RUN_ID: run}), shutdown_on_exit=False)
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
        attributes = {sc.GEN_AI_OPERATION_NAME: "invoke_agent", sc.GEN_AI_AGENT_NAME: run}
        with provider.get_tracer("cli-test").start_as_current_span(
            f"invoke_agent {run}", attributes=attributes
        ):
            pass
        provider.shutdown()


def test_an_unknown_run_is_an_error_that_lists_the_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "spans.jsonl"
    _two_runs(path)
    assert main(["report", str(path), "--run", "deadbeef"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no empty report that reads like "nothing happened"
    assert f"run 'deadbeef' is not in {path}" in captured.err
    assert "the runs there, oldest first: aaaa1111, bbbb2222" in captured.err
    # The runs it holds still work.
    assert main(["report", str(path), "--run", "aaaa1111"]) == 0
    assert "aaaa1111" in capsys.readouterr().out


def test_an_unknown_run_in_a_file_without_runs_says_so(
    spans_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(spans_file), "--run", "deadbeef"]) == 2
    assert "none (its spans carry no techrevati.run.id)" in capsys.readouterr().err


def test_the_replay_line_at_exit_works_outside_the_venv(tmp_path: Path) -> None:
    # `make demo` runs .venv/bin/python with .venv/bin not on PATH: the printed
    # command must still run there (it did not: a bare `techrevati-runtime`).
    import os
    import re

    code = (
        "from techrevati.runtime import agent_session, configure\n"
        "configure(service_name='replay')\n"
        "with agent_session('writer'):\n"
        "    pass\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.pop("TECHREVATI_SPANS_FILE", None)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p) != Path(venv_bin)
    )
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    command = re.search(r"replay with: (.+)\)$", run.stderr, flags=re.M)
    assert command, run.stderr
    assert not command[1].startswith("techrevati-runtime ")  # not on this PATH
    replay = subprocess.run(
        command[1],
        shell=True,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout.startswith("techrevati-runtime telemetry report: 1 session")
