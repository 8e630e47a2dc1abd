"""What makes two requests the same question: cache keys and conversation fingerprints.

A key hashes the canonical JSON of every field that can change the answer: the endpoint, the
model alias, the messages (or prompt, or input), tools, tool_choice, response_format, the
sampling parameters, seed, stop, logprobs, max tokens, and any field the gateway does not
know. Precision comes first: a field is left out only when it cannot change the answer
(transport and bookkeeping: `stream`, `stream_options`, `user`, `metadata`, `store`,
`service_tier`, the prompt-cache hints), and a value is normalised only when the API defines
it as the default (`temperature: 1` is the same request as no temperature).

The key also carries the team's namespace, a version of every later stage's config that can
change the answer, and the headers forwarded upstream, so a config change or another team
never meets an old or foreign entry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.pipeline import Request

# Bumped when the canonical form changes, so old entries simply stop matching.
_FORMAT = 1

# Fields that never change the answer: how it is delivered, who asked, billing and caching hints.
IGNORED_FIELDS = frozenset(
    {
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
    }
)
# Numbers the API assumes when the field is absent; floats so that 0 and 0.0 hash alike.
_FLOAT_DEFAULTS: Mapping[str, float] = {
    "temperature": 1.0,
    "top_p": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
}
_INT_DEFAULTS: Mapping[str, int] = {"n": 1}
# Booleans whose absence means this value (`logprobs` here is the chat flag; the legacy
# completions' integer `logprobs: 0` still asks for logprobs and stays in the key).
_BOOL_DEFAULTS: Mapping[str, bool] = {"logprobs": False, "echo": False, "parallel_tool_calls": True}


def exact_key(
    request: Request, namespace: str, version: str, *, forwarded: Mapping[str, str] | None = None
) -> str:
    """`xc:<namespace>:<digest>` for this request; `forwarded` are the client headers the
    gateway passes upstream, which can change the answer too."""
    material = [
        _FORMAT,
        request.endpoint,
        version,
        sorted((forwarded or {}).items()),
        canonical(request.body),
    ]
    return f"xc:{namespace}:{digest(material)}"


def deterministic(request: Request) -> bool:
    """Whether repeating the request should give the same answer: greedy sampling
    (temperature 0) or a fixed seed. Embeddings are always deterministic."""
    if request.endpoint == "embeddings":
        return True
    body = request.body
    seed = body.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        return True
    temperature = body.get("temperature")
    return _is_number(temperature) and temperature == 0


def context_fingerprint(request: Request, question: str | None = None) -> str:
    """A digest of everything that determines the answer except the text of the last user
    turn: the model alias, system prompt, earlier turns (assistant turns and tool results
    included), tools, tool_choice, response_format and the sampling parameters.

    Two requests with the same fingerprint ask their last question in the same conversation
    under the same settings, so only that question's text remains to compare. `question` is
    `last_user_text(request)` when the caller has it already.
    """
    body = canonical(request.body)
    if request.endpoint == "chat":
        messages = body.get("messages")
        if question is None:
            question = last_user_text(request)
        if isinstance(messages, list) and messages and question is not None:
            last = dict(messages[-1])
            last["content"] = _without_text(last.get("content"))
            body["messages"] = [*messages[:-1], last]
    elif request.endpoint == "completions" and isinstance(body.get("prompt"), str):
        body["prompt"] = ""
    return digest([_FORMAT, "context", request.endpoint, body])


def last_user_text(request: Request) -> str | None:
    """The text of the last message when it is a user turn made of text only (a string, or
    text parts joined by newlines); None for images, audio, files or tool results. For a
    legacy completion, its prompt when that is one string."""
    body = request.body
    if request.endpoint == "completions":
        prompt = body.get("prompt")
        return prompt if isinstance(prompt, str) else None
    if request.endpoint != "chat":
        return None
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if not isinstance(last, Mapping) or last.get("role") != "user":
        return None
    content = last.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        return None
    texts: list[str] = []
    for part in content:
        if (
            not isinstance(part, Mapping)
            or part.get("type") != "text"
            or not isinstance(part.get("text"), str)
        ):
            return None
        texts.append(part["text"])
    return "\n".join(texts)


def canonical(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body as it determines the answer: ignored fields and stated defaults left out."""
    out: dict[str, Any] = {}
    for name, value in body.items():
        if value is None or name in IGNORED_FIELDS:
            continue
        if name in _FLOAT_DEFAULTS and _is_number(value):
            value = float(value)
            if value == _FLOAT_DEFAULTS[name]:
                continue
        elif name in _INT_DEFAULTS and _is_number(value) and value == _INT_DEFAULTS[name]:
            continue
        elif name in _BOOL_DEFAULTS and value is _BOOL_DEFAULTS[name]:
            continue
        out[name] = value
    return out


def _without_text(content: Any) -> Any:
    """The last user turn's shape with its text taken out (part types, cache marks stay)."""
    if isinstance(content, str):
        return ""
    return [{k: v for k, v in part.items() if k != "text"} for part in content]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _plain(value: Any) -> Any:
    # A stage may hand over read-only mappings (`Request.replace` wraps the body).
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot key a {type(value).__name__}")


def digest(material: Any, *, size: int = 20) -> str:
    """A stable hex digest of JSON-able material (read-only mappings included), keys sorted."""
    data = orjson.dumps(material, default=_plain, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(data, digest_size=size).hexdigest()
