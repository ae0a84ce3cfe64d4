"""examples/decorated_agent.py runs as documented and prints a priced session summary."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_decorated_agent_example_runs(tmp_path: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("OTEL_") or k == "OTEL_SDK_DISABLED"
    }
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    proc = subprocess.run(
        [sys.executable, "-m", "examples.decorated_agent"],
        cwd=tmp_path,  # configure() writes its local span file here
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "write_db refused: role 'writer' has READ_ONLY but tool requires FULL_ACCESS" in out
    assert "stream -> 'Retrieval-augmented generation looks things up first.'" in out
    # plan: 1000 fresh at 0.15 + 4000 cached at 0.075 + 120 out at 0.60; write: 1200 + 300 out
    cost = (1000 * 0.15 + 4000 * 0.075 + 120 * 0.60 + 1200 * 0.15 + 300 * 0.60) / 1e6
    assert f'"gpt-4o-mini": {round(cost, 6)}' in out
    assert '"turns": 2' in out
    assert (tmp_path / "telemetry-out" / "spans.jsonl").exists()
