"""A real Prometheus on 127.0.0.1 for tests: temp config, temp TSDB, free port.

The binary is Debian's ``prometheus`` (``make test`` installs it). Missing
binary is a failure with instructions, never a skip: the dashboard test is the
only thing that proves the dashboards' queries return data.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deploy.processes import stop_process, wait_until_ready

INSTALL_HINT = (
    "the 'prometheus' binary is needed by the dashboard tests and was not found on PATH "
    "or at /usr/bin/prometheus. `make test` installs Debian's package "
    "(apt-get install --no-install-recommends prometheus); elsewhere install Prometheus 2.x or "
    "3.x and put it on PATH, or set PROMETHEUS_BIN=/path/to/prometheus."
)


def find_binary() -> str | None:
    explicit = os.environ.get("PROMETHEUS_BIN")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("prometheus")
    if found:
        return found
    return "/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PrometheusServer:
    """One Prometheus process scraping the given targets every second."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        targets: list[str],
        extra_args: list[str] | None = None,
        rule_files: list[Path] | None = None,
    ) -> None:
        self.binary = binary
        self.extra_args = list(extra_args or [])
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "prometheus.yml"
        self.log = workdir / "prometheus.log"
        # YAML is a superset of JSON, so the config is written as JSON: no quoting surprises.
        static: dict[str, Any] = {"targets": targets}
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "900ms",
                "evaluation_interval": "1s",
            },
            "scrape_configs": [
                {"job_name": "techrevati-dashboard-test", "static_configs": [static]},
            ]
            if targets
            else [],
        }
        if rule_files:
            config["rule_files"] = [str(path) for path in rule_files]
        self.config.write_text(json.dumps(config, indent=2), encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        log = self.log.open("wb")
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until_ready(
            self.proc,
            f"{self.url}/-/ready",
            name="prometheus",
            timeout=timeout,
            logs=self.log.read_text,
        )

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace_s=10)
        self.proc = None

    # --- HTTP API ---------------------------------------------------------------

    def api(self, path: str, params: Mapping[str, str] | list[tuple[str, str]]) -> Any:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:  # 400/422 carry a JSON error body
            body = json.load(exc)
            raise AssertionError(
                f"Prometheus rejected {path} {dict(params)}: {body.get('error')}"
            ) from exc
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus error for {path} {dict(params)}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query at 'now'; returns the vector (scalars become one sample)."""
        data = self.api("/api/v1/query", {"query": expr})
        if data["resultType"] == "vector":
            result: list[dict[str, Any]] = data["result"]
            return result
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        raise AssertionError(f"unexpected result type {data['resultType']} for {expr}")

    def query_range(self, expr: str, start: float, end: float, step: str) -> list[dict[str, Any]]:
        """A range query, as Grafana asks a time-series panel: one matrix per series."""
        data = self.api(
            "/api/v1/query_range",
            {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": step},
        )
        if data["resultType"] != "matrix":
            raise AssertionError(f"unexpected result type {data['resultType']} for {expr}")
        result: list[dict[str, Any]] = data["result"]
        return result

    def series(self, match: str) -> list[dict[str, str]]:
        result: list[dict[str, str]] = self.api("/api/v1/series", [("match[]", match)])
        return result

    def metric_names(self) -> set[str]:
        return set(self.api("/api/v1/label/__name__/values", {}))

    def wait_for(self, expr: str, predicate: Any, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Poll ``expr`` until ``predicate(result)`` holds; fail with the last result."""
        deadline = time.monotonic() + timeout
        last: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            last = self.query(expr)
            if predicate(last):
                return last
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout}s waiting on {expr!r}; last={last}")


def value(result: list[dict[str, Any]]) -> float:
    """The single value of a one-sample vector."""
    assert len(result) == 1, f"expected one sample, got {result}"
    return float(result[0]["value"][1])
