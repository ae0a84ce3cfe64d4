"""Limits: what may run, and what it cost.

Owns the ledger tree (reserve, settle, release at every level), membership (which
session and which call a span belongs to), the span processor that admits and
books other instrumentations' model calls, the client guard that stops a refused
request before it leaves, and the exceptions the limits raise.

May import: the primitives, ``semconv`` and ``readings``.
"""
