"""Which OTLP port goes with which protocol, checked in prose, comments and commands.

OTLP/gRPC is 4317 and OTLP/HTTP is 4318, and configure() speaks HTTP/protobuf
unless told ``grpc``. A user following a line that pairs them the other way
(``OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317`` with the default protocol)
gets a run that exits 0 and loses every span and metric, so each line of the
README, the docs and the collector-config files that names one of these ports
is read with these rules:

* a line naming 4317 says gRPC (``grpc``, ``gRPC``, ``OTLP_GRPC``...);
* a line that sets the client protocol to gRPC (``OTEL_EXPORTER_OTLP_PROTOCOL=grpc``,
  ``protocol="grpc"``) does not send to 4318, and one that sends to 4317 with
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``configure(endpoint=...)`` sets it;
* a port followed by a parenthesis names the matching protocol in it
  (``4317 (OTLP/gRPC)``, ``4318 (OTLP/HTTP)``).
"""

from __future__ import annotations

import re

GRPC_PORT = 4317
HTTP_PORT = 4318

_PORT = re.compile(r"(?<![\d.])(4317|4318)(?!\d)")
_GRPC_WORD = re.compile(r"grpc", re.IGNORECASE)
_SETS_GRPC = re.compile(
    r"""OTEL_EXPORTER_OTLP(?:_TRACES|_METRICS)?_PROTOCOL=["']?grpc|protocol=["']grpc["']"""
)
_CLIENT_ENDPOINT = re.compile(
    r"""(?:OTEL_EXPORTER_OTLP(?:_TRACES|_METRICS)?_ENDPOINT=|endpoint=["'])\S*?:(4317|4318)\b"""
)
_PAREN = re.compile(r"(4317|4318)\s*\(([^)]*)\)")
_HTTP_WORD = re.compile(r"(?<![A-Za-z])(?:OTLP/)?HTTP(?!s?://)(?:/protobuf)?", re.IGNORECASE)


def line_problems(line: str) -> list[str]:
    """What is wrong with the port/protocol pairings on one line."""
    ports = {int(p) for p in _PORT.findall(line)}
    if not ports:
        return []
    problems: list[str] = []
    sets_grpc = bool(_SETS_GRPC.search(line))
    if GRPC_PORT in ports and not _GRPC_WORD.search(line):
        problems.append("names 4317 (OTLP/gRPC) without saying gRPC")
    for m in _CLIENT_ENDPOINT.finditer(line):
        port = int(m.group(1))
        if port == GRPC_PORT and not sets_grpc:
            problems.append(
                "sends to 4317 (gRPC) without setting the protocol to grpc; "
                "configure() speaks HTTP/protobuf by default"
            )
        if port == HTTP_PORT and sets_grpc:
            problems.append("sets the protocol to grpc but sends to 4318 (OTLP/HTTP)")
    for m in _PAREN.finditer(line):
        port, inside = int(m.group(1)), m.group(2)
        if port == GRPC_PORT and not _GRPC_WORD.search(inside):
            problems.append(f"4317 ({inside}) is OTLP/gRPC")
        if port == HTTP_PORT and (_GRPC_WORD.search(inside) or not _HTTP_WORD.search(inside)):
            problems.append(f"4318 ({inside}) is OTLP/HTTP")
    return problems


def text_problems(text: str) -> list[tuple[int, str, str]]:
    """(line number, line, problem) for every bad pairing in ``text``."""
    return [
        (number, line.strip(), problem)
        for number, line in enumerate(text.splitlines(), start=1)
        for problem in line_problems(line)
    ]
