"""Tests for techrevati.runtime.guardrails (contract §5)."""

from __future__ import annotations

import contextlib
import typing
from dataclasses import FrozenInstanceError, dataclass, field
from typing import Any

import pytest

import techrevati.runtime.guardrails as guardrails_mod
from techrevati.runtime.guardrails import (
    AllowAllGuardrail,
    Guardrail,
    GuardrailOutcome,
    GuardrailStage,
    GuardrailViolatedError,
    run_post_checks,
    run_pre_checks,
)


@dataclass
class BlockTool(Guardrail):
    """Dataclass subclass with a required field before ``name`` (contract §5.3)."""

    blocked: str
    name: str = "block_tool"
    reason: str | None = "tool is blocked"

    def check_pre(self, *, role: str, tool: str) -> GuardrailOutcome:
        return GuardrailOutcome(tool != self.blocked, None if tool != self.blocked else self.reason)

    def check_post(self, value: Any, *, role: str, tool: str) -> GuardrailOutcome:
        return GuardrailOutcome(True)


@dataclass
class Counting(Guardrail):
    """Records every call; optionally refuses on one stage."""

    name: str = "counting"
    refuse_pre: bool = False
    refuse_post: bool = False
    calls: list[tuple[str, Any, str, str]] = field(default_factory=list)

    def check_pre(self, *, role: str, tool: str) -> GuardrailOutcome:
        self.calls.append(("pre", None, role, tool))
        return GuardrailOutcome(not self.refuse_pre, "pre refused" if self.refuse_pre else None)

    def check_post(self, value: Any, *, role: str, tool: str) -> GuardrailOutcome:
        self.calls.append(("post", value, role, tool))
        return GuardrailOutcome(not self.refuse_post, "post refused" if self.refuse_post else None)


@dataclass
class MaxLen(Guardrail):
    """Dataclass subclass using ``__post_init__``."""

    limit: int
    name: str = "max_len"
    normalised: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.normalised = max(0, self.limit)

    def check_pre(self, *, role: str, tool: str) -> GuardrailOutcome:
        return GuardrailOutcome(True)

    def check_post(self, value: Any, *, role: str, tool: str) -> GuardrailOutcome:
        if len(str(value)) > self.normalised:
            return GuardrailOutcome(False, f"output longer than {self.normalised}")
        return GuardrailOutcome(True)


class Unnamed:
    """Duck-typed guardrail without a ``name`` attribute."""

    def check_pre(self, *, role: str, tool: str) -> GuardrailOutcome:
        return GuardrailOutcome(False, "nope")

    def check_post(self, value: Any, *, role: str, tool: str) -> GuardrailOutcome:
        return GuardrailOutcome(False)


# -- types ---------------------------------------------------------------------


def test_module_all() -> None:
    assert sorted(guardrails_mod.__all__) == [
        "AllowAllGuardrail",
        "Guardrail",
        "GuardrailOutcome",
        "GuardrailStage",
        "GuardrailViolatedError",
        "run_post_checks",
        "run_pre_checks",
    ]


def test_stage_is_literal_alias_not_class() -> None:
    assert not isinstance(GuardrailStage, type)
    assert typing.get_origin(GuardrailStage) is typing.Literal
    assert typing.get_args(GuardrailStage) == ("pre", "post")


def test_outcome_defaults_and_frozen() -> None:
    o = GuardrailOutcome(True)
    assert o.reason is None
    assert GuardrailOutcome(False, "r") == GuardrailOutcome(allowed=False, reason="r")
    with pytest.raises(FrozenInstanceError):
        o.allowed = False  # type: ignore[misc]


def test_guardrail_is_protocol_not_dataclass() -> None:
    assert getattr(Guardrail, "_is_protocol", False) is True
    assert not hasattr(Guardrail, "__dataclass_fields__")
    assert "name" not in vars(Guardrail)  # no default for name


def test_dataclass_subclasses_construct() -> None:
    b = BlockTool("shell")
    assert (b.blocked, b.name) == ("shell", "block_tool")
    m = MaxLen(-5)
    assert m.normalised == 0
    assert MaxLen(3, name="custom").name == "custom"


def test_isinstance_checks() -> None:
    assert isinstance(AllowAllGuardrail(), Guardrail)
    assert isinstance(BlockTool("x"), Guardrail)
    assert not isinstance(Unnamed(), Guardrail)  # lacks ``name``
    assert not isinstance(object(), Guardrail)


def test_allow_all() -> None:
    g = AllowAllGuardrail()
    assert g.name == "allow_all"
    assert g.check_pre(role="r", tool="t") == GuardrailOutcome(allowed=True)
    assert g.check_post({"x": 1}, role="r", tool="t") == GuardrailOutcome(allowed=True)
    assert AllowAllGuardrail("custom").name == "custom"
    with pytest.raises(FrozenInstanceError):
        g.name = "other"  # type: ignore[misc]


