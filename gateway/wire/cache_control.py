"""Anthropic prompt-cache breakpoints removed from an OpenAI chat body, for OpenAI-wire upstreams.

The Anthropic translation keeps each `cache_control` where litellm passes it on to Anthropic:
on content parts, tool calls, tool messages and tools. OpenAI's own API rejects fields it
does not know, so a body bound for an OpenAI-wire upstream loses them first.

A body without breakpoints comes back as itself after one pass that reads keys and never
looks into text (about 0.15 µs a message). One with breakpoints is copied down to the
objects that carry them; the client's objects are never changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_KEY = "cache_control"


def without_cache_control(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """`body` with every breakpoint removed; `body` itself when it has none."""
    if not has_cache_control(body):
        return body
    stripped = dict(body)
    messages = body.get("messages")
    if isinstance(messages, list):
        stripped["messages"] = [_message(message) for message in messages]
    tools = body.get("tools")
    if isinstance(tools, list):
        stripped["tools"] = [_unmarked(tool) for tool in tools]
    return stripped


def has_cache_control(body: Mapping[str, Any]) -> bool:
    """Whether a breakpoint sits anywhere the translation puts one.

    A plain loop, not nested `any()` generators: it runs on every body the gateway built for
    an OpenAI-wire upstream, breakpoints or not.
    """
    key = _KEY
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        if key in message:
            return True
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and key in part:
                    return True
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                if isinstance(call, dict) and key in call:
                    return True
    tools = body.get("tools")
    return isinstance(tools, list) and any(isinstance(tool, dict) and key in tool for tool in tools)


def _unmarked(value: Any) -> Any:
    """A content part, tool call or tool without its breakpoint; the same object when it has none."""
    if isinstance(value, dict) and _KEY in value:
        return {key: item for key, item in value.items() if key != _KEY}
    return value


def _message(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    # A tool message carries its breakpoint on the message itself.
    message = {key: item for key, item in value.items() if key != _KEY}
    content = message.get("content")
    if isinstance(content, list):
        message["content"] = [_unmarked(part) for part in content]
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        message["tool_calls"] = [_unmarked(call) for call in calls]
    return message
