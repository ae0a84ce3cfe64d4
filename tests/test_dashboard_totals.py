"""The dashboards' range total (dashboards/build.py ``total``), evaluated by promtool.

Three kinds of series a real fleet leaves: a one-shot script that exported once, a
long-running process, and a process that restarted on the scrape path (its counter
began again under the same labels). The total over the range must count each what
it did inside the range: never nothing, never negative.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import grafana

RANGE = "30m"


def _total(metric: str) -> str:
    spec = importlib.util.spec_from_file_location(
        "dashboards_build", grafana.DASHBOARD_DIR / "build.py"
    )
    assert spec is not None and spec.loader is not None
    module: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expr: str = module.total(metric, group=["kind"])
    return expr.replace("$__range", RANGE)


def test_the_range_total_counts_one_shot_steady_and_restarted_series(tmp_path: Path) -> None:
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(promtool).exists():
        pytest.fail("promtool (Debian's prometheus package; `make test` installs it) not found")
    rules = tmp_path / "rules.yml"
    rules.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "t", "rules": [{"record": "range_total", "expr": _total("c")}]}]}
        ),
        encoding="utf-8",
    )
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # exported once, at its exit, inside the range: 7
                    {"series": 'c{kind="one-shot"}', "values": "_x40 7"},
                    # +1 a minute since long before the range: 30 inside it
                    {"series": 'c{kind="steady"}', "values": "0+1x60"},
                    # 100 before the range and until minute 45, restarted at 46, then +2 a minute
                    {"series": 'c{kind="restarted"}', "values": "0+5x20 100x24 0+2x15"},
                ],
                "promql_expr_test": [
                    {
                        "expr": "range_total",
                        "eval_time": "60m",
                        "exp_samples": [
                            {"labels": 'range_total{kind="one-shot"}', "value": 7},
                            {"labels": 'range_total{kind="steady"}', "value": 30},
                            # increase() follows the reset: 0 to 28 since the restart (the
                            # last minus the value before the range said 28 - 100 = -72).
                            {"labels": 'range_total{kind="restarted"}', "value": 28},
                        ],
                    }
                ],
            }
        ],
    }
    test_file = tmp_path / "test.yml"
    test_file.write_text(yaml.safe_dump(test), encoding="utf-8")
    done = subprocess.run(
        [promtool, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
