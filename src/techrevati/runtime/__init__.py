"""techrevati.runtime: safe, visible LLM agent loops on OpenTelemetry."""

__version__ = "0.1.0"
