"""Forking after configure(): every worker's spans and metrics arrive, once each.

The way gunicorn ``--preload`` and Celery prefork run: ``configure()`` in the
parent, then workers forked from it. Each scenario runs in a subprocess (global
providers are set once per process) that forks 3 workers with multiprocessing's
``fork`` context; each worker runs 50 real Orchestrator sessions. The parent is
either idle or busy (sessions before the fork and while the workers run).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from otlp_receiver import GrpcReceiver, HttpReceiver, attributes

from techrevati.runtime.telemetry import semconv as sc
from techrevati.runtime.telemetry.export.jsonl import read_json_lines

WORKERS = 3
PER_WORKER = 50
BEFORE_FORK = 5
DURING_FORK = 20

SCRIPT = """
import multiprocessing as mp, sys
from techrevati.runtime.orchestrator import Orchestrator
from techrevati.runtime.telemetry.setup.configure import configure
from techrevati.runtime.usage_tracking import ModelPricing, UsageSnapshot, register_pricing

register_pricing("model-a", ModelPricing(input_per_million=3.0, output_per_million=15.0))

def sessions(count, role):
    orch = Orchestrator(role=role, phase="p")
    for _ in range(count):
        with orch.session() as session:
            session.run_turn(lambda: "ok", model="model-a", usage=UsageSnapshot(1000, 200))
    return count

if __name__ == "__main__":
    busy = sys.argv[1] == "busy"
    handle = configure(service_name="forked", metric_export_interval_s=0.2)
    if busy:
        sessions({before}, "parent")
        handle.force_flush()   # the parent has written (and connected) before forking
    context = mp.get_context("fork")
    workers = [context.Process(target=sessions, args=({per}, "worker")) for _ in range({n})]
    for worker in workers:
        worker.start()
    if busy:
        sessions({during}, "parent")
    for worker in workers:
        worker.join()
    assert all(worker.exitcode == 0 for worker in workers), [w.exitcode for w in workers]
    print("RUN", handle.run_id)
"""


def _run(tmp_path: Path, mode: str, **env: str) -> subprocess.CompletedProcess[str]:
    script = SCRIPT.format(before=BEFORE_FORK, per=PER_WORKER, n=WORKERS, during=DURING_FORK)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    clean.pop("TECHREVATI_SPANS_FILE", None)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), mode],
        cwd=tmp_path,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done


def _expected(mode: str) -> Counter[str]:
    expected = Counter({"worker": WORKERS * PER_WORKER})
    if mode == "busy":
        expected["parent"] = BEFORE_FORK + DURING_FORK
    return expected


def _session_roles(spans: list[tuple[dict[str, Any], str, dict[str, Any]]]) -> Counter[str]:
    return Counter(
        str(attrs[sc.GEN_AI_AGENT_NAME])
        for _resource, name, attrs in spans
        if name.startswith("invoke_agent ")
    )


def _file_spans(path: Path) -> list[tuple[dict[str, Any], str, dict[str, Any]]]:
    found = []
    for request in read_json_lines(path):
        for resource_spans in request["resourceSpans"]:
            resource = _kv(resource_spans["resource"]["attributes"])
            for scope_spans in resource_spans["scopeSpans"]:
                for span in scope_spans["spans"]:
                    found.append((resource, span["name"], _kv(span.get("attributes", []))))
    return found


def _kv(items: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        value = item["value"]
        out[item["key"]] = next(iter(value.values())) if value else None
    return out


def _file_session_counts(path: Path) -> dict[str, int]:
    """The last cumulative ``techrevati.sessions`` total of each process in a metrics file."""
    last: dict[str, int] = {}
    for request in read_json_lines(path):
        for resource_metrics in request["resourceMetrics"]:
            instance = _kv(resource_metrics["resource"]["attributes"])["service.instance.id"]
            for scope_metrics in resource_metrics["scopeMetrics"]:
                for metric in scope_metrics["metrics"]:
                    if metric["name"] == sc.METRIC_SESSIONS:
                        points = metric["sum"]["dataPoints"]
                        last[instance] = sum(int(p.get("asInt", 0)) for p in points)
    return last


@pytest.mark.parametrize("mode", ["idle", "busy"])
def test_forked_workers_all_reach_the_embedded_files(tmp_path: Path, mode: str) -> None:
    done = _run(tmp_path, mode)
    run_id = done.stdout.split("RUN ")[1].split()[0]
    spans = _file_spans(tmp_path / "telemetry-out" / "spans.jsonl")
    assert _session_roles(spans) == _expected(mode)
    # One run; one instance id per process (3 workers, plus the parent when it worked).
    assert {resource[sc.RUN_ID] for resource, _, _ in spans} == {run_id}
    instances = {resource["service.instance.id"] for resource, _, _ in spans}
    assert len(instances) == WORKERS + (mode == "busy")

    # Metrics: each process counts its own sessions; nothing inherited is counted twice.
    counts = _file_session_counts(tmp_path / "telemetry-out" / "metrics.jsonl")
    assert sorted(counts.values()) == sorted(
        [PER_WORKER] * WORKERS + ([BEFORE_FORK + DURING_FORK] if mode == "busy" else [])
    )

    # The parent's report at exit is read from the file: it covers every worker.
    total = sum(_expected(mode).values())
    assert f"{total} sessions, {total} model calls" in done.stderr
    assert f"--run {run_id}" in done.stderr


@pytest.mark.parametrize("mode", ["idle", "busy"])
@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_forked_workers_all_reach_an_otlp_receiver(
    tmp_path: Path, mode: str, protocol: str
) -> None:
    receiver: HttpReceiver | GrpcReceiver = (
        HttpReceiver() if protocol == "http/protobuf" else GrpcReceiver()
    )
    with receiver:
        done = _run(
            tmp_path,
            mode,
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        )
        spans = [
            (resource, span.name, attributes(span.attributes))
            for resource, span in receiver.received.spans()
        ]
        metric_requests = list(receiver.received.metrics)
    assert not (tmp_path / "telemetry-out").exists()
    run_id = done.stdout.split("RUN ")[1].split()[0]
    assert _session_roles(spans) == _expected(mode)
    assert {resource[sc.RUN_ID] for resource, _, _ in spans} == {run_id}

    last: dict[str, int] = {}
    for request in metric_requests:
        for resource_metrics in request.resource_metrics:
            instance = attributes(resource_metrics.resource.attributes)["service.instance.id"]
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == sc.METRIC_SESSIONS:
                        last[instance] = sum(p.as_int for p in metric.sum.data_points)
    assert sorted(last.values()) == sorted(
        [PER_WORKER] * WORKERS + ([BEFORE_FORK + DURING_FORK] if mode == "busy" else [])
    )


def test_a_fork_safe_exporter_is_rebuilt_in_the_child_and_left_alone_in_the_parent() -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from techrevati.runtime.telemetry.export.forking import ForkSafeSpanExporter

    built: list[InMemorySpanExporter] = []

    def factory() -> InMemorySpanExporter:
        built.append(InMemorySpanExporter())
        return built[-1]

    exporter = ForkSafeSpanExporter(factory)
    parent_inner = exporter.inner
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports what it sees through the pipe
        child_inner = exporter.inner
        again = exporter.inner
        exporter.shutdown()  # shuts the child's own exporter, never the parent's
        os.write(
            write, f"{len(built)} {child_inner is parent_inner} {again is child_inner}".encode()
        )
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    answer = os.read(read, 100).decode()
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0
    assert answer == "2 False True"  # one more exporter, built once, in the child
    assert exporter.inner is parent_inner and len(built) == 1
