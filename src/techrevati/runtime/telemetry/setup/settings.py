"""What ``configure()`` was asked for, and what that means once the environment is read.

Two steps, kept apart so each stays small and testable:

* :class:`Settings` holds the arguments exactly as the caller gave them (one
  field per ``configure()`` keyword). Two calls can be compared field by field.
* :func:`plan_export` reads the ``OTEL_*`` variables and turns a ``Settings``
  into an :class:`ExportPlan`: embedded or collector, which protocol, which
  endpoint, which files, whether a report is printed. Nothing is built here.

Example::

    settings = Settings(service_name="research-agent")
    plan = plan_export(settings, user_provider=False)
    plan.embedded, plan.spans_path   # (True, PosixPath('telemetry-out/spans.jsonl'))
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from opentelemetry.environment_variables import OTEL_METRICS_EXPORTER, OTEL_TRACES_EXPORTER
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_EXPORTER_OTLP_METRICS_TIMEOUT,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TIMEOUT,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
    OTEL_SDK_DISABLED,
)
from opentelemetry.sdk.metrics import MeterProvider as SDKMeterProvider
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
from opentelemetry.util.re import parse_env_headers
from opentelemetry.util.types import AttributeValue

from ...fleet import checks
from ..export.pipeline import DEFAULT_MAX_QUEUE_SIZE, DEFAULT_SHUTDOWN_TIMEOUT_S

_logger = logging.getLogger(__name__)

#: Per-request OTLP timeout when neither the caller nor ``OTEL_EXPORTER_OTLP_*TIMEOUT``
#: sets one. The SDK's 10 s, with retries, is what makes exit hang on a dead collector.
DEFAULT_EXPORT_TIMEOUT_S = 3.0
#: Where the embedded mode writes, unless ``spans_file`` or this variable says otherwise.
SPANS_FILE_ENV = "TECHREVATI_SPANS_FILE"
DEFAULT_SPANS_FILE = Path("telemetry-out") / "spans.jsonl"

HTTP_PROTOBUF = "http/protobuf"
GRPC = "grpc"


@dataclass(frozen=True)
class Settings:
    """The arguments of one ``configure()`` call, as given (``None`` = not given).

    The meaning of each field is documented on :func:`~.setup.configure`.
    """

    service_name: str | None = None
    endpoint: str | None = None
    protocol: str | None = None
    headers: Mapping[str, str] | str | None = None
    timeout: float | None = None
    capture_content: bool | None = None
    spans_file: str | os.PathLike[str] | bool | None = None
    report: bool | None = None
    metrics: bool = True
    resource_attributes: Mapping[str, AttributeValue] | None = None
    tracer_provider: SDKTracerProvider | None = None
    meter_provider: SDKMeterProvider | None = None
    set_global: bool = True
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE
    metric_export_interval_s: float | None = None
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT_S
    handle_sigterm: bool | None = None
    report_html: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        """Refuse a value that would fail later, far from the call, or lose telemetry.

        A timeout of 0, -1 or NaN sends no request at all (every span is dropped), an
        infinite one overflows at exit; a string ``"no"`` reads as True. Each raises
        here, before ``configure()`` changes anything, naming the argument.
        """
        for name in ("service_name", "endpoint", "protocol"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"configure() {name} must be a str or None, got {value!r}")
        protocol = self.protocol
        if protocol is not None and protocol.strip().lower() not in (HTTP_PROTOBUF, GRPC):
            raise ValueError(
                f"configure() protocol must be {HTTP_PROTOBUF!r} or {GRPC!r} (or None: "
                f"{OTEL_EXPORTER_OTLP_PROTOCOL}, else {HTTP_PROTOBUF!r}), got {protocol!r}"
            )
        _check_headers(self.headers)
        for name, kinds in (
            ("spans_file", (str, os.PathLike, bool)),
            ("report_html", (str, os.PathLike)),
        ):
            value = getattr(self, name)
            if value is not None and not isinstance(value, kinds):
                raise TypeError(f"configure() {name} must be a file path or None, got {value!r}")
        attributes = self.resource_attributes
        if attributes is not None and (
            not isinstance(attributes, Mapping) or not all(isinstance(k, str) for k in attributes)
        ):
            raise TypeError(
                "configure() resource_attributes must be a mapping of attribute names (str) "
                f"to values, got {attributes!r}"
            )
        for name in ("timeout", "metric_export_interval_s", "shutdown_timeout"):
            checks.number(
                name,
                getattr(self, name),
                positive=True,
                optional=name != "shutdown_timeout",
                most=checks.MAX_SECONDS,
                owner="configure()",
            )
        for name in ("capture_content", "report", "metrics", "set_global", "handle_sigterm"):
            value = getattr(self, name)
            optional = name not in ("metrics", "set_global")
            if not isinstance(value, bool) and not (optional and value is None):
                need = "True, False or None" if optional else "True or False"
                raise TypeError(f"configure() {name} must be {need}, got {value!r}")
        queue = self.max_queue_size
        if isinstance(queue, bool) or not isinstance(queue, int):
            raise TypeError(f"configure() max_queue_size must be an int, got {queue!r}")
        if queue < 1:
            raise ValueError(f"configure() max_queue_size must be >= 1, got {queue!r}")

    def overridden_by(self, later: Settings) -> list[str]:
        """Fields ``later`` sets (to a non-default value) differently from this one.

        These are what a repeated ``configure()`` call asked for and did not get.
        Providers are compared by identity. Field order is kept.

        Example::

            >>> Settings(service_name="a").overridden_by(Settings(service_name="b"))
            ['service_name']
            >>> Settings(service_name="a").overridden_by(Settings())
            []
        """
        changed: list[str] = []
        for spec in dataclasses.fields(self):
            mine, theirs = getattr(self, spec.name), getattr(later, spec.name)
            if theirs is spec.default or (spec.default is not None and theirs == spec.default):
                continue  # not asked for
            same = mine is theirs if spec.name.endswith("_provider") else mine == theirs
            if not same:
                changed.append(spec.name)
        return changed


@dataclass(frozen=True)
class OtlpTarget:
    """One OTLP exporter to build: protocol, timeout and the endpoint it will use."""

    #: The base URL given to the exporter (None: the exporter reads the variables).
    endpoint: str | None
    protocol: str
    #: Seconds per request; None when an ``OTEL_EXPORTER_OTLP_*TIMEOUT`` variable decides.
    timeout: float | None
    headers: dict[str, str] | None
    #: The full URL requests go to, for the handle and logs.
    shown_as: str


@dataclass(frozen=True)
class ExportPlan:
    """Where each signal goes, decided from :class:`Settings` and the environment."""

    embedded: bool
    traces: OtlpTarget | None
    metrics: OtlpTarget | None
    spans_path: Path | None
    metrics_path: Path | None
    keep_report: bool


# --- reading the environment ------------------------------------------------------------
def sdk_disabled() -> bool:
    """True when ``OTEL_SDK_DISABLED=true``: configure() then builds nothing."""
    return os.environ.get(OTEL_SDK_DISABLED, "").strip().lower() == "true"


def build_resource(settings: Settings) -> Resource:
    """The resource: ``OTEL_RESOURCE_ATTRIBUTES`` / ``OTEL_SERVICE_NAME``, explicit wins."""
    attributes: dict[str, AttributeValue] = dict(settings.resource_attributes or {})
    if settings.service_name:
        attributes[SERVICE_NAME] = settings.service_name
    return Resource.create(attributes)


def endpoint_configured(endpoint: str | None) -> bool:
    """True when an OTLP endpoint is set by argument or by any endpoint variable."""
    return bool(
        endpoint
        or os.environ.get(OTEL_EXPORTER_OTLP_ENDPOINT)
        or os.environ.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
        or os.environ.get(OTEL_EXPORTER_OTLP_METRICS_ENDPOINT)
    )


def _exporter_wanted(variable: str) -> bool:
    if _exporter_off(variable):
        return False
    value = os.environ.get(variable, "otlp").strip().lower()
    if value in ("", "otlp"):
        return True
    _logger.warning("%s=%r is not supported here; using otlp", variable, value)
    return True


def _exporter_off(variable: str) -> bool:
    """``OTEL_{TRACES,METRICS}_EXPORTER=none``: that signal goes nowhere (no OTLP, no file)."""
    return os.environ.get(variable, "").strip().lower() == "none"


def _protocol(explicit: str | None, signal_var: str) -> str:
    if explicit is not None:
        return explicit.strip().lower()  # checked when the settings were made
    # An environment variable may be shared by other programs: an unsupported value
    # is warned about and replaced, as for the other OTEL_* variables.
    for variable in (signal_var, OTEL_EXPORTER_OTLP_PROTOCOL):
        raw = os.environ.get(variable)
        if raw:
            value = raw.strip().lower()
            if value in (GRPC, HTTP_PROTOBUF):
                return value
            _logger.warning(
                "%s=%r is not supported here (only grpc and http/protobuf); using %s",
                variable,
                raw,
                HTTP_PROTOBUF,
            )
            return HTTP_PROTOBUF
    return HTTP_PROTOBUF


def _timeout(explicit: float | None, signal_var: str) -> float | None:
    if explicit is not None:
        return explicit
    if os.environ.get(signal_var) or os.environ.get(OTEL_EXPORTER_OTLP_TIMEOUT):
        return None  # the exporter reads the variable itself
    return DEFAULT_EXPORT_TIMEOUT_S


def _check_headers(headers: object) -> None:
    if headers is None or isinstance(headers, str):
        return
    if not isinstance(headers, Mapping) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in headers.items()
    ):
        raise TypeError(
            "configure() headers must be a mapping of str to str or a 'k1=v1,k2=v2' string, "
            f"got {headers!r}"
        )


def _headers(headers: Mapping[str, str] | str | None) -> dict[str, str] | None:
    if headers is None:
        return None  # the exporter reads OTEL_EXPORTER_OTLP_*HEADERS itself
    parsed = parse_env_headers(headers, liberal=True) if isinstance(headers, str) else headers
    # gRPC metadata keys must be lower case; HTTP does not care.
    return {key.lower(): value for key, value in parsed.items()}


def base_endpoint(endpoint: str | None) -> str | None:
    """The base URL, forgiving a signal path pasted in (``.../v1/traces``)."""
    if not endpoint:
        return None
    base = endpoint.rstrip("/")
    for suffix in ("/v1/traces", "/v1/metrics"):
        base = base.removesuffix(suffix)
    return base


def redact_url(url: str) -> str:
    """``url`` with any password (and query string) replaced, fit to log or show.

    Example::

        >>> redact_url("https://user:s3cret@collector:4318/v1/traces?token=abc")
        'https://user:***@collector:4318/v1/traces?***'
        >>> redact_url("redis://:pw@127.0.0.1:6379/0")
        'redis://:***@127.0.0.1:6379/0'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:***@{host}" if colon else f"***@{host}"
    query = "***" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _signal_endpoint(endpoint: str | None, signal_var: str, path: str, protocol: str) -> str:
    """The endpoint one exporter will use, for the handle and logs (credentials redacted)."""
    return redact_url(_raw_signal_endpoint(endpoint, signal_var, path, protocol))


