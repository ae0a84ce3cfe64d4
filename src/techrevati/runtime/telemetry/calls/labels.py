"""Pre-built metric label sets and span names per model, so a turn allocates none.

Also the bound on every name we create from a user's string: span names
(``chat {model}``, ``invoke_agent {role}``, ``execute_tool {tool}``) and metric
label values (role, model, provider, tool, breaker names) carry at most
:data:`NAME_LIMIT` characters of each name, cut where they are made. A 10 MB role
name therefore makes a span name of 256 + 13 characters, not a 10 MB one held
in every span and metric series until export.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import semconv as sc

#: Most characters of a user-given name (role, model, provider, tool, breaker) in a
#: span name or a metric label value; a longer name is cut and ends with "…".
NAME_LIMIT = 256


def bounded_name(name: str) -> str:
    """``name``, or its first :data:`NAME_LIMIT` - 1 characters and "…" when longer.

    Example::

        >>> bounded_name("writer"), len(bounded_name("r" * 10_000_000))
        ('writer', 256)
    """
    if len(name) <= NAME_LIMIT:
        return name
    return name[: NAME_LIMIT - 1] + "…"


@dataclass(eq=False, slots=True)
class ModelLabels:
    """Label sets for one (provider, model, role) and the turn span's name."""

    base: dict[str, str]
    input: dict[str, str]
    output: dict[str, str]
    cost: dict[str, str]
    span_name: str
    detail: dict[str, dict[str, str]]
    #: ``cost`` as the cost counter's series key, made once (``CostTotals.add``).
    cost_key: frozenset[tuple[str, str]] = frozenset()


#: Labels for turns made outside any session.
GLOBAL_LABELS: dict[tuple[str, str], ModelLabels] = {}


def model_labels(
    cache: dict[tuple[str, str], ModelLabels], model: str, provider: str, role: str | None
) -> ModelLabels:
    """The label sets for ``model``, built once per cache (bounded: names come from users).

    Example::

        labels = model_labels({}, "gpt-4o", "openai", "writer")
        labels.span_name            # "chat gpt-4o"
    """
    key = (provider, model)
    found = cache.get(key)
    if found is not None:
        return found
    model, provider = bounded_name(model), bounded_name(provider)
    role = bounded_name(role) if role else role
    base = {sc.GEN_AI_OPERATION_NAME: sc.OP_CHAT}
    if model:  # an unnamed model is unknown, not "" (set on the span once the result names it)
        base[sc.GEN_AI_REQUEST_MODEL] = model
    if provider:
        base[sc.GEN_AI_PROVIDER_NAME] = provider
    if role:
        base[sc.GEN_AI_AGENT_NAME] = role
    cost = {k: v for k, v in base.items() if k != sc.GEN_AI_OPERATION_NAME}
    built = ModelLabels(
        base,
        {**base, sc.GEN_AI_TOKEN_TYPE: sc.TOKEN_TYPE_INPUT},
        {**base, sc.GEN_AI_TOKEN_TYPE: sc.TOKEN_TYPE_OUTPUT},
        cost,
        f"{sc.OP_CHAT} {model}" if model else sc.OP_CHAT,
        {
            kind: {**cost, sc.TOKEN_KIND: kind}
            for kind in (
                sc.TOKEN_KIND_CACHE_READ,
                sc.TOKEN_KIND_CACHE_WRITE,
                sc.TOKEN_KIND_REASONING,
            )
        },
    )
    built.cost_key = frozenset(cost.items())
    if len(cache) < 512:
        cache[key] = built
    return built
