"""Set-up: ``configure()`` and everything it assembles and tears down.

Owns reading what was asked for (arguments and environment), building providers,
exporters and pipelines, the handle that flushes and stops them, switching on
recommended instrumentations with the guard, and SIGTERM handling.

May import: every other room of ``telemetry`` and the fleet level.
"""