# -- error ---------------------------------------------------------------------


def test_error_attributes_and_message() -> None:
    outcome = GuardrailOutcome(False, "secrets in output")
    err = GuardrailViolatedError(
        outcome, guardrail="pii", role="writer", tool="search", stage="post"
    )
    assert err.outcome is outcome
    assert (err.guardrail, err.role, err.tool, err.stage) == ("pii", "writer", "search", "post")
    assert str(err) == (
        "post guardrail 'pii' blocked tool 'search' for role 'writer': secrets in output; "
        "the tool already ran and its result was withheld"
    )


def test_error_message_without_reason() -> None:
    err = GuardrailViolatedError(
        GuardrailOutcome(False), guardrail="g", role="r", tool="t", stage="pre"
    )
    assert str(err) == "pre guardrail 'g' blocked tool 't' for role 'r': no reason provided"


def test_error_keyword_only() -> None:
    with pytest.raises(TypeError):
        GuardrailViolatedError(GuardrailOutcome(False), "g", "r", "t", "pre")  # type: ignore[misc]


# -- run_pre_checks / run_post_checks -----------------------------------------------


def test_empty_list_passes() -> None:
    run_pre_checks([], role="r", tool="t")
    run_post_checks([], "value", role="r", tool="t")


def test_pre_checks_all_pass_in_order() -> None:
    a, b = Counting(name="a"), Counting(name="b")
    run_pre_checks([a, b, AllowAllGuardrail()], role="writer", tool="search")
    assert a.calls == [("pre", None, "writer", "search")]
    assert b.calls == [("pre", None, "writer", "search")]


def test_pre_check_first_failure_short_circuits() -> None:
    first = Counting(name="first")
    blocker = BlockTool("shell")
    later = Counting(name="later", refuse_pre=True)
    with pytest.raises(GuardrailViolatedError) as info:
        run_pre_checks([first, blocker, later], role="coder", tool="shell")
    err = info.value
    assert err.stage == "pre"
    assert err.guardrail == "block_tool"
    assert (err.role, err.tool) == ("coder", "shell")
    assert err.outcome == GuardrailOutcome(False, "tool is blocked")
    assert "tool is blocked" in str(err)
    assert len(first.calls) == 1
    assert later.calls == []


def test_pre_checks_do_not_call_post() -> None:
    g = Counting()
    run_pre_checks([g], role="r", tool="t")
    assert [c[0] for c in g.calls] == ["pre"]


def test_post_checks_pass_value_and_short_circuit() -> None:
    ok = Counting(name="ok")
    limiter = MaxLen(3)
    later = Counting(name="later")
    run_post_checks([ok, limiter, later], "abc", role="r", tool="t")
    assert ok.calls == [("post", "abc", "r", "t")]
    assert later.calls == [("post", "abc", "r", "t")]
    with pytest.raises(GuardrailViolatedError) as info:
        run_post_checks([ok, limiter, later], "abcd", role="r", tool="t")
    assert info.value.stage == "post"
    assert info.value.guardrail == "max_len"
    assert str(info.value) == (
        "post guardrail 'max_len' blocked tool 't' for role 'r': output longer than 3; "
        "the tool already ran and its result was withheld"
    )
    assert len(later.calls) == 1  # not consulted the second time


def test_first_of_two_refusals_wins() -> None:
    a = Counting(name="a", refuse_post=True)
    b = Counting(name="b", refuse_post=True)
    with pytest.raises(GuardrailViolatedError, match="'a'"):
        run_post_checks([a, b], 1, role="r", tool="t")
    assert b.calls == []


def test_label_falls_back_to_type_name() -> None:
    with pytest.raises(GuardrailViolatedError) as info:
        run_pre_checks([Unnamed()], role="r", tool="t")  # type: ignore[list-item]
    assert info.value.guardrail == "Unnamed"
    assert str(info.value).endswith(": nope")
    with pytest.raises(GuardrailViolatedError) as info2:
        run_post_checks([Unnamed()], None, role="r", tool="t")  # type: ignore[list-item]
    assert info2.value.guardrail == "Unnamed"
    assert "no reason provided" in str(info2.value)


def test_missing_method_raises_attribute_error() -> None:
    class OnlyPost:
        name = "only_post"

        def check_post(self, value: Any, *, role: str, tool: str) -> GuardrailOutcome:
            return GuardrailOutcome(True)

    with pytest.raises(AttributeError):
        run_pre_checks([OnlyPost()], role="r", tool="t")  # type: ignore[list-item]


