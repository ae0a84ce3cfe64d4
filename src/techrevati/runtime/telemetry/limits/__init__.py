"""Limits: what may run, and what it cost.

Owns the ledger tree (reserve, settle, release at every level), membership (which
session and which call a span or a client request belongs to), the span processor
that admits and books other instrumentations' model calls, the client guard (a
door at the ``openai`` / ``anthropic`` clients: ``guard``, ``door``), what a call
is expected to cost before anything is known (``estimate``, ``probe``), booking
(``booking``), and the exceptions the limits raise.

May import: the primitives, ``semconv`` and ``readings``.
"""
