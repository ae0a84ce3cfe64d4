"""Every span, attribute, event and metric name this package emits, in one table.

The GenAI names follow the OpenTelemetry GenAI semantic conventions (status
"Development"). Cost, budget, permission and breaker data have no standard, so
they live under the ``techrevati.`` prefix. Dashboards, the collector config and
the tests all read names from here (or from the Prometheus spelling below), so
a rename happens in one place.
"""

from __future__ import annotations

from typing import Final

# --- operations (gen_ai.operation.name) and span names -----------------------
OP_INVOKE_AGENT: Final = "invoke_agent"
OP_CHAT: Final = "chat"
OP_EXECUTE_TOOL: Final = "execute_tool"
#: Operations that are model calls: only these are priced and counted as turns.
#: ``invoke_agent`` roll-ups are never summed, or a session would be counted twice.
MODEL_OPERATIONS: Final = frozenset({"chat", "text_completion", "generate_content", "embeddings"})

# --- GenAI attributes ----------------------------------------------------------
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_SYSTEM: Final = "gen_ai.system"  # older spelling of provider.name, read only
GEN_AI_AGENT_NAME: Final = "gen_ai.agent.name"
GEN_AI_AGENT_ID: Final = "gen_ai.agent.id"
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
#: Conditionally required, set if and only if the request streams.
GEN_AI_REQUEST_STREAM: Final = "gen_ai.request.stream"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS: Final = "gen_ai.usage.cache_write.input_tokens"
#: Older instrumentations send cache writes under this name; read both.
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: Final = "gen_ai.usage.cache_creation.input_tokens"
#: Names the GenAI registry is renaming, current -> old: we write both until the rename is
#: complete everywhere (cache_creation is still the name in parts of the registry and in
#: many backends), and read both. docs/telemetry-reference.md lists them. Only
#: optional counts (cache tokens) may be listed: ``readings.tokens`` looks here only
#: when a call has one.
MID_RENAME: Final = {
    GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS: GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
}
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = "gen_ai.usage.reasoning.output_tokens"
GEN_AI_TOKEN_TYPE: Final = "gen_ai.token.type"
GEN_AI_TOOL_NAME: Final = "gen_ai.tool.name"
GEN_AI_TOOL_TYPE: Final = "gen_ai.tool.type"
GEN_AI_TOOL_CALL_ID: Final = "gen_ai.tool.call.id"
GEN_AI_TOOL_CALL_ARGUMENTS: Final = "gen_ai.tool.call.arguments"
GEN_AI_TOOL_CALL_RESULT: Final = "gen_ai.tool.call.result"
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
ERROR_TYPE: Final = "error.type"

TOKEN_TYPE_INPUT: Final = "input"
TOKEN_TYPE_OUTPUT: Final = "output"

# --- proposed GenAI attributes (not in the conventions yet; written only with
# configure(proposed_conventions=True), see calls/conventions.py) -------------------
#: Per-operation cost, semantic-conventions-genai PR #443 (open): amount, ISO 4217
#: currency, and where the number came from.
GEN_AI_USAGE_COST_AMOUNT: Final = "gen_ai.usage.cost.amount"
GEN_AI_USAGE_COST_CURRENCY: Final = "gen_ai.usage.cost.currency"
GEN_AI_USAGE_COST_SOURCE: Final = "gen_ai.usage.cost.source"
#: Budget governance on the invoke_agent span, semantic-conventions-genai issue #425
#: (open): an iteration (model call) cap and how much of it the invocation used.
GEN_AI_AGENT_ITERATION_BUDGET_LIMIT: Final = "gen_ai.agent.iteration_budget.limit"
GEN_AI_AGENT_ITERATION_BUDGET_CONSUMED: Final = "gen_ai.agent.iteration_budget.consumed"
COST_CURRENCY_USD: Final = "USD"

