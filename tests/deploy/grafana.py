"""Reading the bundled Grafana dashboards: panels, targets and variables.

Shared by the dashboard lint and the live Prometheus test, so both look at
exactly the same queries.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = REPO / "dashboards"
NAMES_FILE = Path(__file__).resolve().parent / "prometheus_names.json"

#: Datasource variables every dashboard declares, by plugin type.
DATASOURCE_VARIABLES = {"prometheus": "prometheus", "tempo": "tempo"}

_VAR = re.compile(
    r"\$\{(?P<braced>[A-Za-z0-9_.]+)(?::(?P<fmt>[A-Za-z]+))?\}|\$(?P<plain>[A-Za-z_][A-Za-z0-9_]*)|\[\[(?P<old>[A-Za-z0-9_]+)\]\]"
)


@dataclass(frozen=True)
class Target:
    dashboard: str  # file name
    panel: dict[str, Any]
    target: dict[str, Any]
    datasource_type: str

    @property
    def where(self) -> str:
        return f"{self.dashboard} / {self.panel.get('title')!r} / refId {self.target.get('refId')}"


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARD_DIR.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def load_names() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(NAMES_FILE.read_text(encoding="utf-8"))
    return data


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def datasource_type(ref: Any, dashboard: Mapping[str, Any]) -> str | None:
    """The plugin type a datasource reference resolves to, following variables."""
    if not isinstance(ref, Mapping):
        return None
    if ref.get("type"):
        return str(ref["type"])
    uid = str(ref.get("uid", ""))
    m = _VAR.fullmatch(uid)
    if m:
        name = m.group("braced") or m.group("plain") or m.group("old")
        for var in dashboard.get("templating", {}).get("list", []):
            if var.get("name") == name and var.get("type") == "datasource":
                return str(var.get("query"))
    return None


def iter_targets(path: Path, dashboard: Mapping[str, Any]) -> Iterator[Target]:
    for panel in iter_panels(dashboard):
        if panel.get("type") == "row":
            continue
        for target in panel.get("targets", []):
            ds = target.get("datasource") or panel.get("datasource")
            kind = datasource_type(ds, dashboard) or "unknown"
            yield Target(path.name, panel, target, kind)


def variables(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(dashboard.get("templating", {}).get("list", []))


def variable_names(text: str) -> set[str]:
    names = set()
    for m in _VAR.finditer(text):
        names.add(m.group("braced") or m.group("plain") or m.group("old"))
    return names


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Replace Grafana variables (``$x``, ``${x}``, ``${x:regex}``, ``[[x]]``).

    A variable missing from ``values`` is an error: a query must not reach
    Prometheus with a ``$`` left in it.
    """

    def repl(m: re.Match[str]) -> str:
        name = m.group("braced") or m.group("plain") or m.group("old")
        if name not in values:
            raise KeyError(f"no value for Grafana variable {name!r} in {text!r}")
        return values[name]

    return _VAR.sub(repl, text)
