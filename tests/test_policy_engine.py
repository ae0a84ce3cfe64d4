"""Tests for techrevati.runtime.policy_engine (API contract §8)."""

from __future__ import annotations

import logging
from dataclasses import FrozenInstanceError

import pytest

from techrevati.runtime.policy_engine import (
    AgentFailed,
    AllAgentsComplete,
    And,
    CostExceeded,
    GateBelow,
    Or,
    PhaseCompleted,
    PhaseContext,
    PolicyAction,
    PolicyActionData,
    PolicyCondition,
    PolicyEngine,
    PolicyRule,
    QualityAt,
    RetryExhausted,
    TimedOut,
)
from techrevati.runtime.quality_gate import QualityLevel


class _Const(PolicyCondition):
    """A condition with a fixed answer that counts how often it was asked."""

    def __init__(self, value: bool) -> None:
        self.value = value
        self.calls = 0

    def matches(self, ctx: PhaseContext) -> bool:
        self.calls += 1
        return self.value

    def __repr__(self) -> str:
        return f"_Const({self.value})"


def _rule(name: str, cond: PolicyCondition, priority: int = 50) -> PolicyRule:
    return PolicyRule(name, cond, [PolicyActionData(PolicyAction.NOTIFY, {"rule": name})], priority)


# --- PhaseContext ------------------------------------------------------------


def test_phase_context_defaults() -> None:
    ctx = PhaseContext()
    assert ctx.phase == ""
    assert ctx.quality_level is None
    assert ctx.gate_score == 0.0
    assert ctx.gate_threshold == 0.0
    assert ctx.completed_roles == set()
    assert ctx.failed_roles == set()
    assert ctx.all_roles == set()
    assert ctx.elapsed_seconds == 0.0
    assert ctx.retry_exhausted_scenarios == set()
    assert ctx.phase_completed is False
    assert ctx.total_cost_usd == 0.0


def test_phase_context_sets_not_shared() -> None:
    a, b = PhaseContext(), PhaseContext()
    a.failed_roles.add("x")
    assert b.failed_roles == set()


def test_base_condition_not_implemented() -> None:
    with pytest.raises(NotImplementedError):
        PolicyCondition().matches(PhaseContext())


def test_policy_logger_has_null_handler() -> None:
    log = logging.getLogger("techrevati.runtime.policy")
    assert any(isinstance(h, logging.NullHandler) for h in log.handlers)
    assert log.propagate is True


# --- conditions --------------------------------------------------------------


def test_and_all_must_match() -> None:
    ctx = PhaseContext()
    assert And([_Const(True), _Const(True)]).matches(ctx) is True
    assert And([_Const(True), _Const(False)]).matches(ctx) is False


def test_and_empty_matches() -> None:
    assert And([]).matches(PhaseContext()) is True


def test_or_any_matches() -> None:
    ctx = PhaseContext()
    assert Or([_Const(False), _Const(True)]).matches(ctx) is True
    assert Or([_Const(False), _Const(False)]).matches(ctx) is False


def test_or_empty_does_not_match() -> None:
    assert Or([]).matches(PhaseContext()) is False


def test_quality_at() -> None:
    cond = QualityAt(QualityLevel.STANDARD)
    assert cond.level is QualityLevel.STANDARD
    assert cond.matches(PhaseContext(quality_level=QualityLevel.STANDARD)) is True
    assert cond.matches(PhaseContext(quality_level=QualityLevel.RELEASE)) is True
    assert cond.matches(PhaseContext(quality_level=QualityLevel.MINIMAL)) is False
    assert cond.matches(PhaseContext(quality_level=None)) is False


def test_phase_completed() -> None:
    assert PhaseCompleted().matches(PhaseContext(phase_completed=True)) is True
    assert PhaseCompleted().matches(PhaseContext(phase_completed=False)) is False


