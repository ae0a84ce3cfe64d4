"""The ``techrevati-runtime`` command (also ``python -m techrevati.runtime``).

Example::

    techrevati-runtime report telemetry-out/spans.jsonl

replays a spans file (OTLP JSON lines, written by ``configure()`` or by a
collector's ``file`` exporter) into the same per-session report a run prints
at exit. Runs append to one file; the last run is shown unless ``--run`` picks
another (``--run all`` shows every run). ``--html OUT.html`` writes the same
report as one self-contained page instead (session tree, timelines, cost by
model and agent; opens from disk, no network).

Exit status: 0 when every record was read, 1 when the report was printed but
some records were skipped (each named on stderr), 2 when a file could not be
read at all or ``--run`` names a run the files do not hold (the runs they hold
are listed).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

from .telemetry.report.model import build_report
from .telemetry.report.read import DEFAULT_MAX_LINE_BYTES, Problems, SpanRecord, load_spans_file
from .telemetry.report.text import render_report, terminal_safe
from .version import VERSION

_PROG = "techrevati-runtime"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Tools for techrevati-runtime telemetry.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    report = commands.add_parser(
        "report",
        help="print the per-session report of a spans file",
        description=(
            "Replay OTLP JSON lines spans files (one ExportTraceServiceRequest per line) "
            "into the per-session terminal report. Exit status: 0 all read, 1 some records "
            "skipped (named on stderr), 2 a file could not be read or --run names a run "
            "that is not there."
        ),
    )
    report.add_argument("paths", nargs="+", metavar="PATH", help="spans file(s) to read")
    report.add_argument(
        "--run",
        default="last",
        metavar="ID",
        help="the run to show: a techrevati.run.id, 'last' (default) or 'all'",
    )
    report.add_argument(
        "--html",
        metavar="OUT",
        help="write a self-contained HTML page (opens from disk, no network) instead of "
        "printing the text report",
    )
    report.add_argument(
        "--max-line-mb",
        type=_megabytes,
        default=DEFAULT_MAX_LINE_BYTES / (1024 * 1024),
        metavar="MB",
        help="skip lines longer than this (default %(default)g MiB)",
    )
    return parser


def _megabytes(text: str) -> float:
    """A positive, finite number of MiB (argparse reports the error and exits with 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0 or value > _MAX_LINE_MB:
        raise argparse.ArgumentTypeError(
            f"must be a number of MiB above 0 and at most {_MAX_LINE_MB:g}, got {text!r}"
        )
    return value


#: A line longer than this is not a span record anyone wrote: 1 GiB.
_MAX_LINE_MB = 1024.0


def _report(args: argparse.Namespace) -> int:
    records: list[SpanRecord] = []
    problems = Problems()
    runs: list[str | None] = []
    shown = "all"
    max_line = max(1, int(args.max_line_mb * 1024 * 1024))
    for path in args.paths:
        try:
            loaded = load_spans_file(path, run=args.run, max_line_bytes=max_line, problems=problems)
        except OSError as error:
            reason = error.strerror or str(error)
            print(terminal_safe(f"{_PROG}: cannot read {path}: {reason}"), file=sys.stderr)
            return 2
        records.extend(loaded.records)
        runs.extend(run for run in loaded.runs if run not in runs)
        shown = loaded.shown_run or "all"
    for line in problems.lines():
        print(terminal_safe(f"{_PROG}: {line}"), file=sys.stderr)
    named = [run for run in runs if run is not None]
    if args.run not in ("last", "all") and args.run not in named:
        # An unknown run would print an empty report that reads like "nothing happened".
        where = ", ".join(args.paths)
        held = ", ".join(named) if named else "none (its spans carry no techrevati.run.id)"
        print(
            f"{_PROG}: run {args.run!r} is not in {where}; the runs there, oldest first: "
            f"{held} (or --run last, --run all)",
            file=sys.stderr,
        )
        return 2
    runs_line = None
    if len(named) > 1 and shown != "all":
        runs_line = f"run: {shown} (the file holds {len(named)} runs; --run all shows every one)"
    elif len(named) > 1:
        runs_line = f"runs: all {len(named)} in the file"
    if args.html:
        return _html(args.html, records, ", ".join(args.paths), runs_line, problems.count)
    text = render_report(build_report(records), source=", ".join(args.paths), runs=runs_line)
    sys.stdout.write(text)
    return 1 if problems.count else 0


def _html(out: str, records: list[SpanRecord], source: str, runs: str | None, bad: int) -> int:
    from .telemetry.report.html import write_html

    try:
        size = write_html(out, records, source=source, runs=runs)
    except OSError as error:
        print(
            terminal_safe(f"{_PROG}: cannot write {out}: {error.strerror or error}"),
            file=sys.stderr,
        )
        return 2
    print(terminal_safe(f"HTML report: {out} ({size / 1024:.0f} KiB; open it in a browser)"))
    return 1 if bad else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    args = _parser().parse_args(argv)
    if args.command == "report":
        try:
            return _report(args)
        except KeyboardInterrupt:
            return 130
    return 2  # pragma: no cover - argparse rejects unknown commands first


if __name__ == "__main__":
    sys.exit(main())
