"""Tests for techrevati.runtime.retry_policy (API contract §10)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import re
from dataclasses import FrozenInstanceError
from datetime import datetime
from typing import Any

import pytest

from techrevati.runtime import retry_policy
from techrevati.runtime.retry_policy import (
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

S = FailureScenario
R = RecoveryStep
E = EscalationPolicy

SAMPLES = 2000


class FailAt(RecoveryContext):
    """Simulates a failure at a fixed step index, as the original tests do."""

    def __init__(self, step: int | None) -> None:
        super().__init__()
        self.step = step
        self.hook_calls = 0

    def _fail_at_step(self) -> int | None:
        self.hook_calls += 1
        return self.step


# --- enums & data classes ----------------------------------------------------


def test_enum_values() -> None:
    assert [m.value for m in FailureScenario] == [
        "llm_timeout",
        "llm_error",
        "tool_execution_error",
        "context_overflow",
        "dependency_timeout",
        "memory_corruption",
        "provider_failure",
    ]
    assert [m.value for m in RecoveryStep] == [
        "retry_with_backoff",
        "retry_with_smaller_context",
        "switch_provider",
        "restart_agent",
        "clear_memory_cache",
        "reduce_tool_set",
        "escalate_to_human",
    ]
    assert [m.value for m in EscalationPolicy] == ["alert_human", "log_and_continue", "abort"]


def test_enums_are_str_enums_not_strenum() -> None:
    assert S.LLM_TIMEOUT == "llm_timeout"  # type: ignore[comparison-overlap]
    assert str(S.LLM_TIMEOUT) == "FailureScenario.LLM_TIMEOUT"
    assert json.dumps(R.SWITCH_PROVIDER) == '"switch_provider"'


def test_recovery_result_defaults_and_to_dict() -> None:
    result = RecoveryResult("recovered")
    assert result.to_dict() == {
        "outcome": "recovered",
        "steps_taken": 0,
        "recovered_steps": [],
        "remaining_steps": [],
        "reason": "",
    }
    other = RecoveryResult("recovered")
    result.recovered_steps.append("x")
    assert other.recovered_steps == []  # no shared mutable default


def test_recipe_and_event_are_frozen() -> None:
    with pytest.raises(FrozenInstanceError):
        recipe_for(S.LLM_TIMEOUT).max_attempts = 9  # type: ignore[misc]
    event = RecoveryEvent("succeeded", "llm_error", [], {}, "t")
    with pytest.raises(FrozenInstanceError):
        event.event_type = "failed"  # type: ignore[misc]
    assert set(event.to_dict()) == {"event_type", "scenario", "recipe_steps", "result", "timestamp"}


def test_retry_logger_has_null_handler() -> None:
    log = logging.getLogger("techrevati.runtime.retry")
    assert any(isinstance(h, logging.NullHandler) for h in log.handlers)


# --- recipes -----------------------------------------------------------------

EXPECTED_RECIPES = {
    S.LLM_TIMEOUT: ([R.RETRY_WITH_BACKOFF], 2, E.ALERT_HUMAN),
    S.LLM_ERROR: ([R.RETRY_WITH_BACKOFF, R.SWITCH_PROVIDER], 2, E.ALERT_HUMAN),
    S.TOOL_EXECUTION_ERROR: ([R.RESTART_AGENT], 1, E.LOG_AND_CONTINUE),
    S.CONTEXT_OVERFLOW: ([R.RETRY_WITH_SMALLER_CONTEXT, R.REDUCE_TOOL_SET], 1, E.ALERT_HUMAN),
    S.DEPENDENCY_TIMEOUT: ([R.RETRY_WITH_BACKOFF], 1, E.ALERT_HUMAN),
    S.MEMORY_CORRUPTION: ([R.CLEAR_MEMORY_CACHE, R.RESTART_AGENT], 1, E.ABORT),
    S.PROVIDER_FAILURE: ([R.SWITCH_PROVIDER, R.RETRY_WITH_BACKOFF], 2, E.ABORT),
}


@pytest.mark.parametrize("scenario", list(FailureScenario))
def test_recipe_table(scenario: FailureScenario) -> None:
    steps, max_attempts, policy = EXPECTED_RECIPES[scenario]
    recipe = recipe_for(scenario)
    assert recipe == RecoveryRecipe(scenario, steps, max_attempts, policy)
    assert len(recipe.steps) >= 1
    assert recipe.max_attempts >= 1


def test_recipes_cover_every_scenario() -> None:
    assert set(retry_policy._RECIPES) == set(FailureScenario)


def test_recipe_for_unknown_raises_key_error() -> None:
    with pytest.raises(KeyError):
        recipe_for("nope")  # type: ignore[arg-type]


def test_recipe_for_reads_registry_live(monkeypatch: pytest.MonkeyPatch) -> None:
    custom = RecoveryRecipe(S.LLM_TIMEOUT, [R.ESCALATE_TO_HUMAN], 5, E.ABORT)
    monkeypatch.setitem(retry_policy._RECIPES, S.LLM_TIMEOUT, custom)
    assert recipe_for(S.LLM_TIMEOUT) is custom
    ctx = RecoveryContext()
    for _ in range(5):
        assert attempt_recovery(S.LLM_TIMEOUT, ctx).recovered_steps == ["escalate_to_human"]
    assert attempt_recovery(S.LLM_TIMEOUT, ctx).outcome == "escalation_required"


# --- attempt_recovery ----------------------------------------------------------


def test_fresh_context_counts_zero() -> None:
    ctx = RecoveryContext()
    assert all(ctx.attempt_count(s) == 0 for s in FailureScenario)
    assert ctx.events == []
    assert ctx._fail_at_step() is None


def test_recovered_records_one_succeeded_event() -> None:
    ctx = RecoveryContext()
    result = attempt_recovery(S.LLM_ERROR, ctx)
    assert result == RecoveryResult(
        outcome="recovered",
        steps_taken=2,
        recovered_steps=["retry_with_backoff", "switch_provider"],
        remaining_steps=[],
        reason="",
    )
    assert ctx.attempt_count(S.LLM_ERROR) == 1
    [event] = ctx.events
    assert event.event_type == "succeeded"
    assert event.scenario == "llm_error"
    assert event.recipe_steps == ["retry_with_backoff", "switch_provider"]
    assert event.result == result.to_dict()
    stamp = datetime.fromisoformat(event.timestamp)
    assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert event.timestamp.endswith("+00:00")


def test_escalates_on_third_llm_timeout_call() -> None:
    ctx = RecoveryContext()
    assert attempt_recovery(S.LLM_TIMEOUT, ctx).outcome == "recovered"
    assert attempt_recovery(S.LLM_TIMEOUT, ctx).outcome == "recovered"
    third = attempt_recovery(S.LLM_TIMEOUT, ctx)
    assert third.outcome == "escalation_required"
    assert third.reason == "max attempts (2) exhausted for llm_timeout"
    assert "exhausted" in third.reason
    assert (third.steps_taken, third.recovered_steps, third.remaining_steps) == (0, [], [])
    # The escalated attempt does not bump the counter.
    assert ctx.attempt_count(S.LLM_TIMEOUT) == 2
    assert attempt_recovery(S.LLM_TIMEOUT, ctx).outcome == "escalation_required"
    assert ctx.attempt_count(S.LLM_TIMEOUT) == 2
    assert [e.event_type for e in ctx.events] == [
        "succeeded",
        "succeeded",
        "escalated",
        "escalated",
    ]


def test_counters_per_scenario_and_per_context() -> None:
    a, b = RecoveryContext(), RecoveryContext()
    attempt_recovery(S.TOOL_EXECUTION_ERROR, a)
    assert attempt_recovery(S.TOOL_EXECUTION_ERROR, a).outcome == "escalation_required"
    assert attempt_recovery(S.MEMORY_CORRUPTION, a).outcome == "recovered"
    assert attempt_recovery(S.TOOL_EXECUTION_ERROR, b).outcome == "recovered"
    assert a.attempt_count(S.TOOL_EXECUTION_ERROR) == 1
    assert a.attempt_count(S.MEMORY_CORRUPTION) == 1
    assert b.attempt_count(S.MEMORY_CORRUPTION) == 0


def test_events_property_is_copy() -> None:
    ctx = RecoveryContext()
    attempt_recovery(S.LLM_ERROR, ctx)
    ctx.events.clear()
    assert len(ctx.events) == 1


def test_partial_recovery_at_step_zero() -> None:
    ctx = FailAt(0)
    result = attempt_recovery(S.LLM_ERROR, ctx)
    assert result.outcome == "partial_recovery"
    assert result.steps_taken == 0
    assert result.recovered_steps == []
    assert result.remaining_steps == ["retry_with_backoff", "switch_provider"]
    assert [e.event_type for e in ctx.events] == ["failed"]
    assert ctx.attempt_count(S.LLM_ERROR) == 1


def test_partial_recovery_at_step_one_of_two() -> None:
    ctx = FailAt(1)
    result = attempt_recovery(S.CONTEXT_OVERFLOW, ctx)
    assert result.outcome == "partial_recovery"
    assert result.steps_taken == 1
    assert result.recovered_steps == ["retry_with_smaller_context"]
    assert result.remaining_steps == ["reduce_tool_set"]


def test_fail_index_past_last_step_recovers() -> None:
    result = attempt_recovery(S.CONTEXT_OVERFLOW, FailAt(2))
    assert result.outcome == "recovered"
    assert result.steps_taken == 2


def test_hook_called_once_per_non_escalated_attempt() -> None:
    ctx = FailAt(None)
    for _ in range(4):
        attempt_recovery(S.LLM_TIMEOUT, ctx)
    assert ctx.hook_calls == 2


def test_accepts_value_string() -> None:
    ctx = RecoveryContext()
    result = attempt_recovery("dependency_timeout", ctx)  # type: ignore[arg-type]
    assert result.outcome == "recovered"
    assert ctx.attempt_count(S.DEPENDENCY_TIMEOUT) == 1


# --- async -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_async_matches_sync_and_never_sleeps() -> None:
    calls: list[float] = []

    async def sleeper(delay: float) -> None:
        calls.append(delay)

    sync_ctx, async_ctx = RecoveryContext(), RecoveryContext()
    for scenario in [S.LLM_TIMEOUT, S.LLM_TIMEOUT, S.LLM_TIMEOUT, S.LLM_ERROR, S.PROVIDER_FAILURE]:
        expected = attempt_recovery(scenario, sync_ctx)
        got = await aattempt_recovery(scenario, async_ctx, sleeper=sleeper)
        assert got == expected
        assert async_ctx.attempt_count(scenario) == sync_ctx.attempt_count(scenario)
    assert [e.event_type for e in async_ctx.events] == [e.event_type for e in sync_ctx.events]
    assert calls == []


@pytest.mark.asyncio
async def test_async_partial_and_default_sleeper() -> None:
    ctx = FailAt(1)
    result = await aattempt_recovery(S.MEMORY_CORRUPTION, ctx)
    assert result.outcome == "partial_recovery"
    assert result.recovered_steps == ["clear_memory_cache"]
    assert result.remaining_steps == ["restart_agent"]


def test_sleeper_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        asyncio.run(aattempt_recovery(S.LLM_ERROR, RecoveryContext(), asyncio.sleep))  # type: ignore[call-arg]


# --- classify_exception ---------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        # 1. TimeoutError instances, whatever the message.
        (TimeoutError(), S.LLM_TIMEOUT),
        (asyncio.TimeoutError("503 tool error"), S.LLM_TIMEOUT),  # noqa: UP041
        # 2. timeout text
        (Exception("Request Timeout"), S.LLM_TIMEOUT),
        (Exception("connection timed out"), S.LLM_TIMEOUT),
        (ConnectionError("read timed out"), S.LLM_TIMEOUT),
        # 3. rate limits are LLM_ERROR
        (Exception("Rate limit reached"), S.LLM_ERROR),
        (Exception("HTTP 429"), S.LLM_ERROR),
        (Exception("Too Many Requests"), S.LLM_ERROR),
        (Exception("429 context length exceeded"), S.LLM_ERROR),
        # 4. context overflow
        (Exception("This model's maximum context length is 8192"), S.CONTEXT_OVERFLOW),
        (Exception("token limit hit"), S.CONTEXT_OVERFLOW),
        (Exception("too many tokens"), S.CONTEXT_OVERFLOW),
        (Exception("code: context_length_exceeded"), S.CONTEXT_OVERFLOW),
        (ValueError("context length; memory corrupt"), S.CONTEXT_OVERFLOW),
        # 5./6. memory corruption
        (json.JSONDecodeError("Expecting value", "", 0), S.MEMORY_CORRUPTION),
        (Exception("state file is corrupt"), S.MEMORY_CORRUPTION),
        (Exception("Malformed payload"), S.MEMORY_CORRUPTION),
        (ConnectionResetError("malformed frame"), S.MEMORY_CORRUPTION),
        # 7. connection errors, including subclasses
        (ConnectionError("boom"), S.PROVIDER_FAILURE),
        (ConnectionRefusedError(), S.PROVIDER_FAILURE),
        (ConnectionResetError("tool error"), S.PROVIDER_FAILURE),
        # 8. provider text
        (Exception("Connection refused"), S.PROVIDER_FAILURE),
        (Exception("connection reset by peer"), S.PROVIDER_FAILURE),
        (Exception("HTTP 503"), S.PROVIDER_FAILURE),
        (Exception("502"), S.PROVIDER_FAILURE),
        (Exception("Service Unavailable"), S.PROVIDER_FAILURE),
        (Exception("bad gateway"), S.PROVIDER_FAILURE),
        # 9. auth
        (Exception("401"), S.PROVIDER_FAILURE),
        (Exception("Unauthorized"), S.PROVIDER_FAILURE),
        (Exception("authentication failed for tool"), S.PROVIDER_FAILURE),
        # 10. tool errors need "tool" plus "error"/"failed"
        (Exception("Tool search failed"), S.TOOL_EXECUTION_ERROR),
        (RuntimeError("tool raised an error upstream"), S.TOOL_EXECUTION_ERROR),
        (Exception("tool"), S.LLM_ERROR),
        # 11. dependency
        (Exception("upstream is down"), S.DEPENDENCY_TIMEOUT),
        (Exception("Downstream hiccup"), S.DEPENDENCY_TIMEOUT),
        (Exception("dependency missing"), S.DEPENDENCY_TIMEOUT),
        (Exception("external service said no"), S.DEPENDENCY_TIMEOUT),
        (Exception("dependent job"), S.DEPENDENCY_TIMEOUT),
        # 12. fallback
        (Exception("unknown error"), S.LLM_ERROR),
        (RuntimeError("boom"), S.LLM_ERROR),
        (Exception(), S.LLM_ERROR),
    ],
)
def test_classify_exception(error: Exception, expected: FailureScenario) -> None:
    assert classify_exception(error) is expected


# --- backoff_delay -------------------------------------------------------------


def test_backoff_none_exact() -> None:
    assert backoff_delay(0, jitter=False) == 1.0
    assert backoff_delay(1, jitter=False) == 2.0
    assert backoff_delay(3, jitter="none") == 8.0
    assert backoff_delay(10, jitter="none", cap=60.0) == 60.0
    assert backoff_delay(2, base=3.0, jitter="none") == 9.0


def test_backoff_none_huge_attempt_is_capped() -> None:
    assert backoff_delay(5000, jitter="none", cap=30.0) == 30.0


def test_backoff_full_bounds() -> None:
    rng_state = random.getstate()
    values = [backoff_delay(3, jitter="full") for _ in range(SAMPLES)]
    assert all(0.0 <= v <= 8.0 for v in values)
    assert max(values) > 6.0 and min(values) < 2.0  # actually spread, not constant
    random.setstate(rng_state)
    capped = [backoff_delay(20, jitter=True, cap=10.0) for _ in range(SAMPLES)]
    assert all(0.0 <= v <= 10.0 for v in capped)
    assert max(capped) > 8.0


def test_backoff_true_means_full() -> None:
    random.seed(1234)
    a = [backoff_delay(4, jitter=True) for _ in range(50)]
    random.seed(1234)
    b = [backoff_delay(4, jitter="full") for _ in range(50)]
    assert a == b


def test_backoff_equal_bounds() -> None:
    values = [backoff_delay(3, jitter="equal") for _ in range(SAMPLES)]
    assert all(4.0 <= v <= 8.0 for v in values)
    assert min(values) < 4.5 and max(values) > 7.5
    capped = [backoff_delay(30, jitter="equal", cap=10.0) for _ in range(SAMPLES)]
    assert all(5.0 <= v <= 10.0 for v in capped)


def test_backoff_decorrelated_bounds() -> None:
    values = [backoff_delay(0, base=2.0, prev_delay=4.0) for _ in range(SAMPLES)]
    assert all(2.0 <= v <= 12.0 for v in values)
    assert min(values) < 3.0 and max(values) > 11.0
    # attempt is ignored in this mode
    random.seed(7)
    x = backoff_delay(1, prev_delay=4.0)
    random.seed(7)
    y = backoff_delay(99, prev_delay=4.0)
    assert x == y


def test_backoff_decorrelated_without_prev_uses_base() -> None:
    values = [backoff_delay(5, base=2.0, jitter="decorrelated") for _ in range(SAMPLES)]
    assert all(2.0 <= v <= 6.0 for v in values)
    assert max(values) > 5.5


def test_backoff_decorrelated_capped() -> None:
    values = [backoff_delay(0, base=2.0, prev_delay=100.0, cap=10.0) for _ in range(SAMPLES)]
    assert all(2.0 <= v <= 10.0 for v in values)
    assert values.count(10.0) > SAMPLES // 2


def test_backoff_default_mode_is_decorrelated() -> None:
    random.seed(99)
    a = backoff_delay(3)
    random.seed(99)
    b = backoff_delay(3, jitter="decorrelated")
    assert a == b
    assert 2.0 <= a <= 6.0


@pytest.mark.parametrize("mode", ["bogus", "FULL", None, 3])
def test_backoff_unknown_mode(mode: object) -> None:
    with pytest.raises(ValueError, match="unknown jitter mode") as info:
        backoff_delay(1, jitter=mode)  # type: ignore[arg-type]
    assert repr(mode) in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "said"),
    [
        # base=-2 gave -8.0, cap=-1 gave -1 and cap=nan gave nan: sleep() raises on those.
        ({"base": -2}, "backoff_delay base must be a finite number > 0, got -2"),
        ({"base": 0}, "backoff_delay base must be a finite number > 0, got 0"),
        ({"base": math.inf}, "backoff_delay base must be a finite number > 0, got inf"),
        ({"cap": -1}, "backoff_delay cap must be a finite number >= 0, got -1"),
        ({"cap": math.nan}, "backoff_delay cap must be a finite number >= 0, got nan"),
        ({"prev_delay": -4.0}, "backoff_delay prev_delay must be a finite number >= 0, got -4.0"),
        ({"attempt": -1}, "backoff_delay attempt must be >= 0, got -1"),
    ],
)
@pytest.mark.parametrize("jitter", ["none", "full", "equal", "decorrelated"])
def test_backoff_refuses_a_value_that_gives_a_negative_or_nan_delay(
    kwargs: dict[str, Any], said: str, jitter: str
) -> None:
    arguments: dict[str, Any] = {"attempt": 3, "jitter": jitter, **kwargs}
    with pytest.raises(ValueError, match=re.escape(said)):
        backoff_delay(**arguments)


@pytest.mark.parametrize(
    ("kwargs", "said"),
    [
        ({"base": "2"}, "backoff_delay base must be a number of seconds, got '2'"),
        ({"cap": None}, "backoff_delay cap must be a number of seconds, got None"),
        ({"attempt": 2.5}, "backoff_delay attempt must be an int, got 2.5"),
    ],
)
def test_backoff_names_an_argument_of_the_wrong_type(kwargs: dict[str, Any], said: str) -> None:
    with pytest.raises(TypeError, match=re.escape(said)):
        backoff_delay(**{"attempt": 3, **kwargs})


def test_backoff_zero_cap_and_delay_are_valid() -> None:
    assert backoff_delay(3, jitter="none", cap=0) == 0
    assert backoff_delay(0, jitter="decorrelated", prev_delay=0.0, cap=0.0) == 0.0


# --- helpers -------------------------------------------------------------------


def test_next_provider() -> None:
    assert next_provider(["a", "b", "c"], "a") == "b"
    assert next_provider(["a", "b"], "b") == "a"
    assert next_provider(["a", "a"], "a") is None
    assert next_provider([], "a") is None
    assert next_provider(["x"], "a") == "x"


def test_smaller_context_budget() -> None:
    assert smaller_context_budget(10000) == 7500
    assert smaller_context_budget(10000, 0.5) == 5000
    assert smaller_context_budget(3, 0.5) == 1  # truncates, not rounds
    assert smaller_context_budget(0) == 0
    assert smaller_context_budget(10000, 1) == 10000


@pytest.mark.parametrize("reduction", [1.5, 0, -0.5, math.nan, math.inf])
def test_smaller_context_budget_refuses_a_reduction_outside_0_to_1(reduction: float) -> None:
    # 1.5 returned 15000: a "smaller" budget that is larger.
    said = f"smaller_context_budget reduction must be in (0, 1], got {reduction!r}"
    with pytest.raises(ValueError, match=re.escape(said)):
        smaller_context_budget(10000, reduction)


@pytest.mark.parametrize(
    ("args", "error", "said"),
    [
        ((-1,), ValueError, "current_chars must be >= 0, got -1"),
        ((10.5,), TypeError, "current_chars must be an int, got 10.5"),
        ((100, "0.5"), TypeError, "reduction must be a number, got '0.5'"),
    ],
)
def test_smaller_context_budget_names_a_bad_argument(
    args: tuple[Any, ...], error: type[Exception], said: str
) -> None:
    with pytest.raises(error, match=re.escape(said)):
        smaller_context_budget(*args)


def test_the_runtimes_refusals_are_llm_errors_whatever_their_messages_name() -> None:
    # A permission refusal names its tool: "set_timeout" read as a timeout,
    # "read_error_log" as a tool error, before refusals were told by their type.
    from techrevati.runtime.guardrails import GuardrailOutcome, GuardrailViolatedError
    from techrevati.runtime.permissions import PermissionOutcome
    from techrevati.runtime.telemetry.limits.errors import (
        MaxIterationsExceededError,
        PermissionDeniedError,
    )
    from techrevati.runtime.usage_tracking import BudgetExceededError

    for tool in ("set_timeout", "read_error_log", "upstream_sync"):
        outcome = PermissionOutcome(
            False,
            f"role 'r' has READ_ONLY but tool requires FULL_ACCESS: tool {tool!r}",
            "READ_ONLY",
            "FULL_ACCESS",
        )
        assert classify_exception(PermissionDeniedError(outcome)) is FailureScenario.LLM_ERROR
        violated = GuardrailViolatedError(
            GuardrailOutcome(False, "timed out"), guardrail="g", role="r", tool=tool, stage="pre"
        )
        assert classify_exception(violated) is FailureScenario.LLM_ERROR
    assert classify_exception(MaxIterationsExceededError(3)) is FailureScenario.LLM_ERROR
    assert classify_exception(BudgetExceededError(1.0, 2.0)) is FailureScenario.LLM_ERROR