def test_agent_failed_with_role() -> None:
    cond = AgentFailed(role="coder")
    assert cond.role == "coder"
    assert cond.matches(PhaseContext(failed_roles={"coder", "qa"})) is True
    assert cond.matches(PhaseContext(failed_roles={"qa"})) is False
    assert cond.matches(PhaseContext()) is False


def test_agent_failed_without_role() -> None:
    for cond in (AgentFailed(), AgentFailed(role=None), AgentFailed(role="")):
        assert cond.matches(PhaseContext(failed_roles={"qa"})) is True
        assert cond.matches(PhaseContext()) is False


def test_gate_below_is_strict() -> None:
    cond = GateBelow(82.0)
    assert cond.threshold == 82.0
    assert cond.matches(PhaseContext(gate_score=81.9)) is True
    assert cond.matches(PhaseContext(gate_score=82.0)) is False
    assert cond.matches(PhaseContext(gate_score=90.0)) is False


def test_retry_exhausted_with_scenario() -> None:
    cond = RetryExhausted(scenario="llm_timeout")
    assert cond.scenario == "llm_timeout"
    assert cond.matches(PhaseContext(retry_exhausted_scenarios={"llm_timeout"})) is True
    assert cond.matches(PhaseContext(retry_exhausted_scenarios={"llm_error"})) is False


def test_retry_exhausted_without_scenario() -> None:
    cond = RetryExhausted()
    assert cond.scenario is None
    assert cond.matches(PhaseContext(retry_exhausted_scenarios={"llm_error"})) is True
    assert cond.matches(PhaseContext()) is False


def test_timed_out_is_strict() -> None:
    cond = TimedOut(3600)
    assert cond.seconds == 3600
    assert cond.matches(PhaseContext(elapsed_seconds=3600.5)) is True
    assert cond.matches(PhaseContext(elapsed_seconds=3600.0)) is False
    assert cond.matches(PhaseContext(elapsed_seconds=10.0)) is False


def test_all_agents_complete() -> None:
    cond = AllAgentsComplete()
    assert cond.matches(PhaseContext()) is True  # three empty sets
    done = PhaseContext(completed_roles={"a"}, failed_roles={"b"}, all_roles={"a", "b"})
    assert cond.matches(done) is True
    pending = PhaseContext(completed_roles={"a"}, all_roles={"a", "b"})
    assert cond.matches(pending) is False
    # Set *equality*: an unexpected extra role means "not complete".
    extra = PhaseContext(completed_roles={"a", "z"}, all_roles={"a"})
    assert cond.matches(extra) is False


def test_cost_exceeded_is_strict() -> None:
    cond = CostExceeded(5.0)
    assert cond.budget_usd == 5.0
    assert cond.matches(PhaseContext(total_cost_usd=5.01)) is True
    assert cond.matches(PhaseContext(total_cost_usd=5.0)) is False
    assert cond.matches(PhaseContext(total_cost_usd=0.0)) is False


def test_nested_conditions() -> None:
    cond = And([PhaseCompleted(), Or([QualityAt(QualityLevel.STRICT), GateBelow(10.0)])])
    assert cond.conditions[0].__class__ is PhaseCompleted
    assert cond.matches(PhaseContext(phase_completed=True, gate_score=5.0)) is True
    assert cond.matches(PhaseContext(phase_completed=True, gate_score=50.0)) is False
    assert cond.matches(PhaseContext(phase_completed=False, gate_score=5.0)) is False


