"""No secret in logs or reprs, and no control character from a span reaches a terminal."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from techrevati.runtime import FleetLimits, configure
from techrevati.runtime.telemetry.report.model import build_report
from techrevati.runtime.telemetry.report.read import records_from_otlp_json
from techrevati.runtime.telemetry.report.text import render_report
from techrevati.runtime.telemetry.setup.settings import redact_url

SECRET = "s3cret-pw"
#: Clear the screen, then write the clipboard (OSC 52), then a C1 CSI.
HOSTILE = "gpt-4o\x1b[2J\x1b]52;c;aGVsbG8=\x07\x9b31m"


@pytest.mark.parametrize(
    "where", ["argument", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
)
def test_an_endpoint_password_is_never_logged_or_shown(
    where: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"https://user:{SECRET}@127.0.0.1:9/?token={SECRET}"
    kwargs: dict[str, object] = {}
    if where == "argument":
        kwargs["endpoint"] = url
    else:
        monkeypatch.setenv(where, url)
    with caplog.at_level(logging.DEBUG):
        handle = configure(
            set_global=False, service_name="t", report=False, metrics=False, **kwargs
        )
        try:
            shown = repr(handle)
        finally:
            handle.shutdown(0.5)
    assert "user:***@127.0.0.1:9" in shown
    assert SECRET not in shown
    assert SECRET not in caplog.text
    assert "telemetry configured" in caplog.text


def test_redact_url_keeps_what_helps_and_drops_what_hurts() -> None:
    assert redact_url("redis://:pw@10.0.0.5:6379/2") == "redis://:***@10.0.0.5:6379/2"
    assert redact_url("redis://10.0.0.5:6379/2") == "redis://10.0.0.5:6379/2"
    assert redact_url("https://tok@h/x") == "https://***@h/x"


def _otlp(model: str, role: str) -> str:
    def attr(key: str, value: object) -> dict[str, object]:
        kind = "intValue" if isinstance(value, int) else "stringValue"
        return {"key": key, "value": {kind: value}}

    spans = [
        {
            "traceId": "0" * 31 + "1",
            "spanId": "0" * 15 + "1",
            "name": f"invoke_agent {role}",
            "startTimeUnixNano": "1",
            "endTimeUnixNano": "2",
            "attributes": [
                attr("gen_ai.operation.name", "invoke_agent"),
                attr("gen_ai.agent.name", role),
            ],
        },
        {
            "traceId": "0" * 31 + "1",
            "spanId": "0" * 15 + "2",
            "parentSpanId": "0" * 15 + "1",
            "name": f"chat {model}",
            "startTimeUnixNano": "1",
            "endTimeUnixNano": "2",
            "attributes": [
                attr("gen_ai.operation.name", "chat"),
                attr("gen_ai.request.model", model),
                attr("gen_ai.usage.input_tokens", 10),
            ],
        },
    ]
    return json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {"attributes": [attr("service.name", "svc\x1b[31m")]},
                    "scopeSpans": [{"scope": {"name": "some.library"}, "spans": spans}],
                }
            ]
        }
    )


def test_the_report_strips_control_characters_from_every_name() -> None:
    records = list(records_from_otlp_json(json.loads(_otlp(HOSTILE, "role\x1b[8m\ud800"))))
    text = render_report(build_report(records))
    assert "gpt-4o?[2J?]52;c;aGVsbG8=??31m" in text
    assert not any(ch < " " and ch != "\n" for ch in text)
    assert not any("\x7f" <= ch < "\xa0" for ch in text)
    text.encode("utf-8")  # no lone surrogate left


def test_the_report_command_prints_no_control_character(tmp_path: Path) -> None:
    spans = tmp_path / "spans.jsonl"
    spans.write_text(_otlp(HOSTILE, "role\x1b[8m") + "\n" + "\x1b[2J not json\n")
    done = subprocess.run(
        [sys.executable, "-m", "techrevati.runtime", "report", str(spans)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    for stream in (done.stdout, done.stderr):
        assert b"\x1b" not in stream and b"\x07" not in stream
    assert b"gpt-4o?[2J" in done.stdout


def test_a_scope_name_with_a_lone_surrogate_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="lone surrogates"):
        FleetLimits("redis://127.0.0.1:1/0", scope="tenant-\udc80")
