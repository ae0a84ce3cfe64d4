"""``@agent_turn``, ``@tool_call`` and ``agent_session``: the decorator front door.

Decorate your own functions instead of wrapping calls in lambdas::

    from techrevati.runtime import agent_session, agent_turn, tool_call

    @agent_turn("gpt-4o-mini")
    def ask(prompt: str) -> dict:
        return client.chat.completions.create(model="gpt-4o-mini", messages=[...])

    @tool_call()
    def lookup(term: str) -> str:
        return glossary[term]

    with agent_session("writer", budget_usd=0.50, enforce_budget=True) as session:
        answer = ask("what is RAG?")         # span "chat gpt-4o-mini", priced
        lookup("RAG")                        # span "execute_tool lookup", permission-checked
    print(session.summary())

Everything goes through the same core as ``Orchestrator`` sessions
(``telemetry.calls.instrument`` plus the session's own steps), so a decorated turn
inside ``agent_session`` is indistinguishable, in spans, metrics, ledger and
limits, from ``session.run_turn``. Outside any session the decorators still
produce priced spans and metrics.

The package holds one module per decorator (:mod:`.turn`, :mod:`.tool`,
:mod:`.session`), how each wraps a function of each kind (:mod:`.wrapping`),
and the stream drivers that carry a call as long as a generator or an SDK
stream (:mod:`.streams`). A front door like the Orchestrator, it may import
anything in the package.
"""

from __future__ import annotations

from .session import agent_session, current_agent_session
from .tool import tool_call
from .turn import UsageSource, agent_turn

__all__ = ["UsageSource", "agent_session", "agent_turn", "current_agent_session", "tool_call"]
