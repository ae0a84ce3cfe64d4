"""The HTML report on a big spans file: page size, build time, memory, browser render time.

    python -m bench.html_report            # a 100 MB synthetic spans file
    python -m bench.html_report --mb 20

Writes a synthetic file shaped like ours (``tests/report_html_big.py``), then
times ``techrevati-runtime report FILE --html OUT`` in a fresh process (its
peak RSS too) and Debian's headless Chromium rendering the page (a DOM dump).
The page's size is what the sample bounds; the file's size does not set it.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from browser import render  # noqa: E402
from report_html_big import write_spans  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=100.0, help="spans file size (MB)")
    parser.add_argument("--keep", metavar="DIR", help="write the files here and keep them")
    args = parser.parse_args()
    folder = Path(args.keep or tempfile.mkdtemp(prefix="trr-html-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    spans, page = folder / "spans.jsonl", folder / "report.html"

    started = time.perf_counter()
    written = write_spans(spans, int(args.mb * 1_000_000))
    print(
        f"spans file: {written.bytes / 1e6:.1f} MB, {written.sessions} sessions "
        f"({written.limit_hit_sessions} with a limit hit), "
        f"written in {time.perf_counter() - started:.1f} s"
    )

    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "techrevati.runtime", "report", str(spans), "--html", str(page)],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if done.returncode != 0:
        raise SystemExit(f"report failed ({done.returncode}): {done.stderr[-2000:]}")
    print(
        f"report --html: {seconds:.1f} s, peak RSS {max(peak, before) / 1024:.0f} MiB, "
        f"page {page.stat().st_size / 1024:.0f} KiB"
    )

    rendered = render(page)
    drawn = rendered.dom.count('class="bar bar-')
    print(
        f"chromium --dump-dom: {rendered.seconds:.2f} s (browser start included), "
        f"{drawn} timeline bars drawn, console lines: {len(rendered.console)}"
    )
    if not args.keep:
        spans.unlink()
        page.unlink()
        folder.rmdir()


if __name__ == "__main__":
    main()
