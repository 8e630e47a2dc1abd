"""Usage when the provider reported none: counted with tiktoken from what was sent and received.

It happens when a client hangs up mid-stream (the usage chunk never comes), when an
upstream breaks off, or when an upstream ignores `stream_options.include_usage`. The
client is charged for what was generated, never nothing. Counts are marked `estimated`.
Also here: the finish reasons of an answer, for traces.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from gateway.accounting.tokens import count_prompt, count_text
from gateway.pipeline import Request
from gateway.providers.base import Usage, sse_payloads

_FINISH = re.compile(rb'"finish_reason":\s*"([a-z_]+)"')


def estimate_usage(request: Request, generated: str) -> Usage:
    """The prompt as sent upstream, and the text generated so far."""
    return Usage(
        prompt_tokens=count_prompt(request.endpoint, request.model, request.body),
        completion_tokens=count_text(request.model, generated) if generated else 0,
        estimated=True,
    )


def streamed_text(pieces: Iterable[bytes]) -> str:
    """Every generated character in OpenAI-format SSE pieces: content, refusals, reasoning,
    tool-call names and arguments, completion text."""
    parts: list[str] = []
    for payload in sse_payloads(pieces):
        if not payload.startswith(b"{"):
            continue
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        for choice in chunk.get("choices") or ():
            if isinstance(choice, Mapping):
                _choice_text(choice.get("delta") or choice, parts)
    return "".join(parts)


def response_text(body: Mapping[str, Any]) -> str:
    """Every generated character of a non-streamed chat or text completion."""
    parts: list[str] = []
    for choice in body.get("choices") or ():
        if isinstance(choice, Mapping):
            _choice_text(choice.get("message") or choice, parts)
    return "".join(parts)


def _choice_text(message: Mapping[str, Any], parts: list[str]) -> None:
    for key in ("content", "text", "refusal", "reasoning_content"):
        value = message.get(key)
        if isinstance(value, str):
            parts.append(value)
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            for key in ("name", "arguments"):
                value = function.get(key)
                if isinstance(value, str):
                    parts.append(value)


def stream_finish_reasons(pieces: list[bytes]) -> list[str]:
    """Finish reasons near the end of a stream, found without parsing every chunk."""
    for piece in reversed(pieces[-4:]):
        found = _FINISH.findall(piece)
        if found:
            return [reason.decode() for reason in found]
    return []


def body_finish_reasons(body: Mapping[str, Any]) -> list[str]:
    return [
        str(choice["finish_reason"])
        for choice in body.get("choices") or ()
        if isinstance(choice, Mapping) and choice.get("finish_reason")
    ]