def test_reprs() -> None:
    assert repr(QualityAt(QualityLevel.STANDARD)) == "QualityAt(STANDARD)"
    assert repr(PhaseCompleted()) == "PhaseCompleted()"
    assert repr(AgentFailed(role="x")) == "AgentFailed(role='x')"
    assert repr(AgentFailed()) == "AgentFailed(role=None)"
    assert repr(GateBelow(82.0)) == "GateBelow(82.0)"
    assert repr(RetryExhausted()) == "RetryExhausted(scenario=None)"
    assert repr(RetryExhausted("llm_error")) == "RetryExhausted(scenario='llm_error')"
    assert repr(TimedOut(3600)) == "TimedOut(3600s)"
    assert repr(AllAgentsComplete()) == "AllAgentsComplete()"
    assert repr(CostExceeded(5.0)) == "CostExceeded($5.0)"
    assert (
        repr(And([PhaseCompleted(), QualityAt(QualityLevel.STANDARD)]))
        == "And([PhaseCompleted(), QualityAt(STANDARD)])"
    )
    assert repr(Or([])) == "Or([])"


# --- actions and rules -------------------------------------------------------


def test_policy_action_values() -> None:
    assert {a.name: a.value for a in PolicyAction} == {
        "ADVANCE_PHASE": "advance_phase",
        "RETRY_AGENT": "retry_agent",
        "RETRY_PHASE": "retry_phase",
        "RECOVER_ONCE": "recover_once",
        "ESCALATE": "escalate",
        "STORE_GATE_FEEDBACK": "store_gate_feedback",
        "GENERATE_HANDOFF": "generate_handoff",
        "NOTIFY": "notify",
        "ABORT_PHASE": "abort_phase",
    }
    assert isinstance(PolicyAction.ESCALATE, str)
    assert PolicyAction.ESCALATE == "escalate"  # type: ignore[comparison-overlap]


def test_action_data_to_dict() -> None:
    assert PolicyActionData(PolicyAction.ADVANCE_PHASE).to_dict() == {"action": "advance_phase"}
    assert PolicyActionData(PolicyAction.ESCALATE, {}).to_dict() == {"action": "escalate"}
    assert PolicyActionData(PolicyAction.ESCALATE, {"reason": "x"}).to_dict() == {
        "action": "escalate",
        "params": {"reason": "x"},
    }


def test_action_data_frozen() -> None:
    data = PolicyActionData(PolicyAction.NOTIFY)
    with pytest.raises(FrozenInstanceError):
        data.action = PolicyAction.ESCALATE  # type: ignore[misc]


def test_rule_construction_and_default_priority() -> None:
    cond = PhaseCompleted()
    actions = [PolicyActionData(PolicyAction.ADVANCE_PHASE)]
    positional = PolicyRule("r", cond, actions)
    keyword = PolicyRule(name="r", condition=cond, actions=actions)
    assert positional == keyword
    assert positional.priority == 50
    assert PolicyRule("r", cond, actions, 7).priority == 7


# --- engine ------------------------------------------------------------------


def test_engine_sorts_by_priority_stable() -> None:
    rules = [
        _rule("b50", _Const(True)),
        _rule("a10", _Const(True), 10),
        _rule("c50", _Const(True)),
        _rule("d90", _Const(True), 90),
        _rule("e10", _Const(True), 10),
    ]
    engine = PolicyEngine(rules)
    assert [r.name for r in engine.rules] == ["a10", "e10", "b50", "c50", "d90"]
    actions = engine.evaluate(PhaseContext())
    assert [a.params for a in actions] == [
        {"rule": "a10"},
        {"rule": "e10"},
        {"rule": "b50"},
        {"rule": "c50"},
        {"rule": "d90"},
    ]


def test_engine_no_short_circuit_and_all_actions_in_order() -> None:
    first, skipped, last = _Const(True), _Const(False), _Const(True)
    multi = PolicyRule(
        "multi",
        first,
        [
            PolicyActionData(PolicyAction.STORE_GATE_FEEDBACK),
            PolicyActionData(PolicyAction.RETRY_PHASE),
        ],
        1,
    )
    engine = PolicyEngine(
        [
            multi,
            _rule("no", skipped, 2),
            PolicyRule("end", last, [PolicyActionData(PolicyAction.ESCALATE)], 3),
        ]
    )
    actions = engine.evaluate(PhaseContext())
    assert [a.action for a in actions] == [
        PolicyAction.STORE_GATE_FEEDBACK,
        PolicyAction.RETRY_PHASE,
        PolicyAction.ESCALATE,
    ]
    assert (first.calls, skipped.calls, last.calls) == (1, 1, 1)