def _raw_signal_endpoint(endpoint: str | None, signal_var: str, path: str, protocol: str) -> str:
    if endpoint is not None:
        return endpoint if protocol == GRPC else f"{endpoint.rstrip('/')}/{path}"
    specific = os.environ.get(signal_var)
    if specific:
        return specific
    base = os.environ.get(OTEL_EXPORTER_OTLP_ENDPOINT)
    if protocol == GRPC:
        return base or "http://localhost:4317"
    return f"{(base or 'http://localhost:4318').rstrip('/')}/{path}"


def _spans_path(spans_file: str | os.PathLike[str] | bool | None, embedded: bool) -> Path | None:
    if spans_file is False or (spans_file is None and not embedded):
        return None
    if isinstance(spans_file, str) and not spans_file.strip():
        raise ValueError(
            f"spans_file must be a file path, False (no file) or None (the default), "
            f"got {spans_file!r}"
        )
    if spans_file is None or spans_file is True:
        return Path(os.environ.get(SPANS_FILE_ENV) or DEFAULT_SPANS_FILE)
    return Path(spans_file)


def metrics_path_for(spans_path: Path) -> Path | None:
    """Where metrics go beside a spans file: its own name, so two runs never share one.

    None when the spans "file" is a device or a pipe (``/dev/stdout``): it has no
    sensible sibling, and nothing is created next to it.

    Example::

        >>> str(metrics_path_for(Path("telemetry-out/spans.jsonl")))
        'telemetry-out/metrics.jsonl'
        >>> str(metrics_path_for(Path("out/tiny-agent.jsonl")))
        'out/tiny-agent.metrics.jsonl'
    """
    try:
        special = spans_path.exists() and not spans_path.is_symlink() and not spans_path.is_file()
    except OSError:
        # A directory we may not search (mode 0700 of another user): the spans file
        # there fails to open and says so; configure() itself must not fail here.
        special = False
    if special:
        return None
    if spans_path.stem == "spans":
        return spans_path.with_name(f"metrics{spans_path.suffix}")
    return spans_path.with_name(f"{spans_path.stem}.metrics{spans_path.suffix or '.jsonl'}")


