"""Anthropic messages and content blocks → OpenAI chat messages, with Anthropic's own checks.

Also the small validators the request translation shares: each raises the
`InvalidRequest` Anthropic would, `"<path>: <problem>"` with `param=<path>`.

What maps to what:
- user `text`/`image` blocks → content parts (`image` as an `image_url`, base64 as a data URL);
- user `tool_result` → one `role: tool` message each, placed before the user's other content,
  since OpenAI needs tool messages right after the assistant message that called them;
- assistant `text` → `content`, `tool_use` → `tool_calls` (arguments as a JSON string);
- assistant `thinking`/`redacted_thinking` → dropped: they are the model's own earlier
  reasoning, which Anthropic itself strips from previous turns, and OpenAI chat has no slot
  for them;
- anything else (`document`, `search_result`, server-tool blocks ...) → 400 naming the block.

Prompt-cache breakpoints (`cache_control`) are kept where litellm looks for them when it
translates for Anthropic: on the content part (system, user and assistant text, images), the
tool call (`tool_use`) and the tool message (`tool_result`). A system prompt or assistant
message with a breakpoint on a text block becomes a list of text parts, one per block, since
a joined string has room for one breakpoint at most; without breakpoints nothing changes
shape. OpenAI-wire upstreams get the body with them removed (`gateway.wire.cache_control`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway.errors import InvalidRequest

# Blocks of one message that OpenAI takes as a single string are joined with a blank line,
# so they stay visibly apart.
_BLOCK_SEPARATOR = "\n\n"
_IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_ROLES = ("user", "assistant", "system")
_CACHE_TTLS = ("5m", "1h")


def invalid(path: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"{path}: {problem}", param=path)


def required(container: Mapping[str, Any], key: str, parent: str) -> Any:
    if key not in container:
        raise invalid(f"{parent}.{key}" if parent else key, "Field required")
    return container[key]


def obj(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(path, "Input should be an object")
    return value


def string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise invalid(path, "Input should be a valid string")
    return value


def boolean(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(path, "Input should be a valid boolean")
    return value


def number(value: object, path: str, *, maximum: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise invalid(path, "Input should be a valid number")
    if value < 0:
        raise invalid(path, "Input should be greater than or equal to 0")
    if value > maximum:
        raise invalid(path, f"Input should be less than or equal to {maximum:g}")
    return value


def join_text(texts: list[str]) -> str:
    return _BLOCK_SEPARATOR.join(texts)


def cache_control(block: Mapping[str, Any], path: str) -> dict[str, Any] | None:
    """The block's prompt-cache breakpoint, checked as Anthropic checks it; None if absent or null.

    Returned as a new object, so a stage that rewrites the outgoing body cannot reach into
    the client's.
    """
    value = block.get("cache_control")
    if value is None:
        return None
    path = f"{path}.cache_control"
    if not isinstance(value, dict):
        raise invalid(path, "Input should be an object or null")
    for key in value:
        if key not in ("type", "ttl"):
            raise invalid(f"{path}.{key}", "Extra inputs are not permitted")
    if required(value, "type", path) != "ephemeral":
        raise invalid(f"{path}.type", "Input should be 'ephemeral'")
    checked = {"type": "ephemeral"}
    if "ttl" in value:
        if value["ttl"] not in _CACHE_TTLS:
            raise invalid(f"{path}.ttl", "Input should be '5m' or '1h'")
        checked["ttl"] = value["ttl"]
    return checked


def with_breakpoint(item: dict[str, Any], cache_breakpoint: dict[str, Any] | None) -> dict[str, Any]:
    """`item` (a content part, tool call, message or tool) carrying the breakpoint, if there is one."""
    if cache_breakpoint is not None:
        item["cache_control"] = cache_breakpoint
    return item


def _text_parts(texts: list[tuple[str, dict[str, Any] | None]]) -> list[dict[str, Any]]:
    return [with_breakpoint({"type": "text", "text": text}, mark) for text, mark in texts if text]


def system_content(value: object, path: str) -> str | list[dict[str, Any]]:
    """A system prompt: a string, or a list of text blocks joined into one.

    With a cache breakpoint on any block, a list of text parts instead, one per non-empty
    block, each keeping its breakpoint.
    """
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise invalid(path, "Input should be a valid string or a list of text blocks")
    texts: list[tuple[str, dict[str, Any] | None]] = []
    for i, item in enumerate(value):
        block_path = f"{path}[{i}]"
        block = obj(item, block_path)
        if required(block, "type", block_path) != "text":
            raise invalid(f"{block_path}.type", "Input should be 'text'")
        text = string(required(block, "text", block_path), f"{block_path}.text")
        cache_breakpoint = cache_control(block, block_path)
        if cache_breakpoint is not None and not text:
            raise invalid(f"{block_path}.text", "cache_control cannot be set for empty text blocks")
        texts.append((text, cache_breakpoint))
    if all(mark is None for _, mark in texts):
        return join_text([text for text, _ in texts])
    return _text_parts(texts)


class ToolTurns:
    """Anthropic's tool-pairing rules, checked turn by turn.

    Consecutive messages with one role form one turn (Anthropic merges them). Each `tool_use`
    of an assistant turn needs a `tool_result` in the very next turn, which must be a user
    turn; each `tool_result` must answer a `tool_use` of the turn just before; and tool
    results come before any other content of their turn. OpenAI demands the same shape
    (tool messages right after the assistant message that called them), so checking here
    gives the client Anthropic's precise error instead of an upstream's vague one.
    """

    __slots__ = ("_answered", "_other_content", "_role", "_unanswered")

    def __init__(self) -> None:
        self._role: str | None = None
        self._unanswered: dict[str, int] = {}  # tool_use id → index of the message calling it
        self._answered: set[str] = set()
        self._other_content = False

    def begin(self, role: str) -> None:
        if role == self._role:
            return
        if self._unanswered and not (self._role == "assistant" and role == "user"):
            self._raise_unanswered()
        self._role = role
        self._answered = set()
        self._other_content = False

    def call(self, tool_use_id: str, index: int, path: str) -> None:
        if tool_use_id in self._unanswered:
            raise invalid(path, f"`tool_use` ids must be unique: {tool_use_id}")
        self._unanswered[tool_use_id] = index

    def answer(self, tool_use_id: str, path: str) -> None:
        """A `tool_result` for `tool_use_id`, the block at `path`."""
        if tool_use_id in self._answered:
            raise invalid(f"{path}.tool_use_id", f"duplicate `tool_result` for `tool_use_id`: {tool_use_id}")
        if tool_use_id not in self._unanswered:
            raise invalid(
                f"{path}.tool_use_id",
                f"unexpected `tool_use_id` found in `tool_result` blocks: {tool_use_id}. "
                "Each `tool_result` block must have a corresponding `tool_use` block in the previous message.",
            )
        if self._other_content:
            raise invalid(path, "`tool_result` blocks must come before any other content in a user turn")
        del self._unanswered[tool_use_id]
        self._answered.add(tool_use_id)

    def other_content(self) -> None:
        self._other_content = True

    def end(self) -> None:
        if self._unanswered:
            self._raise_unanswered()

    def _raise_unanswered(self) -> None:
        index = min(self._unanswered.values())
        raise invalid(
            f"messages[{index}]",
            "`tool_use` ids were found without `tool_result` blocks immediately after: "
            f"{', '.join(self._unanswered)}. "
            "Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
        )


def user_and_assistant_messages(value: object, turns: ToolTurns) -> list[dict[str, Any]]:
    """The `messages` list in OpenAI form, in order."""
    if not isinstance(value, list):
        raise invalid("messages", "Input should be a valid list")
    if not value:
        raise invalid("messages", "at least one message is required")
    chat: list[dict[str, Any]] = []
    for index, item in enumerate(value):
        path = f"messages[{index}]"
        message = obj(item, path)
        role = required(message, "role", path)
        if role not in _ROLES:
            raise invalid(f"{path}.role", "Input should be 'user', 'assistant' or 'system'")
        content = required(message, "content", path)
        final = index == len(value) - 1
        # A prefill (final assistant message) may be empty; every other message may not.
        if content in ("", []) and not (final and role == "assistant"):
            raise invalid(
                f"{path}.content",
                "all messages must have non-empty content except for the optional final assistant message",
            )
        turns.begin(role)
        if role == "system":
            chat.append({"role": "system", "content": system_content(content, f"{path}.content")})
        elif role == "user":
            chat.extend(_user_messages(content, path, turns))
        else:
            assistant = _assistant_message(content, index, turns)
            if assistant is not None:
                chat.append(assistant)
    turns.end()
    return chat


def _blocks(content: object, path: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(path, type, block) for each block of a message's content list."""
    if not isinstance(content, list):
        raise invalid(f"{path}.content", "Input should be a valid string or a list of content blocks")
    blocks = []
    for j, item in enumerate(content):
        block_path = f"{path}.content[{j}]"
        block = obj(item, block_path)
        kind = string(required(block, "type", block_path), f"{block_path}.type")
        blocks.append((block_path, kind, block))
    return blocks


