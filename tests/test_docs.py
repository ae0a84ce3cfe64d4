"""The documentation site builds, and every Python block in it runs.

* ``mkdocs build --strict`` (mkdocs-material + mkdocstrings, ``mkdocs.yml``) into a
  temporary folder: a broken link, a nav entry without a page or a docstring
  mkdocstrings cannot render fails the test.
* Every fenced ``python`` block of ``docs/**/*.md`` and ``README.md`` is executed.
  A page's blocks run in order in one namespace, as a reader pastes them, in a
  fresh interpreter per page: ``configure()`` is once per process, and a page must
  not see another page's prices, sessions or providers. The working directory is
  a temporary folder (the embedded mode writes ``telemetry-out/`` there) and no
  ``OTEL_*`` variable reaches the block, so nothing is sent anywhere.
* A block that cannot run here (an API key, a network, a Redis of your own) is
  preceded, on the line directly above its fence, by ``<!-- not-run: <reason> -->``;
  the reason must not be empty.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted([REPO / "README.md", *(REPO / "docs").glob("**/*.md")])

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^\s`]*)")
NOT_RUN = re.compile(r"^\s*<!--\s*not-run:(?P<reason>.*?)-->\s*$")
PYTHON_INFOS = {"python", "py", "python3"}


@dataclass(frozen=True)
class Block:
    """One fenced block: where it starts (1-based line of its first code line)."""

    line: int
    code: str
    skip_reason: str | None  # None: run it


def python_blocks(text: str) -> list[Block]:
    """The page's ``python`` blocks, with the not-run marker directly above each fence."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence, info = opening["indent"], opening["fence"], opening["info"].lower()
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = FENCE.match(lines[j])
            if (
                closing is not None
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"]
            ):
                break
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        else:
            raise AssertionError(f"line {i + 1}: a {fence} fence that is never closed")
        if info in PYTHON_INFOS:
            marker = NOT_RUN.match(lines[i - 1]) if i > 0 else None
            reason = None if marker is None else marker["reason"].strip()
            if marker is not None and not reason:
                raise AssertionError(f"line {i}: `<!-- not-run: -->` needs a reason")
            blocks.append(Block(i + 2, textwrap.dedent("\n".join(body)), reason))
        i = j + 1
    return blocks


# The child process: runs one page's blocks in order in one namespace. Each block is
# compiled with the page's name and padded to its own line numbers, so a traceback
# points at the Markdown line that failed.
RUNNER = r"""
import json, sys, traceback
page, blocks = json.load(sys.stdin)
namespace = {"__name__": "__main__"}
for line, code in blocks:
    try:
        exec(compile("\n" * (line - 1) + code, page, "exec"), namespace)
    except BaseException:
        sys.stdout.flush()
        print(f"DOCS-BLOCK-FAILED {page}:{line}", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
"""


def run_page(page: str, blocks: list[Block], workdir: Path) -> subprocess.CompletedProcess[str]:
    """Run ``blocks`` (the runnable ones) of ``page`` in a fresh interpreter in ``workdir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.pop("TECHREVATI_SPANS_FILE", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
    payload = json.dumps([page, [(b.line, b.code) for b in blocks if b.skip_reason is None]])
    return subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=payload,
        capture_output=True,
        text=True,
        cwd=workdir,
        env=env,
        timeout=120,
    )


def _page_id(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("path", PAGES, ids=_page_id)
def test_every_python_block_of_the_page_runs(path: Path, tmp_path: Path) -> None:
    blocks = python_blocks(path.read_text(encoding="utf-8"))
    if not any(b.skip_reason is None for b in blocks):
        return  # nothing to run on this page; the marker reasons were checked above
    result = run_page(_page_id(path), blocks, tmp_path)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"


def test_the_docs_have_python_to_run() -> None:
    # Guard against the runner silently finding nothing (a changed fence style).
    runnable = sum(
        1
        for path in PAGES
        for block in python_blocks(path.read_text(encoding="utf-8"))
        if block.skip_reason is None
    )
    assert runnable >= 30, runnable


def test_a_broken_block_fails_and_names_its_line(tmp_path: Path) -> None:
    page = textwrap.dedent(
        """\
        # A page

        ```python
        x = 1
        ```

        <!-- not-run: needs a key -->
        ```python
        raise SystemExit("skipped blocks never run")
        ```

        ```python
        assert x == 2, "x is still 1"
        ```
        """
    )
    blocks = python_blocks(page)
    assert [(b.line, b.skip_reason) for b in blocks] == [(4, None), (9, "needs a key"), (13, None)]
    result = run_page("page.md", blocks, tmp_path)
    assert result.returncode == 1
    assert "DOCS-BLOCK-FAILED page.md:13" in result.stderr
    assert 'File "page.md", line 13' in result.stderr
    assert "x is still 1" in result.stderr


def test_a_not_run_marker_needs_a_reason() -> None:
    with pytest.raises(AssertionError, match="needs a reason"):
        python_blocks("<!-- not-run:  -->\n```python\npass\n```\n")


def test_mkdocs_builds_the_site_strictly(tmp_path: Path) -> None:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    config = ["--config-file", str(REPO / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")]
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", *config],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert (tmp_path / "site" / "index.html").is_file()
    api = (tmp_path / "site" / "api" / "runtime" / "index.html").read_text(encoding="utf-8")
    # The reference is rendered from the docstrings, not hand-written.
    assert 'id="techrevati.runtime.Orchestrator"' in api
    assert 'id="techrevati.runtime.configure"' in api


def test_the_configure_page_lists_every_option() -> None:
    import inspect

    from techrevati.runtime import configure

    page = (REPO / "docs" / "configure.md").read_text(encoding="utf-8")
    missing = [
        name for name in inspect.signature(configure).parameters if f"| `{name}` |" not in page
    ]
    assert not missing, f"configure() options missing from docs/configure.md: {missing}"


def test_no_instruction_installs_this_package_by_name_from_the_index() -> None:
    # The name on the public index belongs to an unrelated package (0.4.0): an
    # instruction to `pip install techrevati-runtime[...]` installs that one.
    by_name = re.compile(r"pip install\s+(-\S+\s+)*['\"]?techrevati[-_]runtime\b")
    files = [*PAGES, *(REPO / "src").glob("**/*.py"), *(REPO / "examples").glob("*.py")]
    offenders = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if by_name.search(line)
    ]
    assert not offenders, "\n".join(offenders)


def test_the_readme_is_an_entry_point() -> None:
    # Issue 23: what it is, the two commands, a short quick start that calls
    # configure(), the features and links into the site; the rest lives in docs/.
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 400
    quick_start = python_blocks(text)[0]
    assert "configure(" in quick_start.code
    code_lines = [line for line in quick_start.code.splitlines() if line.strip()]
    assert len(code_lines) <= 12, len(code_lines)
    assert "make demo" in text and "make test" in text


def test_budgets_page_lists_every_limit_site_level() -> None:
    # It listed own/parent/fleet and called scope "the fleet scope, else None", while a
    # shared session's refusals carry level "shared" and its s-<hash> scope.
    page = (REPO / "docs" / "budgets.md").read_text()
    assert '(`"own"`, `"parent"`, `"shared"`, `"fleet"`)' in page
    assert "for a shared session's limit, the Redis scope" in page
