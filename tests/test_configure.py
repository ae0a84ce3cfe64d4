"""configure(): modes, files, the report at shutdown, env variables, existing providers.

Tests that need the real global providers run in a subprocess: a global
TracerProvider can be set only once per process.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from techrevati.runtime.telemetry import semconv as sc
from techrevati.runtime.telemetry.calls.content import capture_content, set_capture_content
from techrevati.runtime.telemetry.export.jsonl import read_json_lines
from techrevati.runtime.telemetry.setup.configure import TelemetryHandle, configure

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("OTEL_") or name == "TECHREVATI_SPANS_FILE":
            monkeypatch.delenv(name)
    set_capture_content(None)
    yield
    set_capture_content(None)


def _session(handle: TelemetryHandle, role: str = "researcher") -> None:
    assert handle.tracer_provider is not None
    tracer = handle.tracer_provider.get_tracer("configure-test")
    with (
        tracer.start_as_current_span(
            f"invoke_agent {role}",
            attributes={sc.GEN_AI_OPERATION_NAME: "invoke_agent", sc.GEN_AI_AGENT_NAME: role},
        ),
        tracer.start_as_current_span(
            "chat model-a",
            attributes={
                sc.GEN_AI_OPERATION_NAME: "chat",
                sc.GEN_AI_REQUEST_MODEL: "model-a",
                sc.COST_USD: 0.125,
            },
        ),
    ):
        pass


def test_embedded_default_writes_otlp_json_lines_and_prints_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    handle = configure(set_global=False, service_name="embedded")
    assert handle.spans_file == Path("telemetry-out/spans.jsonl")
    assert handle.metrics_file == Path("telemetry-out/metrics.jsonl")
    assert [d.kind for d in handle.destinations] == ["file", "file"]
    _session(handle)
    assert handle.meter_provider is not None
    handle.meter_provider.get_meter("t").create_counter(sc.METRIC_COST, unit="USD").add(0.125)
    assert handle.shutdown(timeout_s=3)

    err = capsys.readouterr().err
    assert "techrevati-runtime telemetry report: 1 session, 1 model call" in err
    from techrevati.runtime.telemetry.setup.handle import replay_command

    # The command as it can be typed here (tests/test_cli.py runs it outside the venv).
    assert f"replay with: {replay_command()} report telemetry-out/spans.jsonl" in err

    [request] = list(read_json_lines(tmp_path / "telemetry-out" / "spans.jsonl"))
    [resource_spans] = request["resourceSpans"]
    resource = {a["key"]: a["value"] for a in resource_spans["resource"]["attributes"]}
    assert resource["service.name"] == {"stringValue": "embedded"}
    names = sorted(s["name"] for s in resource_spans["scopeSpans"][0]["spans"])
    assert names == ["chat model-a", "invoke_agent researcher"]

    metric_lines = list(read_json_lines(tmp_path / "telemetry-out" / "metrics.jsonl"))
    metric = metric_lines[-1]["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]
    assert (metric["name"], metric["unit"]) == (sc.METRIC_COST, "USD")
    assert metric["sum"]["dataPoints"][0]["asDouble"] == 0.125


def test_spans_file_from_environment_and_no_report_when_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "elsewhere" / "run.jsonl"
    monkeypatch.setenv("TECHREVATI_SPANS_FILE", str(target))
    handle = configure(set_global=False, report=False, metrics=False)
    assert handle.spans_file == target
    _session(handle)
    handle.shutdown(timeout_s=3)
    assert capsys.readouterr().err == ""
    assert len(list(read_json_lines(target))) == 1
    # Without an in-memory copy the report is rebuilt from the file.
    assert "1 session" in handle.report()


def test_embedded_with_nothing_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    handle = configure(set_global=False, spans_file=False, report=False, metrics=False)
    _session(handle)
    assert handle.stats() == {}
    assert handle.report().startswith("no spans were kept")
    handle.shutdown(timeout_s=3)
    assert list(tmp_path.iterdir()) == []


def test_sdk_disabled_sets_nothing_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    handle = configure(set_global=False)
    assert not handle.enabled
    assert handle.tracer_provider is None and handle.meter_provider is None
    assert handle.destinations == ()
    assert handle.shutdown(timeout_s=1)


def test_capture_content_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    handle = configure(set_global=False, spans_file=False, report=False, metrics=False)
    assert capture_content()  # no argument: the variable decides
    handle.shutdown(timeout_s=1)
    handle = configure(
        set_global=False, spans_file=False, report=False, metrics=False, capture_content=False
    )
    assert not capture_content()
    handle.shutdown(timeout_s=1)


def test_a_provider_the_user_passes_is_extended_not_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_global(_provider: object) -> None:
        raise AssertionError("configure() must not replace the global provider here")

    monkeypatch.setattr(trace, "set_tracer_provider", no_global)
    memory = InMemorySpanExporter()
    theirs = TracerProvider(shutdown_on_exit=False)
    theirs.add_span_processor(SimpleSpanProcessor(memory))
    caplog.set_level(logging.INFO, logger="techrevati.runtime.telemetry")

    handle = configure(tracer_provider=theirs, set_global=False, metrics=False)
    assert handle.tracer_provider is theirs
    assert handle.spans_file is None and handle.stats() == {}  # their exporters, not ours
    assert "added the techrevati limits processor to the existing TracerProvider" in caplog.text
    _session(handle)
    assert sorted(s.name for s in memory.get_finished_spans()) == [
        "chat model-a",
        "invoke_agent researcher",
    ]
    handle.shutdown(timeout_s=1)
    # Their provider keeps working after our handle is gone.
    with theirs.get_tracer("t").start_as_current_span("after"):
        pass
    assert memory.get_finished_spans()[-1].name == "after"

    caplog.clear()
    path = tmp_path / "s.jsonl"
    handle = configure(tracer_provider=theirs, set_global=False, metrics=False, spans_file=path)
    assert "added techrevati processors (limits, local)" in caplog.text
    _session(handle)
    handle.shutdown(timeout_s=3)
    assert len(list(read_json_lines(path))) == 1
    theirs.shutdown()


@pytest.mark.parametrize("bad", ["http/json", "udp", ""])
def test_an_unsupported_protocol_argument_is_refused(bad: str) -> None:
    # A probe: protocol="udp" was accepted with a warning and exported over
    # http/protobuf, where every other configure() argument with a wrong value raises.
    said = (
        "configure() protocol must be 'http/protobuf' or 'grpc' (or None: "
        f"OTEL_EXPORTER_OTLP_PROTOCOL, else 'http/protobuf'), got {bad!r}"
    )
    with pytest.raises(ValueError) as refused:
        configure(endpoint="http://127.0.0.1:9", protocol=bad, set_global=False, metrics=False)
    assert str(refused.value) == said


def test_a_protocol_argument_is_read_in_any_case() -> None:
    handle = configure(
        endpoint="http://127.0.0.1:9", protocol=" GRPC ", set_global=False, metrics=False
    )
    assert [d.protocol for d in handle.destinations] == ["grpc"]
    handle.shutdown(timeout_s=1)


@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"]
)
def test_an_unsupported_protocol_variable_falls_back_to_http(
    variable: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A variable may be set for other programs too: warned about and replaced, as for
    # the other OTEL_* variables.
    monkeypatch.setenv(variable, "http/json")
    handle = configure(endpoint="http://127.0.0.1:9", set_global=False, metrics=False)
    assert [(d.protocol, d.target) for d in handle.destinations] == [
        ("http/protobuf", "http://127.0.0.1:9/v1/traces")
    ]
    assert (
        f"{variable}='http/json' is not supported here (only grpc and http/protobuf); "
        "using http/protobuf" in caplog.text
    )
    handle.shutdown(timeout_s=1)


def test_a_repeated_configure_names_the_arguments_it_ignored(tmp_path: Path) -> None:
    done = _run(
        """
        from techrevati.runtime.telemetry.setup.configure import configure

        handle = configure(service_name="first", report=False)
        assert configure(service_name="first", report=False) is handle   # same: silent
        assert configure() is handle                                     # asks nothing: silent
        assert configure(service_name="second", metrics=False, report=False) is handle
        print("ok")
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "already ran" in line]
    assert warnings == [
        "configure() already ran; this call's service_name=, metrics= were ignored (the first "
        "call's set-up stays; shut the handle down first to configure anew)"
    ]


