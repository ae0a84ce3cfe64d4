"""Debian's Chromium, headless, as the HTML report's test browser.

``make chromium`` installs it (``make test`` does). Every run gets a fresh
profile and the flags that keep Chromium off the network: on this closed
network its background connections are refused and its start-up host lookups
fail, and neither must be mistaken for the page's doing.

Console output is read from Chromium's own log (``--enable-logging=stderr``):
every ``console.*`` call, uncaught exception and Content-Security-Policy
refusal of the page appears there as a ``CONSOLE`` line, so "no console error"
is checked as "no console line at all" (the page logs nothing on purpose).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
OFFLINE_FLAGS = (
    "--headless",
    "--no-sandbox",  # the tests run as root in a container
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--hide-scrollbars",
)
_CONSOLE = re.compile(r":CONSOLE(?::\d+)?\]\s*(.*)")


def require_chromium() -> str:
    """The browser's path; a clear failure (not a skip) when it is not installed."""
    if not Path(CHROMIUM).exists():
        raise AssertionError("chromium is not installed: run `make chromium` (Debian package)")
    return CHROMIUM


@dataclass
class Rendered:
    """What Chromium made of a page."""

    dom: str
    console: list[str]
    seconds: float


def _run(url: str, *extra: str, timeout: float = 90.0) -> tuple[str, str, float]:
    browser = require_chromium()
    with tempfile.TemporaryDirectory(prefix="trr-chromium-") as profile:
        command = [
            browser,
            *OFFLINE_FLAGS,
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            *extra,
            url,
        ]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise AssertionError(f"chromium exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout, done.stderr, seconds


def console_lines(log: str) -> list[str]:
    """The page's console messages in a Chromium log."""
    return [m.group(1) for m in (_CONSOLE.search(line) for line in log.splitlines()) if m]


def render(page: Path, *, window: tuple[int, int] = (1280, 1600)) -> Rendered:
    """The DOM after the page's scripts ran, and its console lines."""
    size = f"--window-size={window[0]},{window[1]}"
    dom, log, seconds = _run(page.resolve().as_uri(), size, "--dump-dom")
    return Rendered(dom, console_lines(log), seconds)


def screenshot(page: Path, png: Path, *, window: tuple[int, int] = (1280, 1600)) -> list[str]:
    """A PNG of the page as a browser window shows it; returns the console lines."""
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    size = f"--window-size={window[0]},{window[1]}"
    _, log, _ = _run(page.resolve().as_uri(), size, f"--screenshot={png}")
    if not png.is_file():
        raise AssertionError(f"chromium wrote no screenshot to {png}")
    return console_lines(log)


# --- reading the dumped DOM ------------------------------------------------------------
@dataclass
class Node:
    """An element of the dumped DOM: tag, attributes, children and text, in order."""

    tag: str
    attrs: dict[str, str]
    children: list[Node] = field(default_factory=list)
    parts: list[str | Node] = field(default_factory=list)

    @property
    def text(self) -> str:
        """All text below this node, as the browser would show it (roughly)."""
        return "".join(p if isinstance(p, str) else p.text for p in self.parts)

    def walk(self) -> list[Node]:
        """This node and every node below it, in document order."""
        found: list[Node] = []
        stack = [self]
        while stack:
            node = stack.pop()
            found.append(node)
            stack.extend(reversed(node.children))
        return found

    def find(self, tag: str | None = None, **attrs: str) -> list[Node]:
        """Nodes below (and including) this one with this tag and attribute values.

        ``class_`` matches one class among the element's classes.
        """
        wanted_class = attrs.pop("class_", None)
        return [
            node
            for node in self.walk()
            if (tag is None or node.tag == tag)
            and all(node.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
            and (wanted_class is None or wanted_class in node.attrs.get("class", "").split())
        ]

    def by_id(self, element_id: str) -> Node:
        """The element with this id (an assertion error when there is none)."""
        found = self.find(id=element_id)
        assert found, f"no element with id {element_id!r}"
        return found[0]


_VOID = {"meta", "link", "br", "hr", "img", "input", "area", "base", "col", "source", "wbr"}


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        parent = self.stack[-1]
        parent.children.append(node)
        parent.parts.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        self.stack[-1].parts.append(node)

    def handle_endtag(self, tag: str) -> None:
        for index in range(len(self.stack) - 1, 0, -1):
            if self.stack[index].tag == tag:
                del self.stack[index:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].parts.append(data)


def parse(dom: str) -> Node:
    """The dumped DOM as a tree of :class:`Node`."""
    builder = _Builder()
    builder.feed(dom)
    builder.close()
    return builder.root
