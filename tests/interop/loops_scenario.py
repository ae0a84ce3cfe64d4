"""A runaway LangGraph agent under one LangChain instrumentation, with or without the loop guard.

Usage: ``python loops_scenario.py INSTRUMENTATION GUARD`` in the ``frameworks`` venv
with ``PYTHONPATH=<checkout>/src`` and ``OPENAI_BASE_URL`` pointing at the runaway
stand-in (``standin.serve(runaway=True)``, run by the test). INSTRUMENTATION is
``genai``, ``openinference`` or ``openllmetry``; GUARD is ``raise`` or ``none``.

The stand-in asks for ``lookup(query="again")`` on every request and the tool
answers the same each time: a loop only the instrumentation's tool spans show
(the tool is LangChain's, not ours). Prints one JSON line: how many times the
tool body ran, how many model calls the session counted, the loops it detected
and the exception chain the caller saw.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from typing import Any

# Content capture for the GenAI instrumentation (OpenInference and OpenLLMetry record
# tool inputs and outputs by default).
os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "SPAN_ONLY"
os.environ.setdefault("OPENAI_API_KEY", "test-key")
os.environ.setdefault("LANGSMITH_TRACING", "false")

from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from techrevati.runtime import LoopGuard, agent_session, configure

RESULT_MARK = "LOOPS-RESULT "
CAP = 20


def instrument(name: str, provider: Any) -> None:
    if name == "genai":
        from opentelemetry.instrumentation.genai.langchain import LangChainInstrumentor

        LangChainInstrumentor().instrument(tracer_provider=provider)
    elif name == "openinference":
        from openinference.instrumentation.langchain import (
            LangChainInstrumentor as OpenInference,
        )

        OpenInference().instrument(tracer_provider=provider)
    elif name == "openllmetry":
        from opentelemetry.instrumentation.langchain import LangchainInstrumentor

        LangchainInstrumentor().instrument(tracer_provider=provider)
    else:
        raise SystemExit(f"unknown instrumentation {name!r}")


def main() -> None:
    name, guard = sys.argv[1], sys.argv[2]
    handle = configure(instrument=["openai"], spans_file=False, report=False, metrics=False)
    instrument(name, handle.tracer_provider)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # create_react_agent's move to langchain.agents
        from langgraph.prebuilt import create_react_agent

    ran: list[str] = []

    @tool
    def lookup(query: str) -> str:
        """Look something up."""
        ran.append(query)
        return f"nothing found for {query}"

    app = create_react_agent(ChatOpenAI(model="gpt-4o-mini", max_retries=0), [lookup])
    chain: list[str] = []
    options: dict[str, Any] = {"max_iterations": CAP}
    options["loop_guard"] = LoopGuard(on_loop="raise") if guard == "raise" else None
    session: Any = None
    try:
        with agent_session("researcher", **options) as session:
            app.invoke({"messages": [("user", "research")]}, {"recursion_limit": 200})
    except Exception as exc:
        seen: BaseException | None = exc
        while seen is not None and len(chain) < 8:
            chain.append(type(seen).__name__)
            seen = seen.__cause__ or seen.__context__
    assert session is not None
    loops = session._scope.loops
    print(
        RESULT_MARK
        + json.dumps(
            {
                "tool_runs": len(ran),
                "model_calls": session._iteration_count,
                "loops": loops.detections if loops is not None else 0,
                "chain": chain,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