def _unsupported(path: str, kind: str, role: str, supported: str) -> InvalidRequest:
    return invalid(
        f"{path}.type", f"'{kind}' blocks are not supported in {role} messages; supported: {supported}"
    )


def _user_messages(content: object, path: str, turns: ToolTurns) -> list[dict[str, Any]]:
    if isinstance(content, str):
        turns.other_content()
        return [{"role": "user", "content": content}]
    chat: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block_path, kind, block in _blocks(content, path):
        if kind == "tool_result":
            chat.append(_tool_message(block, block_path, turns))
            continue
        part: dict[str, Any]
        if kind == "text":
            part = {"type": "text", "text": _text(block, block_path)}
            parts.append(with_breakpoint(part, cache_control(block, block_path)))
        elif kind == "image":
            part = {"type": "image_url", "image_url": {"url": _image_url(block, block_path)}}
            parts.append(with_breakpoint(part, cache_control(block, block_path)))
        elif kind == "tool_use":
            raise invalid(f"{block_path}.type", "'tool_use' blocks can only appear in assistant messages")
        else:
            raise _unsupported(block_path, kind, "user", "text, image, tool_result")
        turns.other_content()
    if parts:
        chat.append({"role": "user", "content": parts})
    return chat


def _assistant_message(content: object, index: int, turns: ToolTurns) -> dict[str, Any] | None:
    path = f"messages[{index}]"
    if isinstance(content, str):
        return {"role": "assistant", "content": content} if content else None
    texts: list[tuple[str, dict[str, Any] | None]] = []
    tool_calls: list[dict[str, Any]] = []
    for block_path, kind, block in _blocks(content, path):
        if kind == "text":
            texts.append((_text(block, block_path), cache_control(block, block_path)))
        elif kind == "tool_use":
            call = _tool_call(block, block_path)
            turns.call(call["id"], index, f"{block_path}.id")
            tool_calls.append(call)
        elif kind in ("thinking", "redacted_thinking"):
            continue
        elif kind == "tool_result":
            raise invalid(f"{block_path}.type", "'tool_result' blocks can only appear in user messages")
        else:
            raise _unsupported(block_path, kind, "assistant", "text, tool_use, thinking, redacted_thinking")
    if not texts and not tool_calls:
        return None
    text: str | list[dict[str, Any]] | None = None
    if any(mark is not None for _, mark in texts):
        text = _text_parts(texts)
    elif texts:
        text = join_text([text for text, _ in texts])
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def _text(block: Mapping[str, Any], path: str) -> str:
    text = string(required(block, "text", path), f"{path}.text")
    if not text:
        raise invalid(f"{path}.text", "text content blocks must be non-empty")
    return text


