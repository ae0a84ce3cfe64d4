"""Cached virtual environments for the interop scenarios (standard library only).

Third-party instrumentations pin conflicting versions (openai-v2 2.4b0 needs
the OpenTelemetry API 1.39, OpenLIT 1.45 needs ``openai<3`` and
``anthropic<1``), so each set under ``envs/`` gets its own venv, cached at
``~/.cache/techrevati/venv-<name>-<hash>`` where the hash covers the
requirement files and the Python version. A venv is complete only once its
``.complete`` stamp exists; a half-built one is rebuilt.

This package is not installed into them: the scenarios run with
``PYTHONPATH=<checkout>/src``, so a cached venv serves any checkout (a CI
clone in another folder included) and always runs the code under test. The
requirement files list this package's own runtime dependencies.

``python tests/interop/venvs.py`` builds every missing venv (``make
interop-venvs`` runs it), in parallel, and prints where they are.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
#: This checkout's package, which scenario scripts import.
SRC = HERE.parent.parent / "src"
ENVS = HERE / "envs"
CACHE = Path(os.environ.get("TECHREVATI_CACHE", Path.home() / ".cache" / "techrevati"))


def names() -> list[str]:
    """Every environment defined under ``envs/`` (constraint files are not environments)."""
    return sorted(p.stem for p in ENVS.glob("*.txt") if not p.stem.endswith("-constraints"))


def _inputs(name: str) -> list[Path]:
    main = ENVS / f"{name}.txt"
    found = [main]
    for line in main.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("-c", "-r"):
            found.append(ENVS / parts[1])
    return found


def path(name: str) -> Path:
    """Where the venv for ``name`` lives (built or not)."""
    digest = hashlib.sha256()
    digest.update(f"{sys.version_info.major}.{sys.version_info.minor}".encode())
    for item in _inputs(name):
        digest.update(item.name.encode())
        digest.update(item.read_bytes())
    return CACHE / f"venv-{name}-{digest.hexdigest()[:12]}"


def python(name: str) -> Path:
    """The interpreter of a built venv; raises if it is missing (tests must not skip)."""
    venv = path(name)
    if not (venv / ".complete").exists():
        raise FileNotFoundError(
            f"interop venv {name!r} is not built at {venv}; run `make interop-venvs`"
        )
    return venv / "bin" / "python"


def build(name: str) -> Path:
    venv = path(name)
    if (venv / ".complete").exists():
        return venv
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    log = venv.parent / f"venv-{name}.log"
    with log.open("w") as out:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, stdout=out)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        done = subprocess.run(
            [*pip, "-r", str(ENVS / f"{name}.txt")], stdout=out, stderr=subprocess.STDOUT
        )
    if done.returncode != 0:
        raise RuntimeError(f"building interop venv {name!r} failed; see {log}")
    (venv / ".complete").write_text("\n".join(p.name for p in _inputs(name)) + "\n")
    return venv


def run_scenario(
    python: str, script: Path, *args: str, mark: str, timeout: float, label: str = ""
) -> dict[str, Any]:
    """Run a scenario script with this checkout's ``src`` and read its result line.

    The script prints one line starting with ``mark`` followed by JSON; without
    it the run failed, and its exit code and the end of its stderr are raised.
    ``label`` names the set-up in that message.
    """
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("OTEL_SDK_DISABLED", None)
    done = subprocess.run(
        [python, str(script), *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    for line in done.stdout.splitlines():
        if line.startswith(mark):
            found: dict[str, Any] = json.loads(line[len(mark) :])
            return found
    said = f"{label}: scenario printed no result" if label else "no result"
    raise AssertionError(f"{said} (exit {done.returncode})\n{done.stderr[-3000:]}")


def main() -> int:
    wanted = sys.argv[1:] or names()
    with ThreadPoolExecutor(max_workers=len(wanted)) as pool:
        built = list(pool.map(build, wanted))
    for name, venv in zip(wanted, built, strict=True):
        print(f"{name}: {venv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def run_in_frameworks(scenario: Path, setup: str, *, mark: str) -> dict[str, Any]:
    """``scenario SETUP`` run in the ``frameworks`` venv (its own timeout), its result read."""
    return run_scenario(
        str(python("frameworks")), scenario, setup, mark=mark, timeout=600, label=setup
    )
