"""configure() refuses a bad argument at the call, naming it and the value, and sets nothing up.

Every call here uses ``set_global=False`` and writes no file, so nothing global is
left behind; a refused call must raise before any of it is built.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from techrevati.runtime.telemetry.setup.configure import configure
from techrevati.runtime.telemetry.setup.settings import Settings

QUIET: dict[str, Any] = {
    "set_global": False,
    "spans_file": False,
    "report": False,
    "metrics": False,
    "handle_sigterm": False,
}


def _configure(**kwargs: Any) -> None:
    configure(**{**QUIET, **kwargs}).shutdown()


@pytest.mark.parametrize("name", ["timeout", "metric_export_interval_s", "shutdown_timeout"])
@pytest.mark.parametrize("bad", [0, -1, -0.5, math.nan, math.inf, -math.inf, 1e300])
def test_a_duration_that_would_lose_telemetry_is_refused(name: str, bad: float) -> None:
    # timeout=-1/0/nan sent no request to a healthy collector (every span dropped);
    # shutdown_timeout=inf overflowed in atexit and in the SIGTERM handler.
    said = rf"configure\(\) {name} must be .*, got {re.escape(repr(bad))}"
    with pytest.raises(ValueError, match=said):
        _configure(**{name: bad})


@pytest.mark.parametrize("name", ["timeout", "metric_export_interval_s", "shutdown_timeout"])
@pytest.mark.parametrize("bad", ["3", True, [3]])
def test_a_duration_that_is_not_a_number_is_a_type_error(name: str, bad: object) -> None:
    with pytest.raises(TypeError, match=rf"configure\(\) {name} must be a number, got "):
        _configure(**{name: bad})


def test_shutdown_timeout_cannot_be_none() -> None:
    with pytest.raises(TypeError, match=r"configure\(\) shutdown_timeout must be a number"):
        Settings(shutdown_timeout=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("good", [0.001, 1, 2.5, 3600])
def test_a_positive_finite_duration_is_kept(good: float) -> None:
    settings = Settings(timeout=good, metric_export_interval_s=good, shutdown_timeout=good)
    assert (settings.timeout, settings.shutdown_timeout) == (good, good)
    assert Settings().timeout is None and Settings().metric_export_interval_s is None


@pytest.mark.parametrize("name", ["report", "capture_content", "handle_sigterm"])
@pytest.mark.parametrize("bad", ["no", "false", 0, 1, "yes"])
def test_an_optional_flag_takes_only_a_bool_or_none(name: str, bad: object) -> None:
    # report="no" printed the report and handle_sigterm="no" took SIGTERM.
    said = rf"configure\(\) {name} must be True, False or None, got {re.escape(repr(bad))}"
    with pytest.raises(TypeError, match=said):
        _configure(**{name: bad})


@pytest.mark.parametrize("name", ["metrics", "set_global"])
@pytest.mark.parametrize("bad", ["no", None, 0])
def test_a_flag_takes_only_a_bool(name: str, bad: object) -> None:
    said = rf"configure\(\) {name} must be True or False, got {re.escape(repr(bad))}"
    with pytest.raises(TypeError, match=said):
        _configure(**{name: bad})


@pytest.mark.parametrize("name", ["accept_remote_sessions", "guard"])
@pytest.mark.parametrize("bad", ["no", "false", None, 0])
def test_a_trust_or_guard_flag_takes_only_a_bool(name: str, bad: object) -> None:
    from techrevati.runtime.telemetry.limits import guard
    from techrevati.runtime.telemetry.limits.remote import session_store

    store, disabled = session_store(), guard._disabled
    said = rf"configure\(\) {name} must be True or False, got {re.escape(repr(bad))}"
    with pytest.raises(TypeError, match=said):
        # accept_remote_sessions="no" left the store accepting remote sessions.
        _configure(**{name: bad}, session_store="redis://127.0.0.1:1/0")
    assert session_store() is store and guard._disabled is disabled  # nothing installed


@pytest.mark.parametrize("bad", ["yes", 1])
def test_proposed_conventions_is_checked_before_anything_is_set_up(bad: object) -> None:
    with pytest.raises(TypeError, match=r"configure\(\) proposed_conventions must be True, "):
        _configure(proposed_conventions=bad)


@pytest.mark.parametrize("bad", ["no", "false", None, 1])
def test_the_redis_store_takes_accept_remote_only_as_a_bool(bad: object) -> None:
    from techrevati.runtime.fleet.sessions import RedisSessionStore

    said = rf"session store accept_remote must be True or False, got {re.escape(repr(bad))}"
    with pytest.raises(TypeError, match=said):
        RedisSessionStore("redis://127.0.0.1:1/0", accept_remote=bad)  # type: ignore[arg-type]
    assert RedisSessionStore("redis://127.0.0.1:1/0", accept_remote=False).accept_remote is False


@pytest.mark.parametrize("bad", [0, -5])
def test_a_queue_that_holds_no_span_is_refused(bad: int) -> None:
    # It was accepted, then every span but one dropped and the message blamed the collector.
    with pytest.raises(ValueError, match=rf"configure\(\) max_queue_size must be >= 1, got {bad}"):
        _configure(max_queue_size=bad)


@pytest.mark.parametrize("bad", [2.5, "100", True, None])
def test_a_queue_size_that_is_not_an_int_is_a_type_error(bad: object) -> None:
    # 2.5 failed deep in the SDK with "an integer is required".
    said = rf"configure\(\) max_queue_size must be an int, got {re.escape(repr(bad))}"
    with pytest.raises(TypeError, match=said):
        _configure(max_queue_size=bad)


@pytest.mark.parametrize(
    ("name", "bad", "said"),
    [
        # endpoint=5 failed with "'int' object has no attribute 'rstrip'".
        ("endpoint", 5, r"configure\(\) endpoint must be a str or None, got 5"),
        ("protocol", 4317, r"configure\(\) protocol must be a str or None, got 4317"),
        ("service_name", ["a"], r"configure\(\) service_name must be a str or None, got \['a'\]"),
        # headers=5 was accepted; a mapping with a non-str value failed in the exporter.
        ("headers", 5, r"configure\(\) headers must be a mapping of str to str or a 'k1=v1"),
        ("headers", {"x-team": 5}, r"configure\(\) headers must be .*got \{'x-team': 5\}"),
        # resource_attributes="team=a" failed with "dictionary update sequence element #0".
        ("resource_attributes", "team=a", r"configure\(\) resource_attributes must be a mapping"),
        (
            "resource_attributes",
            {1: "a"},
            r"configure\(\) resource_attributes must be .*\{1: 'a'\}",
        ),
        ("spans_file", 5, r"configure\(\) spans_file must be a file path or None, got 5"),
        ("report_html", True, r"configure\(\) report_html must be a file path or None, got True"),
    ],
)
def test_an_argument_of_the_wrong_type_is_named(name: str, bad: object, said: str) -> None:
    with pytest.raises(TypeError, match=said):
        _configure(**{name: bad})


def test_the_documented_forms_are_kept(tmp_path: Any) -> None:
    settings = Settings(
        endpoint="http://127.0.0.1:4318",
        headers="a=1,b=2",
        resource_attributes={"team": "a", "shard": 3},
        spans_file=tmp_path / "s.jsonl",
        report_html=str(tmp_path / "r.html"),
    )
    assert settings.headers == "a=1,b=2" and Settings(headers={"a": "1"}).headers == {"a": "1"}
    assert Settings(spans_file=True).spans_file is True
