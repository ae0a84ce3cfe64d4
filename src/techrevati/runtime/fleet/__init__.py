"""Fleet-wide limits: one budget and one call cap shared by every process, on Redis.

Importing this package never needs the ``redis`` client; building a
``FleetLimits`` does (``pip install redis``).

Example::

    from techrevati.runtime import FleetLimits

    tenant = FleetLimits("redis://127.0.0.1:6379/0", scope="tenant-42",
                         budget_usd=50.0, max_calls=10_000, window_s=86_400)
"""

from __future__ import annotations

from .hold import FleetHold, FleetUsage
from .limits import FleetLimits

__all__ = ["FleetHold", "FleetLimits", "FleetUsage"]
