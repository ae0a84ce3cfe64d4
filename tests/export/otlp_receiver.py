"""Real OTLP receivers on 127.0.0.1 for the export tests.

``HttpReceiver`` speaks OTLP/HTTP (protobuf bodies on /v1/traces and /v1/metrics)
and can be told to answer 503 or to hang; ``GrpcReceiver`` serves the OTLP gRPC
trace and metrics services. Both decode every request with the
``opentelemetry-proto`` messages, so a test sees exactly what went on the wire.
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
import zlib
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span

ExportTraceServiceRequest = trace_service_pb2.ExportTraceServiceRequest
ExportMetricsServiceRequest = metrics_service_pb2.ExportMetricsServiceRequest


@dataclass
class Received:
    """Everything a receiver decoded, plus the request headers / metadata."""

    traces: list[Any] = field(default_factory=list)
    metrics: list[Any] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    #: Every decoded request body as sent, to search the raw wire for a string.
    bodies: list[bytes] = field(default_factory=list)
    attempts: int = 0
    cond: threading.Condition = field(default_factory=threading.Condition)

    def add(self, kind: str, message: Any, headers: dict[str, str], body: bytes) -> None:
        with self.cond:
            (self.traces if kind == "traces" else self.metrics).append(message)
            self.headers.append(headers)
            self.bodies.append(body)
            self.cond.notify_all()

    def attempt(self) -> None:
        with self.cond:
            self.attempts += 1
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[[Received], bool], timeout: float = 10.0) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: predicate(self), timeout):
                raise AssertionError(f"receiver did not get what was expected in {timeout} s")

    def spans(self) -> list[tuple[dict[str, Any], Span]]:
        """Every received span with its resource attributes."""
        found = []
        with self.cond:
            for request in self.traces:
                for resource_spans in request.resource_spans:
                    resource = attributes(resource_spans.resource.attributes)
                    for scope_spans in resource_spans.scope_spans:
                        found.extend((resource, span) for span in scope_spans.spans)
        return found

    def metrics_by_name(self) -> dict[str, tuple[dict[str, Any], Metric]]:
        """The latest received version of each metric, by name, with its resource."""
        found: dict[str, tuple[dict[str, Any], Metric]] = {}
        with self.cond:
            for request in self.metrics:
                for resource_metrics in request.resource_metrics:
                    resource = attributes(resource_metrics.resource.attributes)
                    for scope_metrics in resource_metrics.scope_metrics:
                        for metric in scope_metrics.metrics:
                            found[metric.name] = (resource, metric)
        return found


def any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(any_value(item) for item in value.array_value.values)
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, kind) if kind else None


def attributes(items: Any) -> dict[str, Any]:
    return {item.key: any_value(item.value) for item in items if isinstance(item, KeyValue)}


class HttpReceiver:
    """OTLP/HTTP receiver. ``mode`` is ``"ok"``, ``"503"`` or ``"hang"``."""

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.received = Received()
        self._release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                receiver.received.attempt()
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if receiver.mode == "hang":
                    # Accept the request and never answer until the test ends.
                    receiver._release.wait(60)
                    return
                if receiver.mode == "503":
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                headers = {key.lower(): value for key, value in self.headers.items()}
                if self.path == "/v1/traces":
                    message: Any = ExportTraceServiceRequest.FromString(body)
                    reply: Any = trace_service_pb2.ExportTraceServiceResponse()
                    receiver.received.add("traces", message, headers, body)
                elif self.path == "/v1/metrics":
                    message = ExportMetricsServiceRequest.FromString(body)
                    reply = metrics_service_pb2.ExportMetricsServiceResponse()
                    receiver.received.add("metrics", message, headers, body)
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                payload = reply.SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> HttpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self, received: Received) -> None:
        self.received = received

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.received.attempt()
        self.received.add(
            "traces", request, dict(context.invocation_metadata()), request.SerializeToString()
        )
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):  # type: ignore[misc]
    def __init__(self, received: Received) -> None:
        self.received = received

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.received.attempt()
        self.received.add(
            "metrics", request, dict(context.invocation_metadata()), request.SerializeToString()
        )
        return metrics_service_pb2.ExportMetricsServiceResponse()


class GrpcReceiver:
    """OTLP/gRPC receiver for traces and metrics."""

    def __init__(self) -> None:
        self.received = Received()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
            _TraceService(self.received), self._server
        )
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
            _MetricsService(self.received), self._server
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> GrpcReceiver:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(grace=None)


def closed_port() -> int:
    """A local port nothing listens on (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