# --- techrevati attributes -----------------------------------------------------
COST_USD: Final = "techrevati.cost.usd"
BUDGET_LIMIT_USD: Final = "techrevati.budget.limit_usd"
BUDGET_SPENT_USD: Final = "techrevati.budget.spent_usd"
BUDGET_ENFORCED: Final = "techrevati.budget.enforced"
SESSION_ITERATION: Final = "techrevati.session.iteration"
SESSION_MAX_ITERATIONS: Final = "techrevati.session.max_iterations"
SESSION_TURNS: Final = "techrevati.session.turns"
SESSION_OUTCOME: Final = "techrevati.session.outcome"
SESSION_FAILURE_CLASS: Final = "techrevati.session.failure_class"
PERMISSION_DECISION: Final = "techrevati.permission.decision"
PERMISSION_REQUIRED_MODE: Final = "techrevati.permission.required_mode"
PERMISSION_GRANTED_MODE: Final = "techrevati.permission.granted_mode"
PERMISSION_REASON: Final = "techrevati.permission.reason"
GUARDRAIL_OUTCOME: Final = "techrevati.guardrail.outcome"
GUARDRAIL_NAME: Final = "techrevati.guardrail.name"
GUARDRAIL_STAGE: Final = "techrevati.guardrail.stage"
BREAKER_NAME: Final = "techrevati.breaker.name"
BREAKER_STATE: Final = "techrevati.breaker.state"
PHASE: Final = "techrevati.phase"
PROJECT_ID: Final = "techrevati.project.id"
LIMIT_KIND: Final = "techrevati.limit.kind"
#: False for a soft budget crossed (reported only, nothing refused); True for every other hit.
LIMIT_ENFORCED: Final = "techrevati.limit.enforced"
RECOVERY_SCENARIO: Final = "techrevati.recovery.scenario"
RECOVERY_OUTCOME: Final = "techrevati.recovery.outcome"
#: Where a model call's price came from: COST_SOURCE_* below.
COST_SOURCE: Final = "techrevati.cost.source"
#: A session's spend including every descendant session (``techrevati.cost.usd`` is its own).
COST_TREE_USD: Final = "techrevati.cost.tree_usd"
#: On a session span: the models its own calls used, and what each cost (same order), as
#: the ledger priced them: a replayed report prices other instrumentations' calls by them,
#: not by the prices of the process that reads the file.
COST_MODELS: Final = "techrevati.cost.models"
COST_MODEL_USD: Final = "techrevati.cost.model_usd"
#: At most this many models are rolled up per session (the most expensive kept).
COST_MODELS_LIMIT: Final = 32
#: Model calls in a session whose response carried no usage, and calls of unpriced models.
SESSION_CALLS_WITHOUT_USAGE: Final = "techrevati.session.calls_without_usage"
#: Of those, the calls a budget booked at an estimate, and what the estimates came to.
SESSION_CALLS_ESTIMATED: Final = "techrevati.session.calls_estimated"
SESSION_ESTIMATED_USD: Final = "techrevati.session.estimated_usd"
SESSION_UNPRICED_CALLS: Final = "techrevati.session.unpriced_calls"
#: Those calls' models, and how many calls each made (same order, most first; at most
#: COST_MODELS_LIMIT models).
SESSION_UNPRICED_MODELS: Final = "techrevati.session.unpriced_models"
SESSION_UNPRICED_MODEL_CALLS: Final = "techrevati.session.unpriced_model_calls"
#: True on a model-call span whose response carried no usage.
USAGE_MISSING: Final = "techrevati.usage.missing"
#: An export pipeline of configure() (``otlp``, ``local``) and why its spans were lost:
#: ``dropped`` (queue full), ``failed`` (the exporter reported failure), ``abandoned``
#: (still queued when shutdown's deadline passed).
EXPORT_PIPELINE: Final = "techrevati.export.pipeline"
EXPORT_REASON: Final = "techrevati.export.reason"
#: The fleet scope (FleetLimits.scope) a refusal or fleet metric belongs to.
FLEET_SCOPE: Final = "techrevati.fleet.scope"
#: On a session span: every fleet scope its calls counted against.
FLEET_SCOPES: Final = "techrevati.fleet.scopes"
#: A shared session (``shared=True``): True on its span; the remote sessions opened under it.
SESSION_SHARED: Final = "techrevati.session.shared"
SESSION_REMOTE_CHILDREN: Final = "techrevati.session.remote_children"
#: On a session opened in another process under a shared one: the parent's role and conversation.
SESSION_REMOTE_PARENT_ROLE: Final = "techrevati.session.remote_parent.role"
SESSION_REMOTE_PARENT_CONVERSATION: Final = "techrevati.session.remote_parent.conversation_id"
#: On techrevati.fleet.dropped: "settlement" or "cleanup".
FLEET_FINISH: Final = "techrevati.fleet.finish"
#: Token kinds of the detail counter (cache and reasoning shares).
TOKEN_KIND: Final = "techrevati.token.kind"
#: Resource attribute naming one ``configure()`` run (its forked workers share it): runs
#: appended to one spans file are told apart by it. Each process also gets its own
#: ``service.instance.id``.
RUN_ID: Final = "techrevati.run.id"

