"""collector-config/alerts.yml, checked and unit-tested the way Prometheus users do it.

``promtool check rules`` and ``promtool test rules`` (Debian's prometheus package
ships promtool; ``make test`` installs it) on the shipped files, plus proof that
the unit tests can fail: a copy of the rules where no alert can fire, and one where
every alert always fires, must each fail for every alert by name.
tests/test_alerts_live.py fires alerts end to end.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "collector-config"
RULES = CONFIG_DIR / "alerts.yml"
UNIT_TESTS = CONFIG_DIR / "alerts.test.yml"
REQUIRED = {
    "TechrevatiBudgetBurnFast",
    "TechrevatiBudgetBurnSlow",
    "TechrevatiRefusalSpike",
    "TechrevatiBreakerOpen",
    "TechrevatiUnpricedCalls",
    "TechrevatiCallsWithoutUsage",
    "TechrevatiExportDrops",
    "TechrevatiFleetStoreErrors",
    "TechrevatiLoopDetected",
}


def _promtool() -> str:
    found = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(found).exists():
        pytest.fail(
            "promtool (Debian's prometheus package; `make test` installs it) not found",
            pytrace=False,
        )
    return found


def _run(*args: str, cwd: Path = CONFIG_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def _rules() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return data


def _alerts(rules: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for g in rules["groups"] for r in g["rules"] if "alert" in r]


def test_the_rules_file_has_the_named_alerts() -> None:
    assert {r["alert"] for r in _alerts(_rules())} == REQUIRED
    for rule in _alerts(_rules()):
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert rule["annotations"]["runbook_url"].endswith("#" + rule["alert"].lower())


def test_a_series_is_new_only_when_unseen_for_a_week() -> None:
    """Each rule's "is this series new?" check looks a week before its lookback.

    Looking back only one lookback (``x[L] unless x[L] offset L``) read a series that
    resumed after a gap longer than L as new, its lifetime total as spent now: 2 old
    store errors paged after a 9-minute gap, a $100 lifetime a 1-hour burn of 7,200
    after a 130-minute one (alerts.test.yml runs those cases).
    """
    text = "\n".join(r["expr"] for g in _rules()["groups"] for r in g["rules"])
    checks = re.findall(r"unless last_over_time\((\w+)\[(\w+)\] offset (\w+)\)", text)
    assert checks, "no new-series check found"
    assert len(checks) == text.count(" offset "), "an offset outside the new-series check"
    short = [c for c in checks if c[1] != "1w"]
    assert not short, f"new-series checks that look back less than a week: {short}"


def test_promtool_checks_the_rules() -> None:
    result = _run("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    count = sum(len(g["rules"]) for g in _rules()["groups"])
    assert f"SUCCESS: {count} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = _run("test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases = yaml.safe_load(UNIT_TESTS.read_text(encoding="utf-8"))
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in cases["tests"]:
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert firing == REQUIRED, f"no firing case: {sorted(REQUIRED - firing)}"
    assert quiet == REQUIRED, f"no quiet case: {sorted(REQUIRED - quiet)}"


@pytest.mark.parametrize("mutation", ["never", "always"])
def test_the_unit_tests_fail_for_every_alert_when_its_rule_is_broken(
    tmp_path: Path, mutation: str
) -> None:
    """Never-firing rules must fail every firing case; always-firing ones every quiet case."""
    rules = _rules()
    for rule in _alerts(rules):
        rule["expr"] = "vector(1) < 0" if mutation == "never" else "vector(1)"
        rule.pop("for", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules), encoding="utf-8")
    shutil.copy(UNIT_TESTS, tmp_path / "alerts.test.yml")
    result = _run("test", "rules", "alerts.test.yml", cwd=tmp_path)
    assert result.returncode != 0
    report = result.stdout + result.stderr
    failed = {name for name in REQUIRED if f"alertname: {name}," in report}
    assert failed == REQUIRED, f"not caught: {sorted(REQUIRED - failed)}\n{report}"
