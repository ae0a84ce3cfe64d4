"""Two producers of gen_ai.client.* metrics for one call: ours and the official OpenAI one.

Run as a process (``python -m deploy.two_producers PORT``): it sets the global
providers (a call outside any session records there), exposes its metrics on
127.0.0.1:PORT with the OpenTelemetry Prometheus exporter, switches on the official
OpenAI instrumentation (what ``configure(instrument=["openai"])`` does) and makes
real calls through ``@agent_turn`` against a stand-in OpenAI server, in two rounds
(so a rate() sees them): each round one call in ``agent_session(ROLE)`` and one
outside any session. Each call is recorded twice, by our turn and by the official
instrumentation's span inside it. It prints ``ready`` after each round, starts the
second on a line of its stdin, and serves until its stdin closes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import openai
from opentelemetry import metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import start_http_server

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from decorators import payloads
from fake_openai import FakeOpenAI, serve
from techrevati.runtime import ModelPricing, agent_session, agent_turn, register_pricing

SERVICE = "techrevati-two-producers"
ROLE = "writer"
MODEL = "gpt-4o-mini"
#: What one call of payloads.OPENAI_COMPLETION uses (input counts its cached tokens).
INPUT_TOKENS = payloads.OPENAI_COMPLETION["usage"]["prompt_tokens"]
OUTPUT_TOKENS = payloads.OPENAI_COMPLETION["usage"]["completion_tokens"]
#: Calls made in each round: one in the session, one outside any session.
CALLS_PER_ROUND = 2
ROUNDS = 2
CALLS = ROUNDS * CALLS_PER_ROUND
#: The calls made in the session (gen_ai.agent.name = ROLE): one a round.
ROLE_CALLS = ROUNDS


def main(port: int) -> None:
    resource = Resource.create({"service.name": SERVICE})
    reader = PrometheusMetricReader(resource_attribute_filter=lambda key: key == "service.name")
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader], resource=resource))
    trace.set_tracer_provider(TracerProvider(resource=resource))
    start_http_server(port, addr="127.0.0.1")
    register_pricing(MODEL, ModelPricing(*payloads.OPENAI_RATES))
    OpenAIInstrumentor().instrument()
    with serve(FakeOpenAI(payloads.OPENAI_COMPLETION, payloads.OPENAI_STREAM)) as fake:
        client = openai.OpenAI(base_url=fake.url, api_key="k", max_retries=0)

        @agent_turn(MODEL, provider="openai")
        def ask() -> object:
            return client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}]
            )

        for _ in range(ROUNDS):
            with agent_session(ROLE):
                ask()
            ask()
            print("ready", flush=True)
            sys.stdin.readline()
    sys.stdin.read()


if __name__ == "__main__":
    main(int(sys.argv[1]))
