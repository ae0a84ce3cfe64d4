"""The dashboards' range total (dashboards/build.py ``total``), evaluated by promtool.

Three kinds of series a real fleet leaves: a one-shot script that exported once, a
long-running process, and a process that restarted on the scrape path (its counter
began again under the same labels). The total over the range must count each what
it did inside the range: never nothing, never negative. A series that resumes after
a gap (collector restart, Prometheus outage, missed scrapes) is the same series, not
a new one: it counts what it gained inside the range, not its lifetime total.
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


def _promtool_test(tmp_path: Path, expr: str, tests: list[dict[str, Any]]) -> None:
    """Run ``promtool test rules`` on the recorded rule ``range_total = expr``."""
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(promtool).exists():
        pytest.fail("promtool (Debian's prometheus package; `make test` installs it) not found")
    rules = tmp_path / "rules.yml"
    rules.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "t", "rules": [{"record": "range_total", "expr": expr}]}]}
        ),
        encoding="utf-8",
    )
    test_file = tmp_path / "test.yml"
    test_file.write_text(
        yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": tests}),
        encoding="utf-8",
    )
    done = subprocess.run(
        [promtool, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_range_total_counts_one_shot_steady_and_restarted_series(tmp_path: Path) -> None:
    _promtool_test(
        tmp_path,
        _total("c"),
        [
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
    )


def test_a_series_that_resumes_after_a_gap_counts_only_what_it_gained_in_the_range(
    tmp_path: Path,
) -> None:
    """A gap (collector restart, Prometheus outage, missed scrapes) does not make a series new.

    The range is the last 30 minutes at minute 120 (samples 90..120), the lookback
    before it minutes 60..90. Each long-lived series was last seen at minute 40 and
    resumes at 101: a gap longer than the range, so nothing of it lies in the lookback
    before the range. The old check (``x[$__range] unless x[$__range] offset $__range``)
    read each as first seen inside the range and counted its lifetime value: 100, 7 and 8
    where the range holds 0, 2 and 0. A series counts as new only when unseen for a week
    before the range (``[1w] offset $__range``, as in collector-config/alerts.yml).
    increase() extrapolates to the range's start, so totals are compared rounded.
    """
    _promtool_test(
        tmp_path,
        f"round({_total('c')})",
        [
            {
                "interval": "1m",
                "input_series": [
                    # $100 over its life before the gap, resumes unchanged: nothing in the range
                    {"series": 'c{kind="resumed"}', "values": "100x40 _x60 100x19"},
                    # resumes at 5, then counts 2 more inside the range: 2
                    {"series": 'c{kind="resumed-busy"}', "values": "5x40 _x60 5x9 7x9"},
                    # never seen before, first sample inside the range: all of it, 3
                    {"series": 'c{kind="new"}', "values": "_x100 3x19"},
                    # 5 -> 8 while unseen, since before the lookback: Prometheus cannot
                    # tell when it happened, so the range does not claim it (0, as the
                    # alert rules)
                    {"series": 'c{kind="gained-unseen"}', "values": "5x40 _x60 8x19"},
                    # a gap that leaves a sample in the lookback before the range: the
                    # difference spans it, 5 -> 8 counts 3
                    {"series": 'c{kind="short-gap"}', "values": "5x80 _x15 8x24"},
                ],
                "promql_expr_test": [
                    {
                        "expr": "range_total",
                        "eval_time": "120m",
                        "exp_samples": [
                            {"labels": 'range_total{kind="resumed"}', "value": 0},
                            {"labels": 'range_total{kind="resumed-busy"}', "value": 2},
                            {"labels": 'range_total{kind="new"}', "value": 3},
                            {"labels": 'range_total{kind="gained-unseen"}', "value": 0},
                            {"labels": 'range_total{kind="short-gap"}', "value": 3},
                        ],
                    }
                ],
            }
        ],
    )


def test_a_series_unseen_for_over_a_week_reads_as_new_again(tmp_path: Path) -> None:
    """The documented limit of the week: past it, a resumed series counts in full once.

    One sample an hour: "week-old" was last seen 191 hours (over 168) before the range,
    "days-old" 101 hours before it. The 30-minute range at hour 191 or 101 holds one
    sample of each, equal to the one before the gap.
    """
    _promtool_test(
        tmp_path,
        _total("c"),
        [
            {
                "interval": "1h",
                "input_series": [
                    {"series": 'c{kind="week-old"}', "values": "4 _x190 4"},
                    {"series": 'c{kind="days-old"}', "values": "4 _x100 4 _x89"},
                ],
                "promql_expr_test": [
                    {
                        "expr": "range_total",
                        "eval_time": "191h",
                        "exp_samples": [{"labels": 'range_total{kind="week-old"}', "value": 4}],
                    },
                    # one sample in the range and seen before: no increase() to take, and
                    # no value either: an empty result (a KPI built with or_zero() shows 0)
                    {"expr": "range_total", "eval_time": "101h", "exp_samples": []},
                ],
            }
        ],
    )