@pytest.mark.parametrize("stage", ["pre", "post"])
def test_stage_recorded(stage: str) -> None:
    g = Counting(refuse_pre=True, refuse_post=True)
    with pytest.raises(GuardrailViolatedError) as info:
        if stage == "pre":
            run_pre_checks([g], role="r", tool="t")
        else:
            run_post_checks([g], "v", role="r", tool="t")
    assert info.value.stage == stage
    assert str(info.value).startswith(f"{stage} guardrail 'counting'")
    assert f": {stage} refused" in str(info.value)
    ran = "; the tool already ran and its result was withheld"
    assert str(info.value).endswith(f"{stage} refused" + (ran if stage == "post" else ""))


# -- normalised tool names (issue 13, point 9) --------------------------------------


@pytest.mark.parametrize("tool", ["delete_db", "DELETE_DB", "delete_db ", "ｄｅｌｅｔｅ_ｄｂ"])
def test_guardrails_see_the_normalised_tool_name(tool: str) -> None:
    seen = Counting(name="seen")
    with pytest.raises(GuardrailViolatedError) as info:
        run_pre_checks([seen, BlockTool(blocked="delete_db")], role="r", tool=tool)
    assert seen.calls == [("pre", None, "r", "delete_db")]
    assert info.value.tool == tool  # the error quotes the name as given
    assert f"blocked tool '{tool}'" in str(info.value)
    run_post_checks([seen], "v", role="r", tool=tool)
    assert seen.calls[-1] == ("post", "v", "r", "delete_db")


def test_guardrail_helpers_reject_non_string_tool() -> None:
    with pytest.raises(TypeError, match="tool name must be a str, got 3"):
        run_pre_checks([AllowAllGuardrail()], role="r", tool=3)  # type: ignore[arg-type]


@dataclass
class _Answers:
    """A guardrail whose check_pre returns what it is given, or raises it."""

    answer: object
    name: str = "odd"

    def check_pre(self, *, role: str, tool: str) -> Any:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def check_post(self, value: Any, *, role: str, tool: str) -> Any:
        return GuardrailOutcome(allowed=True)


@pytest.mark.parametrize("answer", [None, True, {"allowed": True}])
def test_a_guardrail_that_answers_something_else_is_named(answer: object) -> None:
    with pytest.raises(TypeError) as refused:
        run_pre_checks([_Answers(answer)], role="r", tool="t")  # type: ignore[list-item]
    assert str(refused.value) == (
        f"guardrail 'odd': check_pre must return a GuardrailOutcome, "
        f"got {type(answer).__name__}: {answer!r}"
    )


@pytest.mark.parametrize(
    ("guard", "outcome"),
    [(None, "none"), (GuardrailOutcome(allowed=True), "passed"), (RuntimeError("down"), "error")],
)
def test_the_tool_span_says_what_the_guardrails_did(guard: object, outcome: str) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from techrevati.runtime import Orchestrator

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    rails = [] if guard is None else [_Answers(guard)]
    orch = Orchestrator(role="r", guardrails=rails, tracer_provider=provider)  # type: ignore[arg-type]
    ran: list[str] = []
    with orch.session() as session, contextlib.suppress(RuntimeError):
        session.run_tool("t", lambda: ran.append("t"))
    [span] = [s for s in exporter.get_finished_spans() if s.name == "execute_tool t"]
    assert span.attributes is not None
    assert span.attributes["techrevati.guardrail.outcome"] == outcome
    assert ran == ([] if outcome == "error" else ["t"])  # a raising guardrail fails closed


@pytest.mark.parametrize("bad", ["no", "false", 0, 1, None])
def test_an_outcome_takes_allowed_only_as_a_bool(bad: object) -> None:
    # allowed="no" is truthy: the tool behind a guardrail answering it ran.
    with pytest.raises(
        TypeError, match=f"GuardrailOutcome allowed must be True or False, got {bad!r}"
    ):
        GuardrailOutcome(allowed=bad)  # type: ignore[arg-type]


def test_an_outcome_reason_is_text_or_none() -> None:
    with pytest.raises(TypeError, match="GuardrailOutcome reason must be a str or None, got 5"):
        GuardrailOutcome(False, 5)  # type: ignore[arg-type]
    assert GuardrailOutcome(False).reason is None


def test_a_guardrail_answering_allowed_no_stops_the_tool() -> None:
    from techrevati.runtime import Orchestrator

    ran: list[str] = []

    class SaysNo:
        name = "says_no"

        def check_pre(self, *, role: str, tool: str) -> GuardrailOutcome:
            return GuardrailOutcome(allowed="no", reason="blocked")  # type: ignore[arg-type]

        def check_post(self, value: Any, *, role: str, tool: str) -> GuardrailOutcome:
            return GuardrailOutcome(True)

    refused = pytest.raises(TypeError, match="GuardrailOutcome allowed must be True or False")
    with Orchestrator(role="w", guardrails=[SaysNo()]).session() as session, refused:
        session.run_tool("shell", lambda: ran.append("shell"))
    assert ran == []


