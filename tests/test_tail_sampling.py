"""collector-config/otelcol-tail-sampling.yaml: checked by the built collector and end to end.

The collector built from collector-config/builder-config.yaml (which includes the
tail_sampling processor) validates the file, and rejects a broken policy. Then it
runs the file as shipped, with only the addresses and ``decision_wait`` moved by the
environment variables the file reads (2 s instead of 60 s, so the test is short),
and exports traces to a real OTLP/gRPC receiver standing in for Tempo
(tests/export/otlp_receiver.py). 1,000 sessions of the real package go through
configure() into it: 125 interesting ones (25 with a limit hit, 25 with a failed
tool, 25 with a loop, 25 above the cost threshold, 25 parents whose three cheap
child sessions cost above it together) and 900 plain ones, then one
more with a limit hit that tells the test every decision has been made. Every
interesting trace must arrive, and the plain ones near the stated 10 %.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy import collector
from export.otlp_receiver import GrpcReceiver, HttpReceiver
from techrevati.runtime import ModelPricing, Orchestrator, UsageSnapshot, configure, usage_tracking
from techrevati.runtime.usage_tracking import register_pricing

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "collector-config" / "otelcol-tail-sampling.yaml"
SHIPPED = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
MODEL = "tail-model"
#: $1 per million input tokens: 600k tokens cost $0.60, above the $0.50 threshold.
EXPENSIVE = UsageSnapshot(input_tokens=600_000, output_tokens=0)
#: $0.20: three child sessions of this cost make a $0.60 tree of cheap sessions.
A_THIRD = UsageSnapshot(input_tokens=200_000, output_tokens=0)
CHEAP = UsageSnapshot(input_tokens=1_000, output_tokens=100)
KINDS = ("limit", "error", "loop", "expensive", "tree")
PER_KIND = 25
PLAIN = 900
PERCENT = 10
#: The role of the one trace sent after all the others (see ``_run_sessions``).
SENTINEL = "sentinel"


def _binary() -> Path:
    binary = collector.shipped_binary()
    if not binary.exists():
        pytest.fail(f"{binary}: {collector.BUILD_HINT}", pytrace=False)
    return binary


def test_the_shipped_build_has_the_tail_sampling_processor() -> None:
    assert "tail_sampling" in collector.components(_binary())["processors"]


def test_the_file_states_the_policies_it_is_documented_with() -> None:
    ts = SHIPPED["processors"]["tail_sampling"]
    names = [p["name"] for p in ts["policies"]]
    assert names == ["limit-hits", "loops", "errors", "expensive", "the-rest"]
    assert ts["policies"][-1]["probabilistic"]["sampling_percentage"] == (
        f"${{env:TAIL_SAMPLING_PERCENTAGE:-{PERCENT}}}"
    )
    traces = SHIPPED["service"]["pipelines"]["traces"]["processors"]
    assert traces == ["memory_limiter", "resourcedetection", "tail_sampling", "batch"]
    # Metrics are never sampled: the alerts and dashboards see every session.
    assert "tail_sampling" not in SHIPPED["service"]["pipelines"]["metrics"]["processors"]


def test_the_built_collector_validates_the_file() -> None:
    result = collector.validate(_binary(), [CONFIG], {"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout + result.stderr


def test_validate_rejects_a_misspelt_setting(tmp_path: Path) -> None:
    broken = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    ts = broken["processors"]["tail_sampling"]
    ts["decision_wiat"] = ts.pop("decision_wait")
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    result = collector.validate(_binary(), [path], {"PATH": "/usr/bin:/bin"})
    assert result.returncode != 0
    assert "decision_wiat" in result.stdout + result.stderr


def test_a_condition_that_does_not_parse_stops_the_collector_at_start(tmp_path: Path) -> None:
    """``validate`` does not parse OTTL (it passes this file); starting does, and refuses."""
    broken = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    policy = broken["processors"]["tail_sampling"]["policies"][0]
    policy["ottl_condition"]["spanevent"] = ['name === "techrevati.limit.hit"']
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    assert collector.validate(_binary(), [path], {"PATH": "/usr/bin:/bin"}).returncode == 0
    otelcol = collector.Collector(
        _binary(), [path], tmp_path, {"TEMPO_OTLP_ENDPOINT": "127.0.0.1:9"}
    )
    with pytest.raises(RuntimeError):
        otelcol.start(timeout=30, attempts=1)
    otelcol.stop()
    assert "===" in otelcol.logs() or "limit-hits" in otelcol.logs()


def _run_sessions(endpoint: str) -> None:
    handle = configure(
        service_name="techrevati-tail-sampling-test",
        endpoint=endpoint,
        set_global=False,
        spans_file=False,
        report=False,
        metric_export_interval_s=60.0,
    )
    common = {"tracer_provider": handle.tracer_provider, "meter_provider": handle.meter_provider}
    plan = [kind for kind in KINDS for _ in range(PER_KIND)] + ["plain"] * PLAIN
    for done, kind in enumerate(plan):
        if done % 100 == 0:
            # The test is about the collector's decisions, not an exporter falling
            # behind: on a busy machine 1,000 sessions outrun the export, and a full
            # queue drops spans (by design, counted). Flushed every 100 sessions,
            # none is dropped; the check below says so if one ever is.
            assert handle.force_flush()
        if kind == "limit":
            # An unenforced budget: the over-budget turn is recorded as a limit hit
            # (a span event), nothing fails.
            orch = Orchestrator(role=kind, budget_usd=0.000_001, **common)
        else:
            orch = Orchestrator(role=kind, **common)
        with orch.session() as s:
            usage = EXPENSIVE if kind == "expensive" else CHEAP
            s.run_turn(lambda: "ok", model=MODEL, usage=usage)
            if kind == "tree":
                # No session spends $0.50 itself; the parent's tree does ($0.60).
                for _ in range(3):
                    with Orchestrator(role=kind, **common).session() as child:
                        child.run_turn(lambda: "ok", model=MODEL, usage=A_THIRD)
            if kind == "error":
                with contextlib.suppress(RuntimeError):
                    s.run_tool("flaky", _fail)
            elif kind == "loop":
                for _ in range(4):  # each model turn, the same call, the same result: a loop
                    s.run_tool("search", lambda: "same hits", arguments={"q": "x"})
                    s.run_turn(lambda: "ok", model=MODEL, usage=CHEAP)
            else:
                s.run_tool("lookup", lambda: "fact", arguments={"q": kind})
    # Last, a trace every policy run keeps (a limit hit): the collector decides
    # traces in the order they arrived, so once it is through, every trace before
    # it has been decided.
    orch = Orchestrator(role=SENTINEL, budget_usd=0.000_001, **common)
    with orch.session() as s:
        s.run_turn(lambda: "ok", model=MODEL, usage=CHEAP)
    assert handle.force_flush()
    lost = {name: (st.dropped, st.abandoned, st.failed) for name, st in handle.stats().items()}
    assert handle.shutdown() is not False
    assert all(counts == (0, 0, 0) for counts in lost.values()), lost


def _fail() -> None:
    raise RuntimeError("tool failed")


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Counter[str]]:
    """How many traces of each kind the collector let through."""
    saved = dict(usage_tracking.PRICING_TABLE)
    register_pricing(MODEL, ModelPricing(input_per_million=1.0, output_per_million=1.0))
    tempo, metrics_sink = GrpcReceiver(), HttpReceiver()
    with tempo, metrics_sink:
        otelcol = collector.Collector(
            _binary(),
            [CONFIG],
            tmp_path_factory.mktemp("otelcol-tail"),
            {
                "TEMPO_OTLP_ENDPOINT": f"127.0.0.1:{tempo.port}",
                "PROMETHEUS_OTLP_ENDPOINT": metrics_sink.endpoint,
                "TAIL_SAMPLING_DECISION_WAIT": "2s",
            },
        )
        try:
            otelcol.start()
            _run_sessions(otelcol.http_endpoint)

            def roles() -> dict[bytes, str]:
                found: dict[bytes, str] = {}
                for request in list(tempo.received.traces):
                    for rs in request.resource_spans:
                        for ss in rs.scope_spans:
                            for span in ss.spans:
                                if span.name.startswith("invoke_agent "):
                                    found[span.trace_id] = span.name.split(" ", 1)[1]
                return found

            # Decisions come decision_wait (2 s) after each trace's first span, in the
            # order the traces arrived: wait for the sentinel (sent last), then until the
            # count has stopped moving (kept traces still in the collector's batch).
            deadline = time.monotonic() + 60
            last = -1
            while time.monotonic() < deadline:
                now = roles()
                if SENTINEL in now.values() and len(now) == last:
                    break
                last = len(now)
                time.sleep(3)
            yield Counter(roles().values())
        finally:
            otelcol.stop()
            usage_tracking.PRICING_TABLE.clear()
            usage_tracking.PRICING_TABLE.update(saved)


@pytest.mark.parametrize("kind", KINDS)
def test_every_interesting_trace_is_kept(kept: Counter[str], kind: str) -> None:
    assert kept[kind] == PER_KIND, dict(kept)


def test_the_trace_sent_last_was_decided(kept: Counter[str]) -> None:
    """Else the collector had not decided every trace when the counts were taken."""
    assert kept[SENTINEL] == 1, dict(kept)


def test_the_rest_is_kept_near_the_stated_percentage(kept: Counter[str]) -> None:
    """900 plain traces at 10 %: 90 expected, standard deviation 9; the bounds are ~4 sigma."""
    share = kept["plain"] / PLAIN
    print(f"kept per kind: {dict(kept)}")
    assert 0.06 <= share <= 0.14, f"kept {kept['plain']} of {PLAIN} plain traces ({share:.1%})"
