"""Which cloud platform a client request goes to, and which model it calls, from its URL.

The ``anthropic`` package's ``AnthropicBedrock`` and ``AnthropicVertex``
clients (and their async twins) send a Messages call to the platform's own
endpoint. They rewrite it before the HTTP request is built: the model moves
from the JSON body into the URL, and Bedrock moves the ``stream`` flag into
the endpoint's name too. Neither the path ``/v1/messages`` nor the body's
``model`` is left to say that the request is a model call; the URL says it:

* Amazon Bedrock: ``/model/{model id}/invoke``, or
  ``/model/{model id}/invoke-with-response-stream`` for a stream (the id
  percent-encoded: an inference-profile ARN holds a ``/``);
* Google Vertex AI: ``/projects/{p}/locations/{l}/publishers/anthropic/models/{model}:rawPredict``,
  or ``:streamRawPredict`` for a stream. Token counting is the model
  ``count-tokens`` there, and no model call.

Example::

    >>> platform_call("/model/us.anthropic.claude-haiku-4-5-20251001-v1:0/invoke").model
    'us.anthropic.claude-haiku-4-5-20251001-v1:0'
    >>> platform_call("/v1/messages") is None
    True
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import unquote

from ...pricing.names import BEDROCK_ROUTE

__all__ = ["VERTEX_AI", "PlatformCall", "platform_call"]

#: ``gen_ai.provider.name`` of Google Vertex AI (GenAI semantic conventions).
VERTEX_AI = "gcp.vertex_ai"

# Bedrock's runtime endpoints, the model id between them and the endpoint's name.
_BEDROCK_MODEL = "/model/"
_BEDROCK_ENDS = {"/invoke": False, "/invoke-with-response-stream": True}
# Vertex's: a model (``{name}@{version}``) and a method, after its publisher's models.
_VERTEX_MODELS = "/models/"
_VERTEX_ENDS = {":rawPredict": False, ":streamRawPredict": True}
#: Vertex's token counting: a ``rawPredict`` of this pseudo-model, which runs none.
_VERTEX_COUNT_TOKENS = "count-tokens"


class PlatformCall(NamedTuple):
    """A model call sent to a cloud platform's endpoint: its provider, model, and stream."""

    provider: str
    model: str
    stream: bool


def platform_call(url: str) -> PlatformCall | None:
    """The Bedrock or Vertex model call ``url`` (a request path, maybe a full URL) makes.

    None for any other URL, and for Vertex's token counting.

    Example::

        >>> platform_call("/model/anthropic.claude-v2/invoke-with-response-stream")
        PlatformCall(provider='aws.bedrock', model='anthropic.claude-v2', stream=True)
        >>> vertex = "/projects/p/locations/us-east5/publishers/anthropic/models/"
        >>> platform_call(vertex + "claude-haiku-4-5@20251001:rawPredict")
        PlatformCall(provider='gcp.vertex_ai', model='claude-haiku-4-5@20251001', stream=False)
        >>> platform_call(vertex + "count-tokens:rawPredict") is None
        True
    """
    path = url.split("?", 1)[0].rstrip("/")
    for end, stream in _BEDROCK_ENDS.items():
        if path.endswith(end):
            return _bedrock(path[: -len(end)], stream)
    for end, stream in _VERTEX_ENDS.items():
        if path.endswith(end):
            return _vertex(path[: -len(end)], stream)
    return None


def _bedrock(head: str, stream: bool) -> PlatformCall | None:
    # The first "/model/": an ARN's own "/" (decoded, in an HTTP request's path) follows it.
    start = head.find(_BEDROCK_MODEL)
    if start < 0:
        return None
    model = unquote(head[start + len(_BEDROCK_MODEL) :])
    return PlatformCall(BEDROCK_ROUTE, model, stream) if model else None


def _vertex(head: str, stream: bool) -> PlatformCall | None:
    parent, found, model = head.rpartition(_VERTEX_MODELS)
    if not found or "/publishers/" not in parent:
        return None
    model = unquote(model)
    if not model or model == _VERTEX_COUNT_TOKENS:
        return None
    return PlatformCall(VERTEX_AI, model, stream)
