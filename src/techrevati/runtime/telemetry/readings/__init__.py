"""Readings: whether a span is a model call, which call it is, and what it used.

Owns recognising other instrumentations' spans (GenAI conventions, OpenInference,
known producers), converting usage to and from attributes, and reading usage,
model and text from provider responses by shape.

May import: the primitives (``usage_tracking``, ``pricing``) and ``semconv``.
"""
