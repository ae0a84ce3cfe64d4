"""techrevati.runtime: safe, visible LLM agent loops on OpenTelemetry.

Every model call, tool call and session becomes a span carrying tokens, USD
cost, the permission decision and breaker state; span processors stop sessions
that go over budget or over their iteration cap.

Example::

    from techrevati.runtime import Orchestrator, UsageSnapshot

    orch = Orchestrator(role="writer", phase="draft", budget_usd=0.5, enforce_budget=True)
    with orch.session() as session:
        text, usage = session.run_turn(lambda: "hi", model="your-model",
                                       usage=UsageSnapshot(input_tokens=10, output_tokens=2))
    print(session.summary())
"""

from .agent_events import AgentEvent, AgentEventName, AgentEventStatus, AgentFailureClass
from .agent_lifecycle import (
    AgentRegistry,
    AgentStatus,
    AgentWorker,
    AgentWorkerEvent,
    InvalidTransitionError,
)
from .circuit_breaker import AsyncCircuitBreaker, CircuitBreaker, CircuitOpenError, CircuitState
from .decorators import agent_session, agent_turn, current_agent_session, tool_call
from .fleet import FleetLimits
from .guardrails import (
    AllowAllGuardrail,
    Guardrail,
    GuardrailOutcome,
    GuardrailStage,
    GuardrailViolatedError,
)
from .handoffs import Handoff
from .orchestrator import (
    AgentSession,
    AsyncOrchestrationSession,
    MaxIterationsExceededError,
    OrchestrationSession,
    Orchestrator,
    PermissionDeniedError,
    TurnTimeoutError,
)
from .permissions import (
    PermissionEnforcer,
    PermissionMode,
    PermissionOutcome,
    PermissionPolicy,
    RolePermissionConfig,
)
from .policy_engine import (
    PhaseContext,
    PolicyAction,
    PolicyActionData,
    PolicyCondition,
    PolicyEngine,
    PolicyRule,
)
from .quality_gate import QualityGate, QualityGateOutcome, QualityLevel
from .retry_policy import (
    EscalationPolicy,
    FailureScenario,
    RecoveryContext,
    RecoveryEvent,
    RecoveryRecipe,
    RecoveryResult,
    RecoveryStep,
    aattempt_recovery,
    attempt_recovery,
    backoff_delay,
    classify_exception,
    next_provider,
    recipe_for,
    smaller_context_budget,
)
from .sinks import (
    DEFAULT_RING_CAPACITY,
    EventSink,
    NoopEventSink,
    NoopUsageSink,
    RingBufferEventSink,
    RingBufferUsageSink,
    UsageSink,
)
from .telemetry.limits.errors import (
    FleetUnavailableError,
    LoopDetectedError,
    UnpricedModelError,
)
from .telemetry.limits.loops import LoopGuard
from .telemetry.limits.unwrap import limit_error
from .telemetry.setup.configure import TelemetryHandle, configure
from .usage_tracking import (
    PRICING_TABLE,
    BudgetExceededError,
    LimitSite,
    ModelPricing,
    UsageSnapshot,
    UsageTracker,
    has_pricing,
    load_pricing_from_file,
    register_pricing,
)
from .version import VERSION as __version__

__all__ = [
    "DEFAULT_RING_CAPACITY",
    "PRICING_TABLE",
    "AgentEvent",
    "AgentEventName",
    "AgentEventStatus",
    "AgentFailureClass",
    "AgentRegistry",
    "AgentSession",
    "AgentStatus",
    "AgentWorker",
    "AgentWorkerEvent",
    "AllowAllGuardrail",
    "AsyncCircuitBreaker",
    "AsyncOrchestrationSession",
    "BudgetExceededError",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "EscalationPolicy",
    "EventSink",
    "FailureScenario",
    "FleetLimits",
    "FleetUnavailableError",
    "Guardrail",
    "GuardrailOutcome",
    "GuardrailStage",
    "GuardrailViolatedError",
    "Handoff",
    "InvalidTransitionError",
    "LimitSite",
    "LoopDetectedError",
    "LoopGuard",
    "MaxIterationsExceededError",
    "ModelPricing",
    "NoopEventSink",
    "NoopUsageSink",
    "OrchestrationSession",
    "Orchestrator",
    "PermissionDeniedError",
    "PermissionEnforcer",
    "PermissionMode",
    "PermissionOutcome",
    "PermissionPolicy",
    "PhaseContext",
    "PolicyAction",
    "PolicyActionData",
    "PolicyCondition",
    "PolicyEngine",
    "PolicyRule",
    "QualityGate",
    "QualityGateOutcome",
    "QualityLevel",
    "RecoveryContext",
    "RecoveryEvent",
    "RecoveryRecipe",
    "RecoveryResult",
    "RecoveryStep",
    "RingBufferEventSink",
    "RingBufferUsageSink",
    "RolePermissionConfig",
    # OpenTelemetry set-up (beyond 0.1.0)
    "TelemetryHandle",
    "TurnTimeoutError",
    "UnpricedModelError",
    "UsageSink",
    "UsageSnapshot",
    "UsageTracker",
    "__version__",
    "aattempt_recovery",
    "agent_session",
    "agent_turn",
    "attempt_recovery",
    "backoff_delay",
    "classify_exception",
    "configure",
    "current_agent_session",
    "has_pricing",
    "limit_error",
    "load_pricing_from_file",
    "next_provider",
    "recipe_for",
    "register_pricing",
    "smaller_context_budget",
    "tool_call",
]