PERMISSION_ALLOW: Final = "allow"
PERMISSION_DENY: Final = "deny"
GUARDRAIL_PASSED: Final = "passed"
GUARDRAIL_BLOCKED: Final = "blocked"
GUARDRAIL_NONE: Final = "none"
#: A guardrail raised instead of answering (the tool did not run).
GUARDRAIL_ERROR: Final = "error"
LIMIT_BUDGET: Final = "budget"
LIMIT_ITERATIONS: Final = "max_iterations"
LIMIT_UNPRICED: Final = "unpriced"
LIMIT_FLEET_BUDGET: Final = "fleet_budget"
LIMIT_FLEET_CALLS: Final = "fleet_calls"
#: A tool call refused because it would extend a loop (``LoopGuard(on_loop="raise")``).
LIMIT_LOOP: Final = "loop"
COST_SOURCE_REGISTERED: Final = "registered"
COST_SOURCE_BUNDLED: Final = "bundled"
COST_SOURCE_UNPRICED: Final = "unpriced"
#: A call whose usage never arrived (a stream without usage), booked at an estimate
#: under a budget: its request and streamed text, else the model's learned cost,
#: else the session's ``call_estimate_usd``.
COST_SOURCE_ESTIMATED: Final = "estimated"
#: A call whose usage never arrived and that nothing could estimate: booked at $0,
#: not at a price (``techrevati.usage.missing`` is set too).
COST_SOURCE_NO_USAGE: Final = "no_usage"
#: A call whose usage priced above $1e6 (a hostile or broken usage block): booked at
#: $1e6, the amount its span, the session and every limit agree on.
COST_SOURCE_CLAMPED: Final = "clamped"
TOKEN_KIND_CACHE_READ: Final = "cache_read"
TOKEN_KIND_CACHE_WRITE: Final = "cache_write"
TOKEN_KIND_REASONING: Final = "reasoning"
OUTCOME_COMPLETED: Final = "completed"
OUTCOME_FAILED: Final = "failed"
OUTCOME_CANCELLED: Final = "cancelled"

#: Numeric breaker state for the gauge (a timeline panel maps these back to text).
BREAKER_STATE_VALUE: Final = {"closed": 0, "half_open": 1, "open": 2}

# --- span events ---------------------------------------------------------------
EVENT_HANDOFF: Final = "techrevati.handoff"
EVENT_POLICY: Final = "techrevati.policy.evaluated"
EVENT_QUALITY_GATE: Final = "techrevati.quality_gate.evaluated"
EVENT_LIMIT_HIT: Final = "techrevati.limit.hit"
EVENT_RECOVERY: Final = "techrevati.recovery.attempted"
EVENT_GUARDRAIL: Final = "techrevati.guardrail.violated"
#: A loop of tool calls detected (the fingerprints themselves are never exported).
EVENT_LOOP_DETECTED: Final = "techrevati.loop.detected"
#: A session passed its wrap-up threshold (``wrap_up_at``) of its cap or enforced budget.
EVENT_WRAP_UP: Final = "techrevati.session.wrap_up"

# --- loops and wrap-up (event attributes; LOOP_PATTERN is also a metric label) --
#: ``repeat``, ``cycle`` or ``interleaved`` (limits/loops.py).
LOOP_PATTERN: Final = "techrevati.loop.pattern"
#: The tools of a detected loop in call order (one for a repeat, 2-3 for a cycle).
LOOP_TOOLS: Final = "techrevati.loop.tools"
LOOP_REPEATS: Final = "techrevati.loop.repeats"
#: ``raise`` or ``warn``: what the next identical call meets.
LOOP_ACTION: Final = "techrevati.loop.action"
#: On a session span: loops detected in it.
SESSION_LOOPS: Final = "techrevati.session.loops"
WRAP_UP_AT: Final = "techrevati.wrap_up.at"
#: Which limit reached the threshold: LIMIT_ITERATIONS or LIMIT_BUDGET.
WRAP_UP_LIMIT: Final = "techrevati.wrap_up.limit"
WRAP_UP_FRACTION_LEFT: Final = "techrevati.wrap_up.fraction_left"

