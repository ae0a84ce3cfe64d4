"""Which names are one model, and which name a call whose response names another is booked under.

``same_model`` joined any name that was a string prefix of the other, so a
deployment named ``gpt-4o`` answered by ``gpt-4o-mini`` was booked as
``gpt-4o``, 16 times its price; only a version tag may join two names. The
expected names follow docs/prices.md ("Which name is priced").
"""

from __future__ import annotations

import pytest

from techrevati.runtime import ModelPricing, register_pricing
from techrevati.runtime.telemetry.readings.recognise import booked_model, same_model

# Another member of the family, never the same model (each was before).
FAMILY = [
    ("gpt-4o", "gpt-4o-mini-2024-07-18"),
    ("gpt-4o", "gpt-4o-mini"),
    ("gpt-4", "gpt-4o-2024-08-06"),
    ("gpt-4.1", "gpt-4.1-nano-2025-04-14"),
    ("gpt-5", "gpt-5-nano-2025-08-07"),
    ("o3", "o3-mini-2025-01-31"),
    ("claude-3-5-sonnet", "claude-3-5-sonnet-v2"),
]

# One model: a dated snapshot, a version tag, a route prefix or a Bedrock / Vertex id.
SAME = [
    ("gpt-4o", "gpt-4o-2024-08-06"),
    ("gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
    ("claude-3-5-sonnet-latest", "claude-3-5-sonnet-20241022"),
    ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
    ("claude-sonnet-4-5", "claude-sonnet-4-5@20250929"),
    ("us.anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet-20241022"),
    ("anthropic.claude-3-haiku-20240307-v1:0", "claude-3-haiku"),
    ("openai/gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
    ("GPT-4o", "gpt-4o-2024-08-06"),
]


@pytest.mark.parametrize(("a", "b"), FAMILY)
def test_another_family_member_is_not_the_same_model(a: str, b: str) -> None:
    assert not same_model(a, b)
    assert not same_model(b, a)


@pytest.mark.parametrize(("a", "b"), SAME)
def test_a_version_tag_or_route_makes_one_model(a: str, b: str) -> None:
    assert same_model(a, b)
    assert same_model(b, a)


@pytest.mark.parametrize(
    ("requested", "responded", "booked"),
    [
        # The model that answered, at its own price (each was booked as requested).
        ("gpt-4o", "gpt-4o-mini-2024-07-18", "gpt-4o-mini-2024-07-18"),
        ("gpt-4", "gpt-4o-2024-08-06", "gpt-4o-2024-08-06"),
        ("gpt-4.1", "gpt-4.1-nano-2025-04-14", "gpt-4.1-nano-2025-04-14"),
        ("gpt-5", "gpt-5-nano-2025-08-07", "gpt-5-nano-2025-08-07"),
        ("o3", "o3-mini-2025-01-31", "o3-mini-2025-01-31"),
        # A snapshot with a price of its own (twice gpt-4o's): the provider says so.
        ("gpt-4o", "gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
        # A snapshot at the price of the model asked for: booked as reserved.
        ("gpt-4o", "gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        # A deployment name, and a label with no price.
        ("prod-4o", "gpt-4o-2024-08-06", "gpt-4o-2024-08-06"),
        ("gpt-4o-mini", "acme/custom-label", "gpt-4o-mini"),
    ],
)
def test_booked_model_follows_what_answered(requested: str, responded: str, booked: str) -> None:
    assert booked_model(requested, responded, "openai") == booked


def test_a_price_registered_for_the_name_asked_for_wins_at_booking() -> None:
    # Asked before registering too: the answer kept per name pair follows the table.
    assert booked_model("prod-4o", "gpt-4o-2024-08-06", "openai") == "gpt-4o-2024-08-06"
    register_pricing("prod-4o", ModelPricing(5.0, 20.0))
    assert booked_model("prod-4o", "gpt-4o-2024-08-06", "openai") == "prod-4o"
    register_pricing("gpt-4o", ModelPricing(2.0, 8.0))  # your negotiated gpt-4o rate
    assert booked_model("gpt-4o", "gpt-4o-2024-05-13", "openai") == "gpt-4o"
    # A price you registered for the model that answered is yours too: it is booked.
    register_pricing("gpt-4o-mini-2024-07-18", ModelPricing(0.1, 0.4))
    assert booked_model("prod-4o", "gpt-4o-mini-2024-07-18", "openai") == "gpt-4o-mini-2024-07-18"
