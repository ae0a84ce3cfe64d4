"""Readings: whether a span is a model call, which call it is, and what it used.

Owns recognising other instrumentations' spans (GenAI conventions, OpenInference,
known producers), converting usage to and from attributes, reading usage,
model and text from provider responses by shape, and the model a cloud
platform's request names in its URL (Bedrock, Vertex).

May import: the primitives (``usage_tracking``, ``pricing``) and ``semconv``.
"""