# --- metrics (OTel names; see PROMETHEUS_NAMES for the scraped spelling) -------
METRIC_TOKEN_USAGE: Final = "gen_ai.client.token.usage"
METRIC_OPERATION_DURATION: Final = "gen_ai.client.operation.duration"
METRIC_AGENT_DURATION: Final = "gen_ai.invoke_agent.duration"
METRIC_TOOL_DURATION: Final = "gen_ai.execute_tool.duration"
METRIC_COST: Final = "techrevati.cost.usd"
METRIC_SESSIONS: Final = "techrevati.sessions"
METRIC_TOOL_CALLS: Final = "techrevati.tool.calls"
METRIC_BREAKER_STATE: Final = "techrevati.breaker.state"
METRIC_LIMIT_HITS: Final = "techrevati.limit.hits"
METRIC_GUARDRAIL_VIOLATIONS: Final = "techrevati.guardrail.violations"
METRIC_RECOVERY_ATTEMPTS: Final = "techrevati.recovery.attempts"
#: Histogram of spent / limit at session end (sessions with a budget only).
METRIC_BUDGET_UTILIZATION: Final = "techrevati.budget.utilization"
#: Histogram of model calls admitted per session.
METRIC_SESSION_ITERATIONS: Final = "techrevati.session.iterations"
#: Counter of cache-read, cache-write and reasoning tokens (label TOKEN_KIND).
METRIC_TOKEN_DETAIL: Final = "techrevati.token.detail"
#: Counters of model calls whose response had no usage, and of calls of unpriced models.
METRIC_CALLS_WITHOUT_USAGE: Final = "techrevati.usage.missing"
METRIC_UNPRICED_CALLS: Final = "techrevati.cost.unpriced_calls"
#: Fleet limits: USD settled per scope, refusals per scope and limit kind, store errors.
METRIC_FLEET_COST: Final = "techrevati.fleet.cost"
METRIC_FLEET_REFUSALS: Final = "techrevati.fleet.refusals"
METRIC_FLEET_STORE_ERRORS: Final = "techrevati.fleet.store_errors"
#: Gauges per fleet scope, so alert rules can compute burn = spend rate / (budget / window):
#: the scope's budget (USD per window), its window length (s) and what the scope has spent
#: in its current window (USD, read from the store when metrics are collected).
METRIC_FLEET_BUDGET: Final = "techrevati.fleet.budget"
METRIC_FLEET_WINDOW: Final = "techrevati.fleet.window"
METRIC_FLEET_SPENT: Final = "techrevati.fleet.spent"
#: Counter of spans a process could not export, per pipeline and reason (EXPORT_REASON_*).
METRIC_EXPORT_SPANS_LOST: Final = "techrevati.export.spans_lost"
#: Counter of tool-call loops detected, per pattern, tool and agent (limits/loops.py).
METRIC_LOOP_DETECTIONS: Final = "techrevati.loop.detections"
#: GenAI conventions (development): model calls and tool calls per invoke_agent span.
METRIC_AGENT_INFERENCE_CALLS: Final = "gen_ai.invoke_agent.inference_calls"
METRIC_AGENT_TOOL_CALLS: Final = "gen_ai.invoke_agent.tool_calls"
#: Sessions opened under a shared session of another process, by the parent's role.
METRIC_REMOTE_SESSIONS: Final = "techrevati.session.remote_sessions"
#: Requests whose baggage named a shared session the store does not know.
METRIC_REMOTE_UNKNOWN: Final = "techrevati.session.remote_unknown"
#: Fleet finishes (settlements, clean-ups) dropped undelivered, per scope and FLEET_FINISH.
METRIC_FLEET_DROPPED: Final = "techrevati.fleet.dropped"
#: Fleet windows whose keys vanished while in use (Redis evicted or lost them), per scope.
METRIC_FLEET_EVICTIONS: Final = "techrevati.fleet.evictions"

#: Explicit bucket advice from the GenAI conventions.
TOKEN_BUCKETS: Final = (
    1.0,
    4.0,
    16.0,
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262144.0,
    1048576.0,
    4194304.0,
    16777216.0,
    67108864.0,
)
DURATION_BUCKETS: Final = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)

#: Agent invocations (sessions) run for minutes, past DURATION_BUCKETS' last 81.92 s:
#: the boundaries opentelemetry-util-genai gives gen_ai.invoke_agent.duration, so
#: its series and ours share buckets and can be summed by le.
AGENT_DURATION_BUCKETS: Final = (
    0.1,
    0.2,
    0.4,
    0.8,
    1.6,
    3.2,
    6.4,
    12.8,
    25.6,
    51.2,
    102.4,
    204.8,
    409.6,
)

#: Bucket advice of the invoke_agent call-count histograms: 1 to 128, doubling.
CALL_COUNT_BUCKETS: Final = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)

#: Label sets allowed on metrics. Ids (session, trace, worker, project) never appear:
#: they are unbounded and would explode a time-series database.
INSTRUMENTATION_SCOPE: Final = "techrevati.runtime"

#: Budget utilisation (spent / limit) buckets: fine below and around 1.
UTILIZATION_BUCKETS: Final = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.5, 2.0, 5.0)
#: Model calls per session.
ITERATION_BUCKETS: Final = (1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
