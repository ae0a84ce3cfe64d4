"""Build and run the OpenTelemetry Collector that collector-config/ describes.

Two binaries come from the OpenTelemetry Collector Builder (ocb), both cached in
``~/.cache/techrevati/otelcol-<hash>/`` where ``<hash>`` is the first 16 hex digits
of the SHA-256 of the shipped manifest followed by the test additions (the
Makefile's ``OTELCOL_DIR`` computes the same):

* ``shipped/otelcol-techrevati``: exactly ``collector-config/builder-config.yaml``,
  i.e. exactly the components ``otelcol.yaml`` uses;
* ``test/otelcol-techrevati-test``: the same plus the exporters in
  ``tests/deploy/builder-test-additions.yaml`` (``prometheusremotewrite``), because
  Debian's Prometheus 2.42 has no OTLP receiver and takes remote write instead.

Both builds share Go's module and build caches, so the second one mostly links.

Run as a script (``make collector`` does)::

    python tests/deploy/collector.py build     # builds what is missing, prints the paths
    python tests/deploy/collector.py dir       # the cache folder, built or not
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

try:
    from deploy.processes import stop_process, wait_until_ready
except ImportError:  # run as a script (make collector): this folder is on sys.path
    from processes import stop_process, wait_until_ready  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "collector-config"
MANIFEST = CONFIG_DIR / "builder-config.yaml"
TEST_ADDITIONS = Path(__file__).resolve().parent / "builder-test-additions.yaml"
#: Merged over otelcol.yaml in the tests: metrics also go to Prometheus by remote write.
REMOTE_WRITE_OVERRIDE = Path(__file__).resolve().parent / "otelcol-remote-write.yaml"
CACHE_ROOT = Path.home() / ".cache" / "techrevati"  # the Makefile's OTELCOL_DIR agrees
SHIPPED_NAME = "otelcol-techrevati"
TEST_NAME = "otelcol-techrevati-test"
BUILDER_MODULE = "go.opentelemetry.io/collector/cmd/builder"
#: The generated module says `go 1.24.0` at this release.
MIN_GO = (1, 24)

BUILD_HINT = (
    "the collector built from collector-config/builder-config.yaml is missing; "
    "`make collector` (part of `make test`) builds it with Go and the module proxy"
)


def manifest_hash() -> str:
    """What names the cache folder: the shipped manifest, then the test additions."""
    digest = hashlib.sha256(MANIFEST.read_bytes() + TEST_ADDITIONS.read_bytes())
    return digest.hexdigest()[:16]


def cache_dir() -> Path:
    return CACHE_ROOT / f"otelcol-{manifest_hash()}"


def shipped_binary() -> Path:
    return cache_dir() / "shipped" / SHIPPED_NAME


def test_binary() -> Path:
    return cache_dir() / "test" / TEST_NAME


def load_manifest() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    return data


def release() -> str:
    """The collector release the manifest pins (``dist.version``), e.g. ``0.139.0``."""
    return str(load_manifest()["dist"]["version"])


def _manifest_for(kind: str, out: Path) -> dict[str, Any]:
    manifest = load_manifest()
    manifest["dist"]["output_path"] = str(out)
    if kind == "test":
        additions: dict[str, Any] = yaml.safe_load(TEST_ADDITIONS.read_text(encoding="utf-8"))
        for section, entries in additions.items():
            manifest.setdefault(section, []).extend(entries)
        manifest["dist"]["name"] = TEST_NAME
        manifest["dist"]["description"] += " + test-only exporters"
    return manifest


def _builder(root: Path, env: Mapping[str, str]) -> Path:
    """The ocb binary of the manifest's release, installed once under ``root/tools``."""
    gobin = root / "tools"
    builder = gobin / "builder"
    if not builder.exists():
        subprocess.run(
            ["go", "install", f"{BUILDER_MODULE}@v{release()}"],
            check=True,
            env={**env, "GOBIN": str(gobin)},
        )
    return builder


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    # The generated module resolves its own dependencies (the builder runs go mod tidy).
    flags = env.get("GOFLAGS", "").split()
    if "-mod=mod" not in flags:
        flags.append("-mod=mod")
    env["GOFLAGS"] = " ".join(flags)
    return env


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One build at a time per cache folder (parallel `make` runs, several worktrees)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build() -> tuple[Path, Path]:
    """Build both binaries unless cached; returns (shipped, test)."""
    if shutil.which("go") is None:
        raise SystemExit(
            "go is not on PATH: the collector is built from its Go modules "
            "(Go >= 1.24 and the Go module proxy are needed)"
        )
    version = subprocess.run(
        ["go", "env", "GOVERSION"], capture_output=True, text=True, check=True
    ).stdout.strip()
    numbers = tuple(int(n) for n in version.removeprefix("go").split(".")[:2])
    if numbers < MIN_GO:
        raise SystemExit(f"{version} is too old: the collector needs Go >= 1.24")
    root = cache_dir()
    with _locked(root):
        env = _go_env()
        # The test binary first: it is what the tests run, and it warms the caches the
        # shipped one reuses.
        for kind, binary in (("test", test_binary()), ("shipped", shipped_binary())):
            if binary.exists():
                continue
            out = binary.parent
            spec = root / f"{kind}-manifest.yaml"
            spec.write_text(yaml.safe_dump(_manifest_for(kind, out), sort_keys=False))
            started = time.monotonic()
            builder = _builder(root, env)
            subprocess.run([str(builder), f"--config={spec}"], check=True, env=env, cwd=root)
            if not binary.exists():
                raise SystemExit(f"the builder finished but {binary} does not exist")
            seconds = time.monotonic() - started
            (root / f"{kind}-build-seconds").write_text(f"{seconds:.0f}\n")
            print(f"built {binary} in {seconds:.0f} s", file=sys.stderr)
    return shipped_binary(), test_binary()


