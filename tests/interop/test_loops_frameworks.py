"""Wrap-up and the loop guard in real agent frameworks, against the runaway stand-in.

The stand-in (``standin.serve(runaway=True)``, started here on 127.0.0.1) answers
every request that offers tools with another tool call, and one that offers none
with text: an agent framework loops until something stops it.

* **Wrap-up**: every framework block of docs/loops.md (the plain OpenAI client,
  pydantic-ai, the OpenAI Agents SDK, LangGraph) runs as written in the
  ``frameworks`` venv (``venvs.py``) with ``OPENAI_BASE_URL`` at the stand-in. With
  ``wrap_up_at=0.8`` and a cap of 10 the agent returns a final answer after 9 model
  calls; the same block without ``wrap_up_at`` fails with ``MaxIterationsExceededError``
  after 10.
* **Loop guard** (``loops_scenario.py``): a LangGraph ReAct agent under each LangChain
  instrumentation, whose tool spans are all the guard sees, with the stand-in asking
  for the same call every time (its matrix default varies the argument): under
  ``LoopGuard(on_loop="raise")`` the run stops with ``LoopDetectedError`` after three
  identical tool calls; without a guard the cap (20) stops it.

Every run is a subprocess (imports dominate: ~5-15 s each), two at a time.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

import standin  # noqa: E402
import venvs  # noqa: E402

# The first test runs every scenario (14 processes, two at a time, ~5-15 s each).
pytestmark = pytest.mark.timeout(900)

PAGE = REPO / "docs" / "loops.md"
RESULT_MARK = "LOOPS-RESULT "  # loops_scenario.py's (it imports the frameworks: not here)
MARKER = "tests/interop/test_loops_frameworks.py"
BLOCK = re.compile(r"<!-- not-run:(?P<reason>[^\n]*?)-->\n```python\n(?P<code>.*?)\n```", re.S)
FRAMEWORKS = ("openai", "pydantic_ai", "agents", "langgraph")
WRAP = ", wrap_up_at=0.8"


def framework_blocks() -> dict[str, str]:
    """docs/loops.md's blocks this test runs, by the framework each imports (else openai)."""
    found: dict[str, str] = {}
    for match in BLOCK.finditer(PAGE.read_text(encoding="utf-8")):
        if MARKER not in match["reason"]:
            continue
        code = match["code"]
        imported = set(re.findall(r"^(?:from|import) (\w+)", code, re.M))
        name = next((f for f in FRAMEWORKS[1:] if f in imported), FRAMEWORKS[0])
        assert name not in found, f"two blocks for {name}"
        found[name] = code
    return found


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    requests: int


def run_code(python: Path, code: str, cwd: Path, args: tuple[str, ...] = ()) -> Run:
    """Run ``code`` (a file's text) in the frameworks venv against a fresh runaway stand-in."""
    script = cwd / "block.py"
    script.write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        PYTHONPATH=str(REPO / "src"),
        OPENAI_API_KEY="test-key",
        OPENAI_AGENTS_DISABLE_TRACING="1",  # no trace export to the real API
        LANGSMITH_TRACING="false",
    )
    with standin.serve(runaway=True) as api:
        env["OPENAI_BASE_URL"] = api.url + "/v1"
        done = subprocess.run(
            [str(python), str(script), *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        requests = len(api.hits)
    return Run(done.returncode, done.stdout, done.stderr, requests)


def _same_arguments(tool: str, number: int) -> str:
    # The matrix's stand-in varies the argument per request ("step N"), so that its
    # runaway is not also a loop; a loop of identical calls is what is tested here.
    return json.dumps({"query": "again"})


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    python = venvs.python("frameworks")
    # The stand-in runs in this process: its runaway answers now repeat one call.
    assert callable(getattr(standin, "_arguments", None)), "standin._arguments moved"
    patch = pytest.MonkeyPatch()
    patch.setattr(standin, "_arguments", _same_arguments)
    blocks = framework_blocks()
    assert sorted(blocks) == sorted(FRAMEWORKS), f"docs/loops.md blocks: {sorted(blocks)}"
    scenario = (HERE / "loops_scenario.py").read_text(encoding="utf-8")
    jobs: dict[str, tuple[str, tuple[str, ...]]] = {}
    for name, code in blocks.items():
        assert WRAP in code, f"the {name} block has no {WRAP!r}"
        jobs[f"wrap {name}"] = (code, ())
        jobs[f"control {name}"] = (code.replace(WRAP, ""), ())
    for instrumentation in ("genai", "openinference", "openllmetry"):
        for guard in ("raise", "none"):
            jobs[f"loop {instrumentation} {guard}"] = (scenario, (instrumentation, guard))

    def one(item: tuple[str, tuple[str, tuple[str, ...]]]) -> tuple[str, Run]:
        key, (code, args) = item
        cwd = tmp_path_factory.mktemp(key.replace(" ", "-"))
        return key, run_code(python, code, cwd, args)

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            done = dict(pool.map(one, jobs.items()))
    finally:
        patch.undo()
    yield done


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_wrap_up_returns_a_final_answer(runs: dict[str, Run], framework: str) -> None:
    run = runs[f"wrap {framework}"]
    assert run.returncode == 0, run.stderr[-3000:]
    answer = re.search(r"^answer: (.+)$", run.stdout, re.M)
    assert answer is not None and answer[1].strip() not in ("", "None"), run.stdout
    assert re.search(r"^model calls: 9$", run.stdout, re.M), run.stdout
    assert run.requests == 9  # 8 that asked for tools, then the answer


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_without_wrap_up_the_cap_stops_the_agent(runs: dict[str, Run], framework: str) -> None:
    run = runs[f"control {framework}"]
    assert run.returncode != 0, run.stdout
    assert "MaxIterationsExceededError" in run.stderr, run.stderr[-3000:]
    assert "answer:" not in run.stdout
    assert run.requests == 10


def _result(run: Run) -> dict[str, Any]:
    for line in run.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            found: dict[str, Any] = json.loads(line[len(RESULT_MARK) :])
            return found
    raise AssertionError(f"no result line; stderr: {run.stderr[-3000:]}")


@pytest.mark.parametrize("instrumentation", ("genai", "openinference", "openllmetry"))
def test_the_loop_guard_stops_a_runaway_graph_from_foreign_tool_spans(
    runs: dict[str, Run], instrumentation: str
) -> None:
    stopped = _result(runs[f"loop {instrumentation} raise"])
    assert stopped["tool_runs"] == 3
    assert stopped["loops"] == 1
    assert "LoopDetectedError" in stopped["chain"], stopped
    assert runs[f"loop {instrumentation} raise"].requests == 3

    free = _result(runs[f"loop {instrumentation} none"])
    assert free["loops"] == 0
    assert "MaxIterationsExceededError" in free["chain"], free
    assert free["tool_runs"] >= 10
