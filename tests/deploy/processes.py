"""Start-up and shut-down of the real servers the tests run (Prometheus, the collector).

Both wait for an HTTP readiness URL while watching that the process is still
alive, and both stop with SIGTERM first so the server flushes what it holds.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable


def wait_until_ready(
    proc: subprocess.Popen[bytes],
    url: str,
    *,
    name: str,
    timeout: float,
    logs: Callable[[], str],
    poll_s: float = 0.1,
) -> None:
    """Return once ``url`` answers 200; raise with the server's log if it dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{logs()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(poll_s)
    stop_process(proc, grace_s=10)
    raise RuntimeError(f"{name} not ready after {timeout}s:\n{logs()}")


def stop_process(proc: subprocess.Popen[bytes], *, grace_s: float) -> None:
    """SIGTERM, wait ``grace_s``, then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