# --- running it ----------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def validate(
    binary: Path, configs: list[Path], env: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    """``<binary> validate --config=...``: the collector's own check of a configuration."""
    args = [str(binary), "validate", *(f"--config={c}" for c in configs)]
    return subprocess.run(args, capture_output=True, text=True, env=dict(env), timeout=120)


def components(binary: Path) -> dict[str, set[str]]:
    """Component types compiled into ``binary``, by kind (its ``components`` command)."""
    out = subprocess.run(
        [str(binary), "components"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    data = yaml.safe_load(out)
    return {
        kind: {entry["name"] for entry in data.get(kind) or []}
        for kind in ("receivers", "processors", "exporters", "extensions", "connectors")
    }


class Collector:
    """The collector on 127.0.0.1 with the shipped config, env overrides for addresses only."""

    def __init__(
        self, binary: Path, configs: list[Path], workdir: Path, env: Mapping[str, str]
    ) -> None:
        self.binary = binary
        self.configs = configs
        self.workdir = workdir
        self.extra_env = dict(env)
        self.log = workdir / "otelcol.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._pick_ports()

    def _pick_ports(self) -> None:
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("OTEL")},
            "OTELCOL_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{self.grpc_port}",
            "OTELCOL_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{self.http_port}",
            "OTELCOL_HEALTH_ENDPOINT": f"127.0.0.1:{self.health_port}",
            "OTELCOL_METRICS_HOST": "127.0.0.1",
            "OTELCOL_METRICS_PORT": str(self.metrics_port),
            **self.extra_env,
        }

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 60.0, attempts: int = 3) -> None:
        """Start and wait until healthy; new ports if another process took one meanwhile."""
        for attempt in range(attempts):
            try:
                self._start_once(timeout)
                return
            except RuntimeError as exc:
                if "address already in use" not in str(exc) or attempt == attempts - 1:
                    raise
                self._pick_ports()

    def _start_once(self, timeout: float) -> None:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(self.binary), *(f"--config={c}" for c in self.configs)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        wait_until_ready(
            self.proc,
            f"http://127.0.0.1:{self.health_port}/",
            name="otelcol",
            timeout=timeout,
            logs=self.logs,
            poll_s=0.2,
        )

    def stop(self) -> None:
        """Stop it the way an operator does (SIGTERM), so it flushes its batches."""
        if self.proc is not None:
            stop_process(self.proc, grace_s=30)
        self.proc = None

    def logs(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "build"
    if command == "dir":
        print(cache_dir())
    elif command == "build":
        for binary in build():
            print(binary)
    else:
        print(f"usage: {argv[0]} [build|dir]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
