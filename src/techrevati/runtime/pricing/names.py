"""Which registered price is "this model": the name rules, in one place.

A provider answers with a dated snapshot (``gpt-4o-mini-2024-07-18``), a
gateway with a route prefix (``openai/gpt-4o-mini``, ``azure/...``,
``models/gemini-2.5-flash``), and an instrumentation reports only that
response model. A price registered as ``gpt-4o-mini`` is meant for all of them.
This module turns the registered names into an index that answers, for one
model name, which registered name prices it (or None); the registry in
:mod:`techrevati.runtime.pricing` asks it only when the exact name is not
registered, and caches the answer per name.

The rules, in order (first match wins):

1. the name without its route prefix (everything up to the last ``/``; a Bedrock
   id's region and vendor and its ``-v2:0`` version, so
   ``us.anthropic.claude-3-5-sonnet-20241022-v2:0`` is
   ``claude-3-5-sonnet-20241022``) is registered, or a registered name has the
   same route-free form (``azure/gpt-4o-mini`` registered prices ``gpt-4o-mini``);
2. the name without its version tag (``-2024-07-18``, ``-20241022``,
   ``-latest``, ``@20241022``) is registered, as in 1; except when the price
   database knows the snapshot as a model of its own (``gpt-4o-2024-05-13``
   has its own price, so a registered ``gpt-4o`` does not price it);
3. the price database maps the name and an undated registered name to the same
   model (``claude-3.5-sonnet`` registered prices ``claude-3-5-sonnet-20241022``).

A registered name that carries a version tag prices only that snapshot (and its
route-prefixed forms): snapshots of one model can have different prices.

Example::

    >>> index = RegisteredNames(["gpt-4o-mini", "azure/o3"], lambda name, provider: None)
    >>> index.match("gpt-4o-mini-2024-07-18", ""), index.match("openai/gpt-4o-mini", "")
    ('gpt-4o-mini', 'gpt-4o-mini')
    >>> index.match("o3-latest", ""), index.match("gpt-4o", "")
    ('azure/o3', None)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

__all__ = [
    "BEDROCK_ROUTE",
    "Identify",
    "RegisteredNames",
    "route_free",
    "same_model",
    "split_route",
    "untagged",
]

#: ``(model, provider) -> the database's model id, or None``.
Identify = Callable[[str, str], str | None]

# A trailing version tag: an ISO date, a compact date, "-latest", or Vertex's
# "@<version>". Four-digit tags (gpt-4-0613, mistral-large-2411) are left to the
# database's aliases: on an unknown name they are as likely a size as a date.
_TAG = re.compile(r"(?:-\d{4}-\d{2}-\d{2}|-\d{8}|-latest|@[\w.-]+)$")

# An Amazon Bedrock model id: an optional cross-region prefix, the vendor, the
# vendor's model name, an optional "-v1:0" / ":0" version. The vendor list keeps
# dotted names such as "gpt-4.1" or "claude-3.5-sonnet" out of it.
_BEDROCK = re.compile(
    r"^(?:(?:us|eu|apac|global|us-gov|jp|au|ca)\.)?"
    r"(?:anthropic|meta|amazon|mistral|cohere|ai21|deepseek|openai|qwen|writer)\."
    r"(?P<model>.+?)(?:-v\d+(?::\d+)?|:\d+)?$"
)
#: The route a Bedrock id is given (the ``gen_ai.provider.name`` of Bedrock).
BEDROCK_ROUTE = "aws.bedrock"


def split_route(name: str) -> tuple[str, str]:
    """``("openai", "gpt-4o-mini")`` for ``"openai/gpt-4o-mini"``; ``("", name)`` without one.

    The route is the first segment of the prefix (``openrouter/anthropic/x`` →
    ``openrouter``), which is also the provider hint for the price database;
    a Bedrock id (``us.anthropic.claude-3-5-sonnet-20241022-v2:0``, also at the
    end of an inference-profile ARN) has the route ``aws.bedrock``.

    Example::

        >>> split_route("models/gemini-2.5-flash"), split_route("gpt-4o")
        (('models', 'gemini-2.5-flash'), ('', 'gpt-4o'))
        >>> split_route("anthropic.claude-3-haiku-20240307-v1:0")
        ('aws.bedrock', 'claude-3-haiku-20240307')
    """
    head, slash, tail = name.rpartition("/")
    route = head.split("/", 1)[0] if slash and tail else ""
    bare = tail if slash and tail else name
    bedrock = _BEDROCK.match(bare)
    if bedrock is not None:
        return route or BEDROCK_ROUTE, bedrock.group("model")
    return route, bare


def route_free(name: str) -> str:
    """The name without its route prefix.

    Example::

        >>> route_free("azure/gpt-4o-mini")
        'gpt-4o-mini'
    """
    return split_route(name)[1]


def untagged(name: str) -> str:
    """The name without a trailing version tag (or the name itself when it has none).

    Example::

        >>> untagged("claude-3-5-sonnet-20241022"), untagged("gpt-4o-latest"), untagged("o3")
        ('claude-3-5-sonnet', 'gpt-4o', 'o3')
    """
    stripped = _TAG.sub("", name)
    return stripped or name


def same_model(a: str, b: str) -> bool:
    """Whether two names are one model: equal once lowercased and stripped of a route
    prefix, a Bedrock id's region, vendor and version, and a trailing version tag.

    Only a version tag joins two names (``gpt-4o`` and ``gpt-4o-2024-08-06``,
    ``claude-3-5-sonnet-latest`` and ``-20241022``, ``@20250929``): a name that
    merely starts with another is another model of the family (``gpt-4o-mini``,
    ``gpt-4o`` after ``gpt-4``, ``o3-mini``). Two snapshots of one model are one
    model here even when they cost different amounts; the price says that.

    Example::

        >>> same_model("gpt-4o", "gpt-4o-2024-08-06"), same_model("gpt-4o", "gpt-4o-mini")
        (True, False)
        >>> same_model("us.anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet-latest")
        True
    """
    return a == b or untagged(route_free(a.lower())) == untagged(route_free(b.lower()))


def _preferred(current: str | None, candidate: str, natural: str) -> str:
    # Deterministic when several registered names share one form: the name
    # that *is* the form, else the shortest, else the first in sort order.
    if current is None:
        return candidate
    if (candidate == natural) != (current == natural):
        return candidate if candidate == natural else current
    return min(current, candidate, key=lambda key: (len(key), key))


class RegisteredNames:
    """The registered names, indexed for :meth:`match`; built once per table version.

    ``identify`` asks the price database which model a name is; it is called
    lazily (only when rules 1 and 2 do not decide), so a table is indexed
    without touching the database.
    """

    __slots__ = ("_aliases", "_by_form", "_identify", "_names")

    def __init__(self, names: Iterable[str], identify: Identify) -> None:
        self._names = tuple(names)
        self._identify = identify
        self._by_form: dict[str, str] = {}
        for name in self._names:
            form = route_free(name)
            self._by_form[form] = _preferred(self._by_form.get(form), name, form)
        self._aliases: dict[str, str] | None = None

    def match(self, model: str, provider: str) -> str | None:
        """The registered name that prices ``model`` (lowercased) at ``provider``, or None."""
        bare = route_free(model)
        found = self._by_form.get(bare)
        if found is not None:
            return found
        base = untagged(bare)
        if base != bare:
            found = self._by_form.get(base)
            if found is not None and not self._own_model(bare, base):
                return found
        # Registered names are identified without a provider, so the route-free
        # name is too: Bedrock's regional ids would never meet the maker's.
        asks = (
            ((model, provider),)
            if (bare, "") == (model, provider)
            else ((model, provider), (bare, ""))
        )
        for name, at in asks:
            own = self._identify(name, at)
            if own is not None:
                found = self._alias_index().get(own)
                if found is not None:
                    return found
        return None

    def _own_model(self, dated: str, base: str) -> bool:
        # The database names the snapshot a model of its own (its own price). Asked
        # without a provider: a provider's catalogue (Bedrock's regional ids) names
        # the same model differently from the model's maker.
        dated_id = self._identify(dated, "")
        return dated_id is not None and dated_id != self._identify(base, "")

    def _alias_index(self) -> dict[str, str]:
        aliases = self._aliases
        if aliases is None:
            aliases = {}
            for name in self._names:
                route, bare = split_route(name)
                if untagged(bare) != bare:
                    continue  # a registered snapshot prices only itself
                model_id = self._identify(bare, route)
                if model_id is not None:
                    aliases[model_id] = _preferred(aliases.get(model_id), name, model_id)
            self._aliases = aliases
        return aliases
