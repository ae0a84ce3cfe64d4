"""The HTML report: one offline page, rendered by a real browser, agreeing with the text report.

A real run (``report_html_scenario.py``: the public API, ``configure()`` with a
spans file and ``report_html``) is turned into a page by the command line and
by ``configure()`` at exit; Debian's Chromium renders it headless. The test
reads the numbers from the rendered DOM and compares them with the text report
of the same file, checks that hostile names stay text, that the page logged
nothing to the console, and writes a screenshot to
``test-output/html-report/report.png`` (path printed) for people to look at.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from browser import Node, parse, render, screenshot
from report_html_big import write_spans
from report_html_scenario import HOSTILE_MODEL, HOSTILE_TOOL
from techrevati.runtime.__main__ import main
from techrevati.runtime.telemetry.report.detail import Bounds, RunDetail, SessionNode, build_detail
from techrevati.runtime.telemetry.report.html import render_html, script_json, write_html
from techrevati.runtime.telemetry.report.model import RunReport, build_report
from techrevati.runtime.telemetry.report.read import SpanRecord, load_spans_file

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "test-output" / "html-report" / "report.png"


class Run:
    """The scenario's files, its text report, and its page as Chromium rendered it."""

    def __init__(self, folder: Path) -> None:
        self.spans = folder / "spans.jsonl"
        self.exit_page = folder / "at-exit.html"
        self.page = folder / "report.html"
        done = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).with_name("report_html_scenario.py")),
                str(self.spans),
                str(self.exit_page),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        self.exit_stderr = done.stderr
        self.text = subprocess.run(
            [sys.executable, "-m", "techrevati.runtime", "report", str(self.spans)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        html = subprocess.run(
            [
                sys.executable,
                "-m",
                "techrevati.runtime",
                "report",
                str(self.spans),
                "--html",
                str(self.page),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert html.returncode == 0, html.stderr
        self.cli_stdout = html.stdout
        rendered = render(self.page)
        self.console = rendered.console
        self.dom = parse(rendered.dom)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return Run(tmp_path_factory.mktemp("html-report"))


def _text_table(text: str, title: str) -> list[list[str]]:
    """Rows of one table of the text report, split on runs of 2+ spaces."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("  ") or not line.strip():
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    return rows


def _dom_rows(table: Node) -> list[list[str]]:
    return [
        [cell.text.strip() for cell in row.find("td")] for row in table.find("tbody")[0].find("tr")
    ]


def test_the_page_renders_in_chromium_without_a_console_message(run: Run) -> None:
    assert run.console == []
    body = run.dom.find("body")[0]
    # The script ran to its last line: it drew both sessions' timelines.
    assert body.attrs.get("data-rendered") == "2"
    assert run.cli_stdout.startswith(f"HTML report: {run.page} (")


def test_the_totals_are_the_text_reports(run: Run) -> None:
    header = re.search(
        r"(\d+) sessions, (\d+) model calls, (\d+) tool calls, total cost \$([\d.]+)", run.text
    )
    assert header is not None, run.text

    def kpi(key: str) -> str:
        return run.dom.by_id(f"kpi-{key}").find(class_="num")[0].text

    assert kpi("sessions") == header.group(1) == "2"
    assert kpi("model-calls") == header.group(2) == "4"
    assert kpi("tool-calls") == header.group(3) == "19"
    assert kpi("total-cost") == header.group(4) == "0.007200"
    models = _text_table(run.text, "Model calls")
    assert kpi("input-tokens") == str(sum(int(row[2]) for row in models)) == "1700"
    assert kpi("output-tokens") == str(sum(int(row[3]) for row in models)) == "450"
    assert kpi("limit-hits") == "1"
    assert kpi("loops") == "1"


def test_the_tables_are_the_text_reports(run: Run) -> None:
    assert [row[:6] for row in _dom_rows(run.dom.by_id("models"))] == _text_table(
        run.text, "Model calls"
    )
    assert _dom_rows(run.dom.by_id("tools")) == _text_table(run.text, "Tools and permission")
    assert _dom_rows(run.dom.by_id("limit-hits")) == _text_table(run.text, "Limit hits")
    assert _dom_rows(run.dom.by_id("loops")) == [["planner", "search → fetch", "cycle", "1"]]
    assert _dom_rows(run.dom.by_id("wrap-ups")) == [
        ["planner", "at=0.5, fraction_left=0.5, limit=max_iterations"]
    ]
    # Cost by agent: each role's sessions, as the text report's session rows add up.
    sessions = _text_table(run.text, "Sessions")
    by_role = {row[0]: float(row[6]) for row in sessions}
    agents = {row[0]: float(row[3]) for row in _dom_rows(run.dom.by_id("agents"))}
    assert agents == pytest.approx(by_role)
    assert sum(agents.values()) == pytest.approx(0.0072)


def test_the_session_tree_matches_the_text_report(run: Run) -> None:
    sessions = {row[0]: row for row in _text_table(run.text, "Sessions")}
    shown = run.dom.find("details", class_="session")
    assert [node.attrs["data-depth"] for node in shown] == ["0", "1"]
    for node in shown:
        cells = [span.text.strip() for span in node.find("summary")[0].children]
        role, outcome, cost, tree_cost, tokens_in, tokens_out, calls, tools, badges = cells
        text_row = sessions[role]
        assert [outcome, cost, tokens_in, tokens_out, calls] == [
            text_row[1],
            text_row[6],
            text_row[4],
            text_row[5],
            text_row[3],
        ]
        if role == "planner":
            # Its own cost plus the child's, as the tree shows it.
            assert float(tree_cost) == pytest.approx(0.0064 + 0.0008)
            assert tools == "19"
            assert "loop x1" in badges and "wrap-up" in badges
        else:
            assert tree_cost == cost
            assert badges == "budget"


def test_the_timelines_mark_refused_and_failed_calls_with_details_on_hover(run: Run) -> None:
    planner, researcher = (
        run.dom.by_id("timeline-0"),
        run.dom.by_id("timeline-1"),
    )
    bars = planner.find("rect")
    statuses = [(bar.attrs["data-kind"], bar.attrs["data-status"]) for bar in bars]
    assert statuses == [
        ("model", "ok"),
        ("tool", "ok"),
        ("tool", "refused"),
        ("tool", "failed"),
        *[("tool", "ok")] * 16,  # search, fetch, eight times
        ("session", "failed"),
        ("model", "ok"),
    ]
    tips = [bar.find("title")[0].text for bar in bars]
    assert "price source: registered" in tips[0] and "cost $0.006000" in tips[0]
    assert "breaker: model-api: closed" in tips[0]
    assert "permission: deny" in tips[2] and "PermissionDeniedError" in tips[2]
    assert "permission: allow" in tips[3] and "error: ZeroDivisionError" in tips[3]
    markers = [g.find("title")[0].text for g in planner.find("g", class_="marker")]
    assert "loop: search → fetch (cycle)" in markers
    assert "wrap-up: at=0.5, fraction_left=0.5, limit=max_iterations" in markers
    hit = [g.find("title")[0].text for g in researcher.find("g", class_="marker")]
    assert hit == ["limit hit: budget (BudgetExceededError)"]
    assert len(researcher.find("rect")) == 2  # the two calls that ran


def test_hostile_names_stay_text(run: Run) -> None:
    assert run.dom.find(id="injected") == []
    assert len(run.dom.find("script")) == 2  # the data block and the page's own script
    model_cells = [row[0] for row in _dom_rows(run.dom.by_id("models"))]
    assert HOSTILE_MODEL in model_cells
    assert HOSTILE_TOOL in [row[0] for row in _dom_rows(run.dom.by_id("tools"))]
    labels = [t.text for t in run.dom.by_id("timeline-0").find("text")]
    assert f"tool {HOSTILE_TOOL}"[:35] in "".join(labels)
    raw = run.page.read_text(encoding="utf-8")
    data = raw.split('<script type="application/json" id="trr-data">', 1)[1].split("</script>")[0]
    assert "<" not in data and ">" not in data
    assert HOSTILE_TOOL in json.loads(data)["sessions"][0]["items"][1]["name"]


def test_the_page_needs_no_network(run: Run) -> None:
    raw = run.page.read_text(encoding="utf-8")
    assert not re.search(
        r"""(src|href)\s*=|url\(|@import|https?://(?!www\.w3\.org/2000/svg)""", raw
    )
    assert "default-src 'none'" in raw and "script-src 'sha256-" in raw


def test_configure_writes_the_page_at_exit(run: Run) -> None:
    assert f"HTML report: {run.exit_page}" in run.exit_stderr
    page = run.exit_page.read_text(encoding="utf-8")
    assert (
        'id="kpi-total-cost"><div class="label">Total cost USD</div><div class="num">0.007200'
        in page
    )
    assert page.count('class="session"') == 2


def test_a_screenshot_for_people(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    console = screenshot(run.page, SCREENSHOT, window=(1280, 1500))
    assert console == []
    png = SCREENSHOT.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1280, 1500)
    with capsys.disabled():  # shown on every run, not only on failure
        print(f"\nHTML report screenshot: {SCREENSHOT}")


# --- bounds, without a browser ---------------------------------------------------------
def test_script_json_cannot_close_its_block_and_round_trips() -> None:
    nasty = ["</script>", "<!--", "-->", "<script>", "a&b", "\u2028\u2029", "</SCRIPT >"]
    text = script_json({"names": nasty})
    assert not re.search(r"[<>&\u2028\u2029]", text)
    assert json.loads(text) == {"names": nasty}


def test_the_sample_keeps_every_limit_hit_then_the_most_expensive(tmp_path: Path) -> None:
    spans = tmp_path / "spans.jsonl"
    written = write_spans(spans, 600_000, hit_every=25)
    records = load_spans_file(spans).records
    report = build_report(records)
    detail = build_detail(records, report, bounds=Bounds(sessions=40))
    kept = {node.id for node in detail.sessions}
    assert len(kept) == 40
    assert written.hit_ids <= kept  # every session with a limit hit
    by_cost = sorted(written.costs, key=lambda key: -written.costs[key])
    assert set(by_cost[:20]) <= kept  # the 20 most expensive
    # The rest of the sample: the next most expensive.
    must = set(by_cost[:20]) | written.hit_ids
    rest = [key for key in by_cost if key not in must]
    assert kept == must | set(rest[: 40 - len(must)])
    assert detail.sample_note.startswith(f"40 of {written.sessions} sessions are shown in full")
    hits = len(written.hit_ids)
    assert f"sessions with a limit hit ({hits} of {hits} in full" in detail.sample_note
    assert {node.id for node in detail.hit_sessions} == written.hit_ids
    # A child whose parent session was not sampled is a root here, and says whose child it is.
    orphans = [n for n in detail.sessions if n.parent is not None and n.parent not in kept]
    assert orphans and all(n.depth == 0 for n in orphans)
    page = render_html(report, detail)
    assert page.count("session not in the sample") == len(orphans)


def test_more_limit_hits_than_the_sample_are_all_listed(tmp_path: Path) -> None:
    spans = tmp_path / "spans.jsonl"
    written = write_spans(spans, 300_000, hit_every=2)
    records = load_spans_file(spans).records
    report = build_report(records)
    detail = build_detail(records, report, bounds=Bounds(sessions=10, expensive=4))
    by_cost = sorted(written.costs, key=lambda key: -written.costs[key])
    top = set(by_cost[:4])
    hits = [key for key in by_cost if key in written.hit_ids and key not in top]
    assert {n.id for n in detail.sessions} == top | set(hits[:6])
    in_full = len(written.hit_ids & {n.id for n in detail.sessions})
    assert f"({in_full} of {len(written.hit_ids)} in full; all are listed below)" in (
        detail.sample_note
    )
    # Every one of them is listed, most expensive first.
    assert [n.id for n in detail.hit_sessions] == [k for k in by_cost if k in written.hit_ids]
    page = render_html(report, detail)
    assert f"Sessions with a limit hit ({len(written.hit_ids)})" in page


def test_the_page_size_is_bounded_whatever_the_file_size(tmp_path: Path) -> None:
    sizes = {}
    for megabytes in (2, 8):
        spans = tmp_path / f"spans-{megabytes}.jsonl"
        written = write_spans(spans, megabytes * 1_000_000)
        page = tmp_path / f"page-{megabytes}.html"
        size = write_html(page, load_spans_file(spans).records)
        sizes[megabytes] = size
        text = page.read_text(encoding="utf-8")
        assert f"100 of {written.sessions} sessions are shown in full" in text
    # 4x the spans, about the same page: the sample, not the file, sets its size.
    assert sizes[8] < 1.15 * sizes[2]
    assert max(sizes.values()) < 2_500_000


def test_long_strings_are_cut_and_control_characters_dropped() -> None:
    from techrevati.runtime.telemetry import semconv as sc
    from techrevati.runtime.telemetry.report.read import SpanRecord

    session = SpanRecord(
        trace_id="a" * 32,
        span_id="1" * 16,
        parent_id=None,
        name="invoke_agent x",
        start_ns=0,
        end_ns=10,
        error=False,
        attributes={
            sc.GEN_AI_OPERATION_NAME: "invoke_agent",
            sc.GEN_AI_AGENT_NAME: "\x1b[2J" + "r" * 10_000,
        },
    )
    report = build_report([session])
    page = render_html(report, build_detail([session], report))
    assert "\x1b" not in page
    assert "r" * 120 not in page and "r" * 100 in page


def test_make_demo_writes_a_page_beside_each_spans_file(tmp_path: Path) -> None:
    """The Makefile's demo recipe, line by line, with this Python (no venv build)."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    commands = [line.strip().replace("$(PY)", sys.executable) for line in recipe]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    printed = ""
    for command in commands:
        done = subprocess.run(
            command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, (command, done.stderr)
        printed += done.stdout
    for name in ("tiny-agent", "decorated-agent"):
        page = tmp_path / "telemetry-out" / f"{name}.html"
        assert f"HTML report: telemetry-out/{name}.html (" in printed
        assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
        assert stat.S_IMODE(page.stat().st_mode) == 0o600


def test_a_child_session_in_another_process_joins_the_tree(tmp_path: Path) -> None:
    parent, child = tmp_path / "planner.jsonl", tmp_path / "worker.jsonl"
    script = Path(__file__).with_name("report_html_processes.py")
    subprocess.run(
        [sys.executable, str(script), "parent", str(parent), str(child)],
        check=True,
        timeout=120,
    )

    def detail(*files: Path) -> dict[str, SessionNode]:
        records = [r for path in files for r in load_spans_file(path).records]
        report = build_report(records)
        return {node.role: node for node in build_detail(records, report).sessions}

    alone = detail(child)["worker"]
    assert alone.parent is None and alone.remote_parent is not None  # the planner's span
    joined = detail(parent, child)
    assert joined["worker"].parent == joined["planner"].id
    assert joined["worker"].remote_parent is None and joined["worker"].depth == 1
    assert joined["planner"].remote_children == 1  # another service.name
    # (1,000 x $2 + 100 x $8) / 1M for the planner, (2,000 x $2 + 200 x $8) / 1M for the worker
    assert joined["planner"].tree_cost_usd == pytest.approx(0.0028 + 0.0056)

    page = tmp_path / "tree.html"
    assert main(["report", str(parent), str(child), "--html", str(page)]) == 0
    rendered = render(page)
    assert rendered.console == []
    rows = parse(rendered.dom).find("details", class_="session")
    assert [r.attrs["data-depth"] for r in rows] == ["0", "1"]
    planner_cells = [span.text for span in rows[0].find("summary")[0].children]
    assert planner_cells[:4] == ["planner", "completed", "0.002800", "0.008400"]
    assert "remote parent" in render_html(*_alone_report(child))


def _alone_report(path: Path) -> tuple[RunReport, RunDetail]:
    records = load_spans_file(path).records
    report = build_report(records)
    return report, build_detail(records, report)


def test_a_tree_roll_up_naming_remote_children_wins_when_larger() -> None:
    """A shared session's span counts its remote children's spend (their spans are
    elsewhere): that roll-up is the tree cost the page shows."""
    from techrevati.runtime.telemetry import semconv as sc
    from techrevati.runtime.telemetry.report.read import SpanRecord

    def session(span: str, cost: float, tree: float | None) -> SpanRecord:
        attrs: dict[str, object] = {
            sc.GEN_AI_OPERATION_NAME: "invoke_agent",
            sc.GEN_AI_AGENT_NAME: "root",
            sc.COST_USD: cost,
        }
        if tree is not None:
            attrs[sc.COST_TREE_USD] = tree
        return SpanRecord("b" * 32, span, None, "invoke_agent root", 0, 10, False, attrs)

    records = [session("1" * 16, 0.5, 2.25), session("2" * 16, 0.5, 0.25)]
    report = build_report(records)
    costs = sorted(node.tree_cost_usd for node in build_detail(records, report).sessions)
    assert costs == [0.5, 2.25]


EXIT_SCRIPT = """
import sys
from techrevati.runtime import ModelPricing, Orchestrator, UsageSnapshot, configure
from techrevati.runtime import register_pricing

configure(service_name="exit", spans_file=False, report=False, report_html=sys.argv[1])
register_pricing("exit-model", ModelPricing(input_per_million=2.0, output_per_million=8.0))
with Orchestrator(role="writer", phase="p").session() as session:
    session.run_turn(lambda: "ok", model="exit-model", usage=UsageSnapshot(1_000, 100))
print("done")
"""


def _exit_run(page: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, str(page)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_configure_writes_the_page_from_memory_when_no_file_keeps_the_spans(
    tmp_path: Path,
) -> None:
    page = tmp_path / "exit.html"
    done = _exit_run(page)
    assert done.returncode == 0, done.stderr
    assert f"HTML report: {page}" in done.stderr
    text = page.read_text(encoding="utf-8")
    # (1,000 x $2 + 100 x $8) / 1M, from the spans kept in memory (no spans file)
    assert '<div class="label">Total cost USD</div><div class="num">0.002800</div>' in text
    assert not list(tmp_path.glob(".exit.html*"))  # no temporary file left behind


def test_a_page_that_cannot_be_written_is_one_warning_at_exit(tmp_path: Path) -> None:
    page = tmp_path / "missing-dir" / "exit.html"
    done = _exit_run(page)
    assert done.returncode == 0
    assert done.stdout == "done\n"
    warnings = [line for line in done.stderr.splitlines() if "HTML report not written" in line]
    assert len(warnings) == 1 and str(page) in warnings[0]
    assert "Traceback" not in done.stderr


def test_shared_sessions_and_their_remote_children_are_marked() -> None:
    """What a shared session's spans say (the shared-sessions tests make them for real):
    the parent counts its remote children, the child names its remote parent's role."""
    from techrevati.runtime.telemetry import semconv as sc
    from techrevati.runtime.telemetry.report.read import SpanRecord

    parent = SpanRecord(
        "c" * 32,
        "1" * 16,
        None,
        "invoke_agent planner",
        0,
        10,
        False,
        {
            sc.GEN_AI_OPERATION_NAME: "invoke_agent",
            sc.GEN_AI_AGENT_NAME: "planner",
            sc.COST_USD: 0.25,
            sc.COST_TREE_USD: 1.25,
            sc.SESSION_SHARED: True,
            sc.SESSION_REMOTE_CHILDREN: 2,
        },
    )
    child = SpanRecord(
        "c" * 32,
        "2" * 16,
        "9" * 16,  # a span of the other process
        "invoke_agent worker",
        2,
        8,
        False,
        {
            sc.GEN_AI_OPERATION_NAME: "invoke_agent",
            sc.GEN_AI_AGENT_NAME: "worker",
            sc.COST_USD: 1.0,
            sc.SESSION_REMOTE_PARENT_ROLE: "planner",
        },
    )
    report = build_report([parent, child])
    detail = build_detail([parent, child], report)
    nodes = {node.role: node for node in detail.sessions}
    assert nodes["planner"].remote_children == 2 and nodes["planner"].tree_cost_usd == 1.25
    assert nodes["worker"].remote_parent == "9" * 16
    page = render_html(report, detail)
    assert ">shared</span>" in page and ">under planner</span>" in page
    assert "2 in another process or service" in page


def test_totals_folded_from_earlier_sessions_are_counted_and_labelled(tmp_path: Path) -> None:
    """The in-memory report may fold old traces into totals (``earlier_sessions``):
    the page then counts them and says that the agent rows do not list them."""
    spans = tmp_path / "spans.jsonl"
    write_spans(spans, 50_000)
    records = load_spans_file(spans).records
    totals = build_report(records)
    listed = len(totals.sessions)
    totals.earlier_sessions = 3  # what folding leaves: counted, not listed
    totals.total_cost_usd += 0.5
    page = tmp_path / "folded.html"
    write_html(page, records, report=totals)
    text = page.read_text(encoding="utf-8")
    assert f'<div class="label">Sessions</div><div class="num">{listed + 3}</div>' in text
    assert "3 earlier sessions are counted in the totals only" in text
    assert "<td>(earlier sessions, and calls outside any session)</td>" in text


def _one_call_tree() -> list[SpanRecord]:
    """A parent session, a child session under it, and one model call in the child."""
    from techrevati.runtime.telemetry import semconv as sc

    def session(span: str, parent: str | None, role: str) -> SpanRecord:
        attrs = {sc.GEN_AI_OPERATION_NAME: "invoke_agent", sc.GEN_AI_AGENT_NAME: role}
        return SpanRecord("c" * 32, span, parent, f"invoke_agent {role}", 0, 10, False, attrs)

    chat = SpanRecord(
        "c" * 32,
        "3" * 16,
        "2" * 16,
        "chat gpt-4o-mini",
        1,
        9,
        False,
        {
            sc.GEN_AI_OPERATION_NAME: "chat",
            sc.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
            sc.GEN_AI_USAGE_INPUT_TOKENS: 10,
            sc.GEN_AI_USAGE_OUTPUT_TOKENS: 5,
        },
    )
    return [session("1" * 16, None, "parent"), session("2" * 16, "1" * 16, "child"), chat]


def test_counts_of_one_are_singular_on_the_page() -> None:
    # A probe: a parent with one child session read "1 sessions below".
    records = _one_call_tree()
    report = build_report(records)
    report.earlier_sessions = 1
    report.evicted = 1
    text = render_html(report, build_detail(records, report))
    assert "1 session below" in text and "1 sessions below" not in text
    assert "<title>techrevati-runtime report: 3 sessions, 1 model call, $" in text
    assert ">3 spans read<" in text
    assert "(1 earlier session is counted in the totals only)" in text
    assert (
        "The oldest span was left out of the in-memory report to bound memory; the spans "
        "file has it" in text
    )
    report.earlier_sessions = report.evicted = 0
    single = build_report(records[2:])  # the model call alone: no session
    page = render_html(single, build_detail(records[2:], single))
    assert "<title>techrevati-runtime report: 0 sessions, 1 model call, $" in page
    assert ">1 span read<" in page


def test_the_sample_note_counts_one_session_in_the_singular() -> None:
    records = _one_call_tree()[:1]
    report = build_report(records)
    assert build_detail(records, report).sample_note == "the 1 session is shown"
    records = _one_call_tree()
    report = build_report(records)
    note = build_detail(records, report, bounds=Bounds(sessions=1, expensive=1)).sample_note
    assert note.startswith("1 of 2 sessions is shown in full: the most expensive, then ")
