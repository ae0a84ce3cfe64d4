"""The ``techrevati-runtime`` command (also ``python -m techrevati.runtime``).

Example::

    techrevati-runtime report telemetry-out/spans.jsonl

replays a spans file (OTLP JSON lines, written by ``configure()`` or by a
collector's ``file`` exporter) into the same per-session report a run prints
at exit.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .telemetry.report import SpanRecord, build_report, records_from_file, render_report
from .version import VERSION


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="techrevati-runtime",
        description="Tools for techrevati-runtime telemetry.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    report = commands.add_parser(
        "report",
        help="print the per-session report of a spans file",
        description=(
            "Replay OTLP JSON lines spans files (one ExportTraceServiceRequest per line) "
            "into the per-session terminal report."
        ),
    )
    report.add_argument("paths", nargs="+", metavar="PATH", help="spans file(s) to read")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    args = _parser().parse_args(argv)
    if args.command == "report":
        records: list[SpanRecord] = []
        for path in args.paths:
            try:
                records.extend(records_from_file(path))
            except OSError as error:
                print(f"techrevati-runtime: cannot read {path}: {error.strerror}", file=sys.stderr)
                return 2
        source = ", ".join(args.paths)
        sys.stdout.write(render_report(build_report(records), source=source))
        return 0
    return 2  # pragma: no cover - argparse rejects unknown commands first


if __name__ == "__main__":
    sys.exit(main())
