"""The OpenTelemetry-native core, one room per responsibility.

Rooms, from the bottom up; a room may import the rooms above it in this list,
never those below (``tests/test_architecture.py`` checks it, and that no two
modules import each other, deferred imports included):

- :mod:`.semconv`: every span, attribute, event and metric name (imports nothing of ours).
- :mod:`.readings`: is a span a model call, and what did it use; usage read from responses.
- :mod:`.limits`: the ledger tree, which session a call belongs to, the span processor
  and the client guard that enforce limits, and the errors they raise.
- :mod:`.export`: getting spans out safely: bounded pipelines, JSON lines files,
  sanitising, fork safety, sampling.
- :mod:`.calls`: the one call path: session, turn and tool spans, metrics, timeouts.
- :mod:`.report`: the run report rebuilt from spans (read, model, text, exporter).
- :mod:`.setup`: ``configure()`` and its parts, auto-instrumentation, SIGTERM.

The plain-Python primitives at ``techrevati.runtime``'s top level (usage
tracking, pricing, breakers, permissions, guardrails, ...) sit below all rooms;
the fleet level (``techrevati.runtime.fleet``) and the frameworks' tool doors
(``techrevati.runtime.frameworks``) sit beside ``calls``; the front
doors (``orchestrator``, ``decorators``, ``__main__``) sit above everything.
"""