def _image_url(block: Mapping[str, Any], path: str) -> str:
    source = obj(required(block, "source", path), f"{path}.source")
    kind = required(source, "type", f"{path}.source")
    if kind == "base64":
        media_type = required(source, "media_type", f"{path}.source")
        if media_type not in _IMAGE_MEDIA_TYPES:
            raise invalid(
                f"{path}.source.media_type",
                "Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'",
            )
        data = string(required(source, "data", f"{path}.source"), f"{path}.source.data")
        return f"data:{media_type};base64,{data}"
    if kind == "url":
        return string(required(source, "url", f"{path}.source"), f"{path}.source.url")
    if isinstance(kind, str):
        # `file` sources point into Anthropic's Files API, which no OpenAI upstream can read.
        raise invalid(
            f"{path}.source.type", f"'{kind}' image sources are not supported; supported: base64, url"
        )
    raise invalid(f"{path}.source.type", "Input should be a valid string")


def _tool_call(block: Mapping[str, Any], path: str) -> dict[str, Any]:
    call_id = string(required(block, "id", path), f"{path}.id")
    if not call_id:
        raise invalid(f"{path}.id", "String should have at least 1 character")
    name = string(required(block, "name", path), f"{path}.name")
    arguments = obj(required(block, "input", path), f"{path}.input")
    call = {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
    }
    return with_breakpoint(call, cache_control(block, path))


def _tool_message(block: Mapping[str, Any], path: str, turns: ToolTurns) -> dict[str, Any]:
    tool_use_id = string(required(block, "tool_use_id", path), f"{path}.tool_use_id")
    turns.answer(tool_use_id, path)
    cache_breakpoint = cache_control(block, path)
    content = block.get("content", "")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts = []
        for k, item in enumerate(content):
            inner_path = f"{path}.content[{k}]"
            inner = obj(item, inner_path)
            kind = string(required(inner, "type", inner_path), f"{inner_path}.type")
            if kind != "text":
                # An OpenAI tool message carries text only.
                raise invalid(
                    f"{inner_path}.type",
                    f"'{kind}' blocks are not supported in tool results; supported: text",
                )
            texts.append(string(required(inner, "text", inner_path), f"{inner_path}.text"))
            # The tool message's content is one string, so an inner breakpoint moves to the
            # end of the result: the cached prefix grows by the rest of it, never shrinks.
            inner_breakpoint = cache_control(inner, inner_path)
            cache_breakpoint = cache_breakpoint or inner_breakpoint
        text = join_text(texts)
    else:
        raise invalid(f"{path}.content", "Input should be a valid string or a list of content blocks")
    # OpenAI tool messages have no error flag; the model learns of the failure from the text.
    if boolean(block.get("is_error", False), f"{path}.is_error"):
        text = f"Error: {text}" if text else "Error"
    # litellm reads a tool message's breakpoint from the message itself, not from a part.
    return with_breakpoint({"role": "tool", "tool_call_id": tool_use_id, "content": text}, cache_breakpoint)