def _run(script: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    clean.pop("TECHREVATI_SPANS_FILE", None)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(HERE / "export"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_global_embedded_default_with_an_orchestrator_session(tmp_path: Path) -> None:
    """What `make demo` does: configure(), run an agent, exit; no server anywhere."""
    done = _run(
        """
        from opentelemetry import metrics, trace
        from techrevati.runtime.orchestrator import Orchestrator
        from techrevati.runtime.telemetry.setup.configure import configure
        from techrevati.runtime.usage_tracking import ModelPricing, UsageSnapshot, register_pricing

        handle = configure()
        assert configure(service_name="ignored") is handle
        assert trace.get_tracer_provider() is handle.tracer_provider
        assert metrics.get_meter_provider() is handle.meter_provider
        register_pricing("model-a", ModelPricing(input_per_million=3.0, output_per_million=15.0))
        orch = Orchestrator(role="researcher", phase="draft")
        with orch.session() as session:
            session.run_turn(lambda: "ok", model="model-a", usage=UsageSnapshot(1000, 200))
            session.run_tool("search", lambda: "hits")
        """,
        tmp_path,
        OTEL_SERVICE_NAME="demo-agent",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment=dev",
    )
    assert done.returncode == 0, done.stderr
    assert "1 session, 1 model call, 1 tool call, total cost $0.006000" in done.stderr
    row = next(line for line in done.stderr.splitlines() if line.startswith("  researcher"))
    assert row.split()[1] == "completed"
    assert "service: demo-agent" in done.stderr

    spans_file = tmp_path / "telemetry-out" / "spans.jsonl"
    requests = list(read_json_lines(spans_file))
    resource = {
        a["key"]: a["value"]["stringValue"]
        for a in requests[0]["resourceSpans"][0]["resource"]["attributes"]
        if "stringValue" in a["value"]
    }
    assert resource["service.name"] == "demo-agent"
    assert resource["deployment.environment"] == "dev"
    cli = subprocess.run(
        [sys.executable, "-m", "techrevati.runtime", "report", str(spans_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "1 session, 1 model call, 1 tool call, total cost $0.006000" in cli.stdout


def test_global_sdk_provider_the_user_set_is_kept(tmp_path: Path) -> None:
    done = _run(
        """
        import json, logging, sys
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from otlp_receiver import HttpReceiver
        from techrevati.runtime.telemetry.setup.configure import configure

        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        memory = InMemorySpanExporter()
        theirs = TracerProvider()
        theirs.add_span_processor(SimpleSpanProcessor(memory))
        trace.set_tracer_provider(theirs)
        with HttpReceiver() as receiver:
            handle = configure(endpoint=receiver.endpoint, metrics=False)
            assert handle.tracer_provider is theirs
            assert trace.get_tracer_provider() is theirs
            with trace.get_tracer("t").start_as_current_span("invoke_agent a"):
                pass
            handle.force_flush()
            receiver.received.wait_for(lambda r: len(r.spans()) == 1)
            handle.shutdown()
        print(json.dumps([s.name for s in memory.get_finished_spans()]))
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["invoke_agent a"]
    assert "added techrevati processors (limits, otlp) to the existing TracerProvider" in (
        done.stderr
    )
    assert not (tmp_path / "telemetry-out").exists()


def test_nothing_is_printed_when_no_agent_ran(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    handle = configure(set_global=False, spans_file=tmp_path / "s.jsonl", metrics=False)
    handle.shutdown(timeout_s=1)
    assert capsys.readouterr().err == ""
    assert not (tmp_path / "s.jsonl").exists()


def test_endpoint_argument_is_a_base_url_even_with_a_signal_path_pasted_in() -> None:
    handle = configure(endpoint="http://127.0.0.1:9/v1/traces/", set_global=False)
    assert sorted(d.target for d in handle.destinations) == [
        "http://127.0.0.1:9/v1/metrics",
        "http://127.0.0.1:9/v1/traces",
    ]
    handle.shutdown(timeout_s=1)


def test_handle_as_a_context_manager_shuts_down(tmp_path: Path) -> None:
    with configure(set_global=False, spans_file=tmp_path / "s.jsonl", report=False) as handle:
        _session(handle)
        assert not handle.is_shut_down
    assert handle.is_shut_down
    assert handle.stats()["local"].exported == 2
    assert len(list(read_json_lines(tmp_path / "s.jsonl"))) == 1


def test_configure_after_shutdown_sets_up_working_pipelines(tmp_path: Path) -> None:
    done = _run(
        f"""
        import json
        from techrevati.runtime import agent_session
        from techrevati.runtime.telemetry.setup.configure import configure

        first = configure(spans_file={str(tmp_path / "a.jsonl")!r}, report=False, metrics=False)
        first.shutdown()
        second = configure(spans_file={str(tmp_path / "b.jsonl")!r}, report=False, metrics=False)
        with agent_session("writer"):
            pass
        second.force_flush()
        second.shutdown()
        print(json.dumps([second is first, second.is_shut_down]))
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [False, True]
    lines = (tmp_path / "b.jsonl").read_text().splitlines()
    assert len(lines) >= 1 and "invoke_agent writer" in "".join(lines)
    assert "earlier telemetry was shut down" in done.stderr


def test_a_spans_file_in_a_directory_it_cannot_search_never_stops_the_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """configure() looked at the spans path and raised PermissionError: the agent never ran.

    The tests run as root, which may search any directory, so the operating system's
    answer for a directory of mode 0500 of another user is given by Path.exists here:
    what it raises there (checked by hand as uid 65534 with setpriv).
    """
    from techrevati.runtime import UsageSnapshot, agent_session, configure
    from techrevati.runtime.telemetry.setup import settings

    locked = tmp_path / "locked" / "spans.jsonl"
    real_exists = Path.exists

    def exists(path: Path, *args: object, **kwargs: object) -> bool:
        if path == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_exists(path)

    monkeypatch.setattr(Path, "exists", exists)
    assert settings.metrics_path_for(locked) == locked.with_name("metrics.jsonl")
    handle = configure(service_name="f", spans_file=locked, report=False, set_global=False)
    try:
        with agent_session("w", tracer_provider=handle.tracer_provider) as session:
            session.run_turn(lambda: "ok", model="gpt-4o-mini", usage=UsageSnapshot(1000, 100))
        assert session.tracker.turn_count == 1
    finally:
        handle.shutdown()


def test_an_http_endpoint_without_a_scheme_is_refused_at_configure() -> None:
    """The HTTP exporter took it and logged "No connection adapters" for every batch."""
    from techrevati.runtime import configure

    with pytest.raises(ValueError) as refused:
        configure(endpoint="127.0.0.1:4318", report=False, spans_file=False, set_global=False)
    assert str(refused.value) == (
        "endpoint '127.0.0.1:4318' has no http:// or https:// scheme, which OTLP over HTTP "
        "needs: write 'http://127.0.0.1:4318' (or use protocol='grpc')"
    )


def test_a_spans_path_under_a_file_and_an_empty_spans_file_say_what_is_wrong(
    tmp_path: Path,
) -> None:
    from techrevati.runtime import configure
    from techrevati.runtime.telemetry.export.jsonl import OutputFileError, open_for_append

    afile = tmp_path / "notes.txt"
    afile.write_text("x", encoding="utf-8")
    with pytest.raises(OutputFileError) as refused:  # it said "File exists"
        open_for_append(afile / "spans.jsonl")
    assert str(refused.value) == (
        f"cannot open {afile / 'spans.jsonl'}: {afile} is a file, not a directory"
    )
    with pytest.raises(ValueError, match="spans_file must be a file path, False"):
        configure(spans_file="", report=False, set_global=False)  # it wrote to "."


def _agent_run() -> None:
    from techrevati.runtime import agent_session, agent_turn, tool_call

    @agent_turn("gpt-4o-mini", provider="openai")
    def ask() -> dict[str, object]:
        return {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 1000, "completion_tokens": 100}}

    @tool_call()
    def search() -> str:
        return "found"

    with agent_session("writer"):
        ask()
        search()


def _metric_names(reader: object) -> set[str]:
    data = reader.get_metrics_data()  # type: ignore[attr-defined]
    return {
        metric.name
        for resource in (data.resource_metrics if data else [])
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


def test_sessions_naming_no_provider_use_the_providers_configure_was_given() -> None:
    # configure(tracer_provider=..., meter_provider=...) without making them global: the
    # package's own sessions, turns and tools name no provider, and their telemetry
    # still reaches the set-up configured for them (it went to the global providers,
    # none here: 0 spans and 0 metrics reached the user's), until its shutdown.
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    memory = InMemorySpanExporter()
    theirs = TracerProvider(shutdown_on_exit=False)
    theirs.add_span_processor(SimpleSpanProcessor(memory))
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    handle = configure(
        tracer_provider=theirs,
        meter_provider=meters,
        set_global=False,
        spans_file=False,
        report=False,
    )
    _agent_run()
    by_name = {span.name: span for span in memory.get_finished_spans()}
    assert sorted(by_name) == ["chat gpt-4o-mini", "execute_tool search", "invoke_agent writer"]
    chat = by_name["chat gpt-4o-mini"].attributes or {}
    assert chat[sc.COST_USD] == pytest.approx(1000 * 0.15e-6 + 100 * 0.6e-6)
    assert {"gen_ai.client.token.usage", sc.METRIC_COST, "techrevati.sessions"} <= _metric_names(
        reader
    )

    handle.shutdown(timeout_s=1)
    memory.clear()
    _agent_run()  # the set-up is shut down: the global providers are the default again
    assert memory.get_finished_spans() == ()
    meters.shutdown()
    theirs.shutdown()


def test_set_global_false_writes_the_sessions_spans_to_its_own_file(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    handle = configure(set_global=False, spans_file=path, metrics=False, report=False)
    try:
        _agent_run()
    finally:
        handle.shutdown(timeout_s=3)
    names = sorted(
        span["name"]
        for line in read_json_lines(path)
        for resource in line["resourceSpans"]
        for scope in resource["scopeSpans"]
        for span in scope["spans"]
    )
    assert names == ["chat gpt-4o-mini", "execute_tool search", "invoke_agent writer"]


@pytest.mark.parametrize(
    ("variables", "written"),
    [
        ({}, ["metrics.jsonl", "spans.jsonl"]),
        ({"OTEL_TRACES_EXPORTER": "none"}, ["metrics.jsonl"]),
        ({"OTEL_METRICS_EXPORTER": "none"}, ["spans.jsonl"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}, []),
    ],
)
def test_exporter_none_turns_the_embedded_files_off(
    variables: dict[str, str],
    written: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The embedded files stand in for the OTLP exporters, so "none" turns them off
    # too (both files were written whatever these said).
    monkeypatch.chdir(tmp_path)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    handle = configure(set_global=False, report=False)
    try:
        _agent_run()
    finally:
        handle.shutdown(timeout_s=3)
    out = tmp_path / "telemetry-out"
    names = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert names == written


def test_exporter_none_leaves_a_spans_file_that_was_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    path = tmp_path / "asked.jsonl"
    handle = configure(set_global=False, report=False, metrics=False, spans_file=path)
    try:
        _agent_run()
    finally:
        handle.shutdown(timeout_s=3)
    assert len(list(read_json_lines(path))) >= 1


def test_a_side_set_up_never_takes_sessions_from_a_global_one(tmp_path: Path) -> None:
    # A set_global=False set-up took every later session that named no provider from
    # the live global one: session B's spans went to the side file while a third-party
    # span inside it stayed in the global file, its parent missing there. The global
    # set-up keeps its sessions; a side set-up gets them only while nothing global
    # would (the set-ups below, one per process).
    import techrevati.runtime

    src = str(Path(techrevati.runtime.__file__).parents[2])
    script = """
        import json, sys
        from opentelemetry import trace
        from techrevati.runtime import agent_session, configure

        def run(tag):
            with agent_session(tag):
                with trace.get_tracer("third.party").start_as_current_span("chat " + tag):
                    pass

        def names(path):
            try:
                lines = open(path).read().splitlines()
            except FileNotFoundError:
                return []
            return sorted(
                span["name"]
                for line in lines
                for resource in json.loads(line)["resourceSpans"]
                for scope in resource["scopeSpans"]
                for span in scope["spans"]
            )

        files = dict(report=False, metrics=False)
        if sys.argv[1] == "global first":
            first = configure(spans_file="global.jsonl", **files)
            run("A")
            side = configure(set_global=False, spans_file="side.jsonl", **files)
            run("B")
            side.shutdown()
            first.shutdown()
            print(json.dumps([names("global.jsonl"), names("side.jsonl")]))
        else:
            one = configure(set_global=False, spans_file="one.jsonl", **files)
            run("A")
            two = configure(set_global=False, spans_file="two.jsonl", **files)
            run("B")
            two.shutdown()
            run("C")  # back to the first side set-up, still live
            one.shutdown()
            print(json.dumps([names("one.jsonl"), names("two.jsonl")]))
    """
    results = []
    for case in ("global first", "two sides"):
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script), case],
            cwd=tmp_path,
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
                "PYTHONPATH": src,
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        results.append(json.loads(done.stdout.splitlines()[-1]))
    (global_file, side_file), (one, two) = results
    assert global_file == ["chat A", "chat B", "invoke_agent A", "invoke_agent B"]
    assert side_file == []
    # (The third-party spans use the global API, with no SDK provider behind it here.)
    assert one == ["invoke_agent A", "invoke_agent C"]
    assert two == ["invoke_agent B"]


def test_exporter_none_leaves_the_spans_file_the_environment_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # $TECHREVATI_SPANS_FILE asks for a file as spans_file= does: it was not written
    # under OTEL_TRACES_EXPORTER=none, while the metrics file beside it was.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("TECHREVATI_SPANS_FILE", "mine.jsonl")
    handle = configure(set_global=False, report=False)
    try:
        _agent_run()
    finally:
        handle.shutdown(timeout_s=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.jsonl", "mine.metrics.jsonl"]