def test_engine_nothing_matches_returns_empty() -> None:
    engine = PolicyEngine([_rule("no", _Const(False))])
    assert engine.evaluate(PhaseContext()) == []
    assert PolicyEngine([]).evaluate(PhaseContext()) == []


def test_engine_rules_is_copy() -> None:
    source = [_rule("x", _Const(True))]
    engine = PolicyEngine(source)
    copy = engine.rules
    copy.clear()
    source.append(_rule("y", _Const(True)))
    assert [r.name for r in engine.rules] == ["x"]
    assert engine.rules is not engine.rules
    assert len(engine.evaluate(PhaseContext())) == 1


def test_engine_rejects_non_rule() -> None:
    with pytest.raises(TypeError, match=r"PolicyRule.*item 1 is str"):
        PolicyEngine([_rule("ok", _Const(True)), "not a rule"])  # type: ignore[list-item]


def test_seed_usage() -> None:
    advance = PolicyRule(
        name="advance-on-quality",
        condition=And([PhaseCompleted(), QualityAt(QualityLevel.STANDARD)]),
        actions=[PolicyActionData(PolicyAction.ADVANCE_PHASE)],
    )
    engine = PolicyEngine([advance])
    ctx = PhaseContext(phase="build", phase_completed=True, quality_level=QualityLevel.STANDARD)
    assert engine.evaluate(ctx) == [PolicyActionData(PolicyAction.ADVANCE_PHASE)]
    ctx.quality_level = QualityLevel.MINIMAL
    assert engine.evaluate(ctx) == []


def test_bad_policy_input_is_refused_naming_it() -> None:
    """A NaN score or threshold compares false with everything: a rule would never fire."""
    import math

    from techrevati.runtime import Orchestrator
    from techrevati.runtime.quality_gate import QualityGate

    with pytest.raises(ValueError, match="GateBelow threshold must be a number"):
        GateBelow(math.nan)
    with pytest.raises(ValueError, match="CostExceeded budget_usd must be a number >= 0"):
        CostExceeded(-1)
    with pytest.raises(TypeError, match="TimedOut seconds must be a number, got 'x'"):
        TimedOut("x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="condition must be a PolicyCondition, got None"):
        PolicyRule("r", None, [])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="priority must be an int, got 'high'"):
        PolicyRule("r", GateBelow(1.0), [], priority="high")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="required_level must be a QualityLevel, got 'STRICT'"):
        QualityGate("STRICT")  # type: ignore[arg-type]
    engine = PolicyEngine([PolicyRule("low", GateBelow(50.0), [], 1)])
    with Orchestrator(role="w", policy_engine=engine).session() as session:
        with pytest.raises(ValueError, match="gate_score must be a number \\(not NaN\\), got nan"):
            session.evaluate_policy(gate_score=math.nan)
        with pytest.raises(TypeError, match="completed_roles must be a collection of role names"):
            session.evaluate_policy(completed_roles="abc")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["no", "false", 1, None])
def test_evaluate_policy_takes_phase_completed_only_as_a_bool(bad: object) -> None:
    from techrevati.runtime import Orchestrator

    # phase_completed="no" read as True: PhaseCompleted() matched and advance_phase was proposed.
    engine = PolicyEngine(
        [PolicyRule("adv", PhaseCompleted(), [PolicyActionData(PolicyAction.ADVANCE_PHASE)])]
    )
    with Orchestrator(role="w", policy_engine=engine).session() as session:
        with pytest.raises(TypeError, match=f"phase_completed must be True or False, got {bad!r}"):
            session.evaluate_policy(phase_completed=bad)  # type: ignore[arg-type]
        assert session.evaluate_policy(phase_completed=False) == []
