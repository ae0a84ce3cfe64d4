"""A Celery app whose worker makes model calls under the producer's shared session.

Redis is the broker and result backend (``TECHREVATI_TEST_REDIS_URL``). The
worker and the producer both run OpenTelemetry's Celery instrumentation, which
injects the W3C context (trace context and baggage) into the task's headers and
attaches it around the task.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from opentelemetry.instrumentation.celery import CeleryInstrumentor

from . import children

URL = os.environ["TECHREVATI_TEST_REDIS_URL"]
QUEUE = os.environ.get("TECHREVATI_TEST_CELERY_QUEUE", "techrevati-shared")

app = Celery("techrevati_shared", broker=URL, backend=URL)
app.conf.update(
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    result_expires=300,
)

if os.environ.get("TECHREVATI_TEST_CELERY_WORKER") == "1":
    children.set_up(URL)
    CeleryInstrumentor().instrument()


@app.task(name="research")
def research(attempts: int, own_session: bool) -> dict[str, Any]:
    return children.calls(attempts, own_session=own_session)
