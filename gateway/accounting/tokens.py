"""Token counts made here, for a response that arrived without the provider's usage.

Some upstreams (a stream cut off early, an OpenAI-compatible server that ignores
`stream_options`) report no usage. A request must still be metered, so its prompt is
counted with tiktoken the way OpenAI documents it (its cookbook's method). The result is
an estimate (`Usage.estimated`): close for OpenAI's models, rougher for other providers.

Every function takes whatever JSON the request validator let through and never raises on
an odd shape: what is text is counted, anything else is skipped.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
import tiktoken

from gateway.providers.base import Endpoint

# Model families tokenised with o200k_base: the gpt-4o generation and everything after it.
_O200K_FAMILIES = ("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4")

# OpenAI's chat accounting: every message costs 3 tokens of framing, a `name` one more, and
# the reply is primed with 3 (<|start|>assistant<|message|>).
_PER_MESSAGE = 3
_PER_NAME = 1
_REPLY_PRIMING = 3

# Counts of long texts are remembered: a conversation sends its whole history again every
# turn, and tokenising it again would cost ~1 ms per 1k tokens each time. Keyed by a hash of
# the text, so the memo holds no prompt text; bounded, least recently used first out.
_MEMO_MIN_CHARS = 256
_MEMO_ENTRIES = 4096
_memo: OrderedDict[tuple[str, bytes], int] = OrderedDict()
_memo_lock = threading.Lock()


def encoding_name(model: str) -> str:
    """o200k_base for OpenAI's gpt-4o generation and later, cl100k_base for everything else.

    The provider prefix (`openai/`, `sim/`, ...) is ignored. For a model that is not
    OpenAI's (Claude, Llama, Gemini ...) cl100k_base is only an approximation: their own
    tokenisers are not available offline.
    """
    name = model.rsplit("/", 1)[-1].lower()
    return "o200k_base" if name.startswith(_O200K_FAMILIES) else "cl100k_base"


@functools.cache
def _encoding(name: str) -> tiktoken.Encoding:
    # Keyed by encoding name, not model name: two entries at most, however many models clients name.
    return tiktoken.get_encoding(name)


def encoding_for(model: str) -> tiktoken.Encoding:
    """The tiktoken encoding that counts `model`'s tokens (see `encoding_name`)."""
    return _encoding(encoding_name(model))


def count_text(model: str, text: str) -> int:
    """Tokens in `text`; special-token strings in user text are counted as plain text."""
    return _count(encoding_for(model), text)


def count_prompt(endpoint: Endpoint, model: str, body: Mapping[str, Any]) -> int:
    """Prompt tokens of an OpenAI-format request body, as the provider would bill them."""
    if not isinstance(body, Mapping):
        return 0
    enc = encoding_for(model)
    if endpoint == "chat":
        return _chat_prompt(enc, body)
    if endpoint == "completions":
        return _inputs(enc, body.get("prompt"))
    if endpoint == "embeddings":
        return _inputs(enc, body.get("input"))
    return 0


def count_tools(model: str, tools: Any) -> int:
    """Tokens a request's `tools` add to its prompt (0 for none)."""
    specs = _tool_specs(tools, nested=True)
    return _count(encoding_for(model), _json(specs)) if specs else 0


def message_tokens(model: str, message: Any) -> int:
    """Tokens one chat message adds to a prompt, its framing included: a chat prompt's count
    is `count_prompt("chat", model, {})` plus its tools' and its messages' counts."""
    return _PER_MESSAGE + _message_tokens(encoding_for(model), message)


def _count(enc: tiktoken.Encoding, text: str) -> int:
    if len(text) < _MEMO_MIN_CHARS:
        return len(enc.encode(text, disallowed_special=()))
    key = (enc.name, hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest())
    with _memo_lock:
        tokens = _memo.get(key)
        if tokens is not None:
            _memo.move_to_end(key)
            return tokens
    tokens = len(enc.encode(text, disallowed_special=()))
    with _memo_lock:
        _memo[key] = tokens
        if len(_memo) > _MEMO_ENTRIES:
            _memo.popitem(last=False)
    return tokens


def _chat_prompt(enc: tiktoken.Encoding, body: Mapping[str, Any]) -> int:
    total = _REPLY_PRIMING
    tools = _tool_specs(body.get("tools"), nested=True) + _tool_specs(body.get("functions"), nested=False)
    if tools:
        total += _count(enc, _json(tools))
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        total += _PER_MESSAGE + _message_tokens(enc, message)
    return total


def _message_tokens(enc: tiktoken.Encoding, message: Any) -> int:
    if not isinstance(message, Mapping):
        return 0
    total = 0
    role = message.get("role")
    if isinstance(role, str):
        total += _count(enc, role)
    total += _count(enc, content_text(message.get("content")))
    name = message.get("name")
    if isinstance(name, str):
        total += _PER_NAME + _count(enc, name)
    calls = message.get("tool_calls")
    functions = (
        [call.get("function") for call in calls if isinstance(call, Mapping)]
        if isinstance(calls, list)
        else []
    )
    functions.append(message.get("function_call"))  # the legacy single-call field
    for function in functions:
        if isinstance(function, Mapping):
            total += _count(enc, _text_or_json(function.get("name")))
            total += _count(enc, _text_or_json(function.get("arguments")))
    return total


def content_text(content: Any) -> str:
    """A string, or the text parts of a content array joined by newlines.

    Images, audio and files are billed by their own rules (image tiles, audio seconds) that
    a text count cannot know; they are left out, so such a prompt is under-counted.
    """
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts: list[str] = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, Mapping):
            text = part.get("text", part.get("refusal"))
            if isinstance(text, str):
                texts.append(text)
    return "\n".join(texts)


def _tool_specs(tools: Any, *, nested: bool) -> list[Any]:
    """Tool definitions as the model reads them: name, description and parameters.

    `tools` wraps each definition in `{"type": "function", "function": {...}}`; the legacy
    `functions` list holds the definitions themselves. Anything else is counted as it is.
    """
    if not isinstance(tools, list):
        return []
    specs: list[Any] = []
    for tool in tools:
        function = tool.get("function") if nested and isinstance(tool, Mapping) else tool
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            specs.append(
                {
                    "name": function["name"],
                    "description": str(function.get("description") or ""),
                    "parameters": function.get("parameters") or {},
                }
            )
        else:
            specs.append(tool)
    return specs


def _inputs(enc: tiktoken.Encoding, value: Any) -> int:
    """A completions prompt or embeddings input: a string, strings, token ids, or lists of ids.

    Token ids are counted as given: the provider bills the ids it receives, it does not
    decode and re-encode them.
    """
    if isinstance(value, str):
        return _count(enc, value)
    if not isinstance(value, list):
        return 0
    total = 0
    for item in value:
        if isinstance(item, str):
            total += _count(enc, item)
        elif _is_token_id(item):
            total += 1
        elif isinstance(item, list):
            total += _token_ids(item)
    return total


def _token_ids(items: Iterable[Any]) -> int:
    return sum(1 for item in items if _is_token_id(item))


def _is_token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text_or_json(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else _json(value)


def _json(value: Any) -> str:
    """Compact JSON with sorted keys, as the simulated provider counts tool definitions."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        # orjson refuses integers past 64 bits and Mapping types other than dict.
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