def _otlp_target(
    settings: Settings,
    endpoint: str | None,
    *,
    protocol_var: str,
    timeout_var: str,
    endpoint_var: str,
    path: str,
) -> OtlpTarget:
    protocol = _protocol(settings.protocol, protocol_var)
    if endpoint is not None and protocol != GRPC and not endpoint.startswith(_HTTP_SCHEMES):
        # The HTTP exporter would take it and fail every batch with "No connection
        # adapters were found", logged again and again; said once, here, instead.
        raise ValueError(
            f"endpoint {redact_url(endpoint)!r} has no http:// or https:// scheme, which "
            f"OTLP over HTTP needs: write 'http://{redact_url(endpoint)}' (or use "
            "protocol='grpc')"
        )
    return OtlpTarget(
        endpoint=endpoint,
        protocol=protocol,
        timeout=_timeout(settings.timeout, timeout_var),
        headers=_headers(settings.headers),
        shown_as=_signal_endpoint(endpoint, endpoint_var, path, protocol),
    )


_HTTP_SCHEMES = ("http://", "https://")


def plan_export(settings: Settings, *, user_provider: bool) -> ExportPlan:
    """Decide where spans and metrics go.

    ``user_provider`` says the tracer provider belongs to the caller: its own
    exporters are then already in place, so ours are added only on request
    (an explicit ``endpoint=`` or ``spans_file=``), and nothing is sent twice.
    """
    embedded = not endpoint_configured(settings.endpoint)
    endpoint = base_endpoint(settings.endpoint)

    want_traces = not embedded and _exporter_wanted(OTEL_TRACES_EXPORTER)
    if user_provider:
        want_traces = endpoint is not None
    traces = (
        _otlp_target(
            settings,
            endpoint,
            protocol_var=OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
            timeout_var=OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
            endpoint_var=OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
            path="v1/traces",
        )
        if want_traces
        else None
    )

    # The embedded files stand in for the exporters: OTEL_{TRACES,METRICS}_EXPORTER=none
    # turns each default file off (a spans_file= or $TECHREVATI_SPANS_FILE still writes).
    files = embedded and not user_provider
    asked = bool(os.environ.get(SPANS_FILE_ENV))
    spans_path = _spans_path(
        settings.spans_file, files and (asked or not _exporter_off(OTEL_TRACES_EXPORTER))
    )
    keep_report = settings.report if settings.report is not None else embedded and not user_provider

    metrics: OtlpTarget | None = None
    metrics_path: Path | None = None
    if settings.meter_provider is None and settings.metrics:
        beside = _spans_path(settings.spans_file, files)
        if embedded and beside is not None:
            if not _exporter_off(OTEL_METRICS_EXPORTER):
                metrics_path = metrics_path_for(beside)
        elif not embedded and _exporter_wanted(OTEL_METRICS_EXPORTER):
            metrics = _otlp_target(
                settings,
                endpoint,
                protocol_var=OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
                timeout_var=OTEL_EXPORTER_OTLP_METRICS_TIMEOUT,
                endpoint_var=OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
                path="v1/metrics",
            )
    return ExportPlan(
        embedded=embedded,
        traces=traces,
        metrics=metrics,
        spans_path=spans_path,
        metrics_path=metrics_path,
        keep_report=keep_report,
    )


__all__ = [
    "DEFAULT_EXPORT_TIMEOUT_S",
    "DEFAULT_SPANS_FILE",
    "GRPC",
    "HTTP_PROTOBUF",
    "SPANS_FILE_ENV",
    "ExportPlan",
    "OtlpTarget",
    "Settings",
    "base_endpoint",
    "build_resource",
    "endpoint_configured",
    "metrics_path_for",
    "plan_export",
    "sdk_disabled",
]