def test_a_guardrail_class_instead_of_an_instance_is_refused_at_construction() -> None:
    from techrevati.runtime import Orchestrator

    class NoShell(Guardrail):
        name = "no_shell"

        def check_pre(self, *, role: str, tool: str) -> GuardrailOutcome:
            return GuardrailOutcome(tool != "shell", "no shell")

        def check_post(self, value: Any, *, role: str, tool: str) -> GuardrailOutcome:
            return GuardrailOutcome(True)

    with pytest.raises(TypeError) as info:
        Orchestrator(role="c", guardrails=[NoShell])  # type: ignore[list-item]
    assert str(info.value) == "guardrails[0] is the class NoShell, not an instance; pass NoShell()"
    with pytest.raises(TypeError, match=r"guardrails\[1\] is the class AllowAllGuardrail"):
        Orchestrator(role="c", guardrails=[NoShell(), AllowAllGuardrail])  # type: ignore[list-item]


def test_a_post_check_refusal_says_the_tool_ran_and_its_result_was_withheld() -> None:
    from techrevati.runtime import Orchestrator

    class NoSecrets:
        name = "no_secrets"

        def check_pre(self, *, role: str, tool: str) -> GuardrailOutcome:
            return GuardrailOutcome(True)

        def check_post(self, value: Any, *, role: str, tool: str) -> GuardrailOutcome:
            return GuardrailOutcome("sk-" not in str(value), "result contains an API key")

    ran: list[str] = []
    orch = Orchestrator(role="coder", guardrails=[NoSecrets()])
    with orch.session() as session, pytest.raises(GuardrailViolatedError) as info:
        session.run_tool("read_env", lambda: ran.append("sk-123") or "sk-123")
    assert ran == ["sk-123"]
    assert str(info.value) == (
        "post guardrail 'no_secrets' blocked tool 'read_env' for role 'coder': result "
        "contains an API key; the tool already ran and its result was withheld"
    )
    # A pre-check refusal is before the tool ran: its message says nothing of a result.
    pre = GuardrailViolatedError(
        GuardrailOutcome(False, "no"), guardrail="g", role="r", tool="t", stage="pre"
    )
    assert str(pre) == "pre guardrail 'g' blocked tool 't' for role 'r': no"


def test_a_guardrail_that_raises_is_named_on_its_error() -> None:
    # A guardrail's own bug surfaced as a bare KeyError('k'), nothing saying whose.
    class Lookup(Guardrail):
        name = "lookup"

        def check_pre(self, *, role: str, tool: str) -> GuardrailOutcome:
            return GuardrailOutcome({"a": True}[tool])

        def check_post(self, value: Any, *, role: str, tool: str) -> GuardrailOutcome:
            return GuardrailOutcome({"a": True}[str(value)])

    with pytest.raises(KeyError) as pre:  # raised as it is: its type still catches it
        run_pre_checks([Lookup()], role="r", tool="k")
    assert pre.value.__notes__ == [
        "raised by guardrail 'lookup' in its pre-check of tool 'k' (role 'r'): the tool did not run"
    ]
    with pytest.raises(KeyError) as post:
        run_post_checks([Lookup()], "v", role="r", tool="a")
    assert post.value.__notes__ == [
        "raised by guardrail 'lookup' in its post-check of tool 'a' (role 'r'): the tool ran, "
        "and its result was withheld"
    ]


def test_a_class_whose_checks_are_static_still_works_as_a_guardrail() -> None:
    # Refusing every class (a guardrail's instance was meant) broke this, which worked.
    from techrevati.runtime import Orchestrator

    class Stateless:
        name = "stateless"

        @staticmethod
        def check_pre(*, role: str, tool: str) -> GuardrailOutcome:
            return GuardrailOutcome(tool != "shell", "no shell")

        @staticmethod
        def check_post(value: Any, *, role: str, tool: str) -> GuardrailOutcome:
            return GuardrailOutcome(True)

    with Orchestrator(role="c", guardrails=[Stateless]).session() as session:  # type: ignore[list-item]
        assert session.run_tool("read", lambda: 7) == 7
        with pytest.raises(GuardrailViolatedError):
            session.run_tool("shell", lambda: 1)


def test_an_error_a_guardrail_raises_again_carries_its_note_once() -> None:
    # One error object raised on every call (a cached one) got a note per call.
    cached = KeyError("k")

    class Cached(Guardrail):
        name = "cached"

        def check_pre(self, *, role: str, tool: str) -> GuardrailOutcome:
            raise cached

        def check_post(self, value: Any, *, role: str, tool: str) -> GuardrailOutcome:
            return GuardrailOutcome(True)

    for _ in range(3):
        with pytest.raises(KeyError):
            run_pre_checks([Cached()], role="r", tool="t")
    assert len(cached.__notes__) == 1
