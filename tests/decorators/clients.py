"""The decorated OpenAI calls the client tests share: one completion, one returned stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai

from techrevati.runtime.decorators import agent_turn

MESSAGES = [{"role": "user", "content": "what is RAG?"}]


def chat_turns(client: openai.OpenAI) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """``(ask, stream)``: ``@agent_turn`` functions calling ``client`` (gpt-4o-mini).

    ``ask`` returns the completion; ``stream`` returns the SDK's stream object
    (usage in its last chunk), so its turn lasts until the stream is consumed.
    """

    @agent_turn("gpt-4o-mini", provider="openai")
    def ask() -> Any:
        return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    @agent_turn("gpt-4o-mini", provider="openai")
    def stream() -> Any:
        return client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )

    return ask, stream
