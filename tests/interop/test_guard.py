"""The client guard: a swallowed refusal is raised before the request leaves, once.

The producers that really swallow refusals (the Anthropic SDK's own tracing,
the OpenAI Agents SDK) run in test_support_table.py. Here the SDK call that
swallows is a small function whose module name is ``openai...`` (built with
``exec``), so the edges of binding a refusal to its SDK call can be tested
exactly; the client, the guard and the server are the real ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from fake_openai import FakeOpenAI, serve
from techrevati.runtime import BudgetExceededError
from techrevati.runtime.telemetry.limits import guard

COMPLETION = {
    "id": "c1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


def _sdk_function(source: str, name: str) -> Callable[..., Any]:
    """A function that runs as if it were code of the openai package."""
    namespace: dict[str, Any] = {"__name__": "openai._techrevati_test", "guard": guard}
    exec(source, namespace)
    function: Callable[..., Any] = namespace[name]
    return function


# Starts a "span" whose refusal it swallows (as the Anthropic SDK does), then sends.
SWALLOWING_CALL = _sdk_function(
    """
def call(send, error):
    try:
        guard.note_refusal(error)
        raise error
    except Exception:
        pass  # logged and dropped by the SDK
    return send()
""",
    "call",
)

# Starts a "span" whose refusal reaches the caller (as most instrumentations do).
PROPAGATING_CALL = _sdk_function(
    """
def call(send, error):
    guard.note_refusal(error)
    raise error
""",
    "call",
)

# An SDK call that starts no span and just sends.
PLAIN_CALL = _sdk_function("def call(send):\n    return send()\n", "call")


@pytest.fixture
def api() -> Iterator[FakeOpenAI]:
    with serve(FakeOpenAI(COMPLETION)) as fake:
        yield fake


@pytest.fixture
def guarded() -> Iterator[None]:
    assert guard.install_guard(["openai"]) == ("openai",)
    yield
    guard.uninstall_guard()


def _client(api: FakeOpenAI) -> openai.OpenAI:
    return openai.OpenAI(base_url=api.url, api_key="k", max_retries=2)


def _send(client: openai.OpenAI) -> Callable[[], Any]:
    return lambda: client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}]
    )


def test_swallowed_refusal_is_raised_before_the_request_leaves(
    api: FakeOpenAI, guarded: None
) -> None:
    client = _client(api)
    refusal = BudgetExceededError(budget_usd=0.01, current_cost_usd=0.02)
    with pytest.raises(BudgetExceededError) as raised:
        SWALLOWING_CALL(_send(client), refusal)
    assert raised.value is refusal  # our error itself, not APIConnectionError, no retries
    assert api.requests == []
    # Raised once: the next call of the same client goes out.
    _send(client)()
    assert len(api.requests) == 1


def test_without_the_guard_the_swallowed_refusal_is_lost(api: FakeOpenAI) -> None:
    guard.uninstall_guard()
    client = _client(api)
    SWALLOWING_CALL(_send(client), BudgetExceededError(budget_usd=0.01, current_cost_usd=0.02))
    assert len(api.requests) == 1
    guard._PENDING.set(None)


def test_a_refusal_that_reached_its_caller_never_hits_a_later_request(
    api: FakeOpenAI, guarded: None
) -> None:
    client = _client(api)
    refusal = BudgetExceededError(budget_usd=0.01, current_cost_usd=0.02)
    with pytest.raises(BudgetExceededError):
        PROPAGATING_CALL(_send(client), refusal)
    # The user caught it and goes on: an unrelated request, even through another
    # "SDK" frame, is sent.
    PLAIN_CALL(_send(client))
    assert len(api.requests) == 1
    assert guard._PENDING.get() is None


def test_refusal_outside_any_sdk_call_is_not_kept() -> None:
    guard.note_refusal(RuntimeError("refused"))
    assert guard._PENDING.get() is None
    with pytest.raises(TypeError, match="needs an exception"):
        guard.note_refusal("refused")  # type: ignore[arg-type]


def test_async_tasks_do_not_see_each_others_refusals(api: FakeOpenAI, guarded: None) -> None:
    client = openai.AsyncOpenAI(base_url=api.url, api_key="k", max_retries=0)
    refusal = BudgetExceededError(budget_usd=0.01, current_cost_usd=0.02)
    swallow_async = _sdk_function(
        """
async def call(send, error, ready, go):
    try:
        guard.note_refusal(error)
        raise error
    except Exception:
        pass
    ready.set()
    await go.wait()   # another task sends meanwhile
    return await send()
""",
        "call",
    )

    async def send() -> Any:
        return await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )

    async def main() -> tuple[BaseException | None, Any]:
        ready, go = asyncio.Event(), asyncio.Event()
        refused = asyncio.create_task(swallow_async(send, refusal, ready, go))
        await ready.wait()
        other = await send()  # a different task: sent
        go.set()
        try:
            await refused
        except BudgetExceededError as exc:
            return exc, other
        return None, other

    error, other = asyncio.run(main())
    assert error is refusal
    assert other.choices[0].message.content == "hi"
    assert len(api.requests) == 1


def test_install_is_idempotent_and_uninstall_restores() -> None:
    from openai._base_client import BaseClient

    guard.uninstall_guard()
    original = BaseClient.__dict__["_build_request"]
    try:
        assert guard.install_guard() == ("openai", "anthropic")
        patched = BaseClient.__dict__["_build_request"]
        assert patched is not original and guard.is_installed("openai")
        guard.install_guard()
        assert BaseClient.__dict__["_build_request"] is patched
        with pytest.raises(ValueError, match="unknown client package 'cohere'"):
            guard.install_guard(["cohere"])
    finally:
        guard.uninstall_guard()
    assert BaseClient.__dict__["_build_request"] is original
    assert not guard.is_installed("openai")
