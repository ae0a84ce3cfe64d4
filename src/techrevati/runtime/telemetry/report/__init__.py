"""Report: what a run did, rebuilt from its spans alone.

Owns reading span records (from the SDK or an untrusted file), the report model,
its text rendering and the exporter that prints it at exit.

May import: the primitives, ``semconv``, ``readings`` and ``export``.
"""
