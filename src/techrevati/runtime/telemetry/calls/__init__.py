"""Calls: the one call path that the Orchestrator and the decorators go through.

Owns opening, filling and ending session, turn and tool spans (``instrument`` is
its front), admission before a turn's span starts, booking at its end, the metric
instruments, which TracerProvider to use, content capture and timeouts.

May import: the primitives, ``semconv``, ``readings`` and ``limits``.
"""
