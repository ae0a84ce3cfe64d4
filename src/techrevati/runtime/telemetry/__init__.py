"""The OpenTelemetry-native core: names, instrumentation, limits, metrics, setup."""
