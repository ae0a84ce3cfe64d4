"""Export: spans and metrics leave the process without ever hurting the agent.

Owns the bounded span pipeline and fan-out, the OTLP JSON lines files,
sanitising spans before export, fork safety and the samplers.

May import: the primitives and ``semconv``; nothing of the call path.
"""
