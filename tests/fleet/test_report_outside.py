"""A refusal outside every session (configure(fleet=...)) is in the spans file and the report."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from techrevati.runtime.__main__ import main

from .redis_server import RedisServer

REPO = Path(__file__).resolve().parents[2]


def test_a_refusal_outside_sessions_is_reported_by_scope(
    redis_server: RedisServer, tmp_path: Path, capsys: object
) -> None:
    code = textwrap.dedent(
        f"""
        from techrevati.runtime import FleetLimits, MaxIterationsExceededError, agent_turn
        from techrevati.runtime import configure

        tenant = FleetLimits({redis_server.url!r}, scope="tenant-out", max_calls=1)
        configure(service_name="outside", fleet=tenant, spans_file="run.jsonl", report=False)

        @agent_turn()
        def ask() -> str:
            return "a"

        ask()
        refused = 0
        for _ in range(3):
            try:
                ask()
            except MaxIterationsExceededError as stop:
                refused += 1
                assert stop.scope == "tenant-out" and stop.site.level == "fleet"
        print(refused)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(REPO / "src")
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "3"
    assert main(["report", str(tmp_path / "run.jsonl")]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    limit_rows = out.split("Limit hits", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    # Three calls refused outside any session: three hits, not "none".
    assert any(row.split()[0] == "fleet_calls" and row.split()[-1] == "3" for row in limit_rows), (
        out
    )
    fleet = out.split("Fleet scopes", 1)[1].split("\n\n", 1)[0]
    assert "tenant-out" in fleet and "fleet_calls 3" in fleet, out
