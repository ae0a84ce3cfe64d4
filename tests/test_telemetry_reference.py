"""docs/telemetry-reference.md says the status of every GenAI name the package uses."""

from __future__ import annotations

import re
from pathlib import Path

from techrevati.runtime.telemetry import semconv

PAGE = Path(__file__).resolve().parents[1] / "docs" / "telemetry-reference.md"
STATUSES = ("stable", "development", "proposal")
PROPOSED = {
    semconv.GEN_AI_USAGE_COST_AMOUNT,
    semconv.GEN_AI_USAGE_COST_CURRENCY,
    semconv.GEN_AI_USAGE_COST_SOURCE,
    semconv.GEN_AI_AGENT_ITERATION_BUDGET_LIMIT,
    semconv.GEN_AI_AGENT_ITERATION_BUDGET_CONSUMED,
}


def _rows() -> dict[str, str]:
    """First-column name -> last-column status of the page's GenAI table."""
    rows: dict[str, str] = {}
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(r"\| `(gen_ai\.[a-z_.]+)` \|.*\| ([^|]+) \|", line)
        if m:
            rows[m.group(1)] = m.group(2).strip()
    return rows


def test_every_gen_ai_name_in_semconv_has_a_stated_status() -> None:
    names = {
        v
        for k, v in vars(semconv).items()
        if k.isupper() and isinstance(v, str) and v.startswith("gen_ai.")
    }
    rows = _rows()
    missing = names - set(rows)
    assert not missing, f"not in docs/telemetry-reference.md: {sorted(missing)}"
    for name in names:
        status = rows[name]
        assert status.startswith(STATUSES), f"{name}: {status!r}"
        assert status.startswith("proposal") == (name in PROPOSED), f"{name}: {status!r}"


def test_every_mid_rename_pair_is_listed_as_one() -> None:
    text = PAGE.read_text(encoding="utf-8")
    for current, old in semconv.MID_RENAME.items():
        assert f"| `{current}` | `{old}` |" in text
