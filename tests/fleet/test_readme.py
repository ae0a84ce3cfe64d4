"""The fleet examples of docs/fleet.md run verbatim against a real redis-server.

(README.md links to that page; it no longer repeats the examples.)
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from techrevati.runtime import FleetLimits

from .redis_server import RedisServer

REPO = Path(__file__).resolve().parents[2]


def fleet_snippets(page: str) -> list[str]:
    text = (REPO / page).read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("page", ["docs/fleet.md"])
def test_the_fleet_examples_run(redis_server: RedisServer, page: str) -> None:
    example, level = fleet_snippets(page)
    assert '"redis://127.0.0.1:6379/0"' in example
    out = io.StringIO()
    namespace: dict[str, object] = {}
    with contextlib.redirect_stdout(out):
        exec(example.replace("redis://127.0.0.1:6379/0", redis_server.url), namespace)
    lines = out.getvalue().splitlines()
    assert lines[0] == "tenant-42 is out of budget until the next window"
    assert "calls=2, spent_usd=0.066, reserved_usd=0.0" in lines[1]

    tenant = FleetLimits(redis_server.url, scope="tenant-43", budget_usd=1.0)
    exec(level, {"tenant": tenant})
    usage = tenant.usage()
    assert (usage.calls, usage.spent_usd, usage.reserved_usd) == (1, 0.031, 0.0)
