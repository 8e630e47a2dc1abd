"""Anthropic's Messages API over the same core: request validation, `message` bodies, events.

Errors read as Anthropic's do (`messages.0.role: Input should be 'user' or 'assistant'`);
the event stream is the documented sequence: message_start, content_block_start, ping,
content_block_delta*, content_block_stop (per block), message_delta, message_stop.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, NoReturn

import orjson

from gateway.errors import InvalidRequest
from gateway.sim import tokens
from gateway.sim.plan import ChatPlan, Choice, StreamItem, random_id
from gateway.sim.request import ChatRequest, Message, Tool, ToolChoice

KNOWN_FIELDS = frozenset(
    "model messages max_tokens system stop_sequences stream temperature top_p top_k tools tool_choice "
    "metadata thinking service_tier container mcp_servers context_management".split()
)
_STOP_REASONS = {"length": "max_tokens", "tool_calls": "tool_use"}


def _fail(path: str, message: str) -> NoReturn:
    raise InvalidRequest(f"{path}: {message}", param=path)


def _text_of(content: Any, path: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        _fail(path, "Input should be a valid list")
    texts: list[str] = []
    for i, block in enumerate(content):
        if not isinstance(block, dict) or "type" not in block:
            _fail(f"{path}.{i}.type", "Field required")
        if block["type"] == "text":
            if not isinstance(block.get("text"), str):
                _fail(f"{path}.{i}.text", "Field required")
            texts.append(block["text"])
        elif block["type"] in ("image", "document"):
            texts.append(f"[{block['type']}]")
    return "\n".join(texts)


def _messages(raw: Any) -> list[Message]:
    if raw is None:
        _fail("messages", "Field required")
    if not isinstance(raw, list):
        _fail("messages", "Input should be a valid list")
    if not raw:
        _fail("messages", "at least one message is required")
    messages: list[Message] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            _fail(f"messages.{i}", "Input should be a valid dictionary")
        role = item.get("role")
        if role is None:
            _fail(f"messages.{i}.role", "Field required")
        if role not in ("user", "assistant"):
            _fail(f"messages.{i}.role", "Input should be 'user' or 'assistant'")
        if "content" not in item:
            _fail(f"messages.{i}.content", "Field required")
        content = item["content"]
        blocks = content if isinstance(content, list) else []
        calls = tuple(
            (str(b.get("name")), orjson.dumps(b.get("input") or {}).decode())
            for b in blocks
            if isinstance(b, dict) and b.get("type") == "tool_use"
        )
        # Tool results travel in a user turn; the core sees them as OpenAI-style tool messages.
        for j, block in enumerate(blocks):
            if isinstance(block, dict) and block.get("type") == "tool_result":
                if not isinstance(block.get("tool_use_id"), str):
                    _fail(f"messages.{i}.content.{j}.tool_use_id", "Field required")
                messages.append(
                    Message("tool", _text_of(block.get("content") or "", f"messages.{i}.content.{j}.content"))
                )
        text = _text_of(content, f"messages.{i}.content")
        if text or calls or not any(isinstance(b, dict) and b.get("type") == "tool_result" for b in blocks):
            messages.append(Message(role, text, None, calls))
    return messages


def _tools(raw: Any) -> tuple[Tool, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        _fail("tools", "Input should be a valid list")
    tools: list[Tool] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            _fail(f"tools.{i}.name", "Field required")
        schema = item.get("input_schema")
        if not isinstance(schema, dict):
            _fail(f"tools.{i}.input_schema", "Field required")
        tools.append(Tool(item["name"], str(item.get("description") or ""), schema))
    return tuple(tools)


def _tool_choice(raw: Any, tools: tuple[Tool, ...]) -> tuple[ToolChoice, str | None, bool]:
    if raw is None:
        return "auto", None, True
    if not isinstance(raw, dict) or raw.get("type") not in ("auto", "any", "tool", "none"):
        _fail(
            "tool_choice",
            "Input tag found using 'type' does not match any of the expected tags: 'auto', 'any', 'tool', 'none'",
        )
    parallel = not raw.get("disable_parallel_tool_use", False)
    kind = raw["type"]
    if kind == "tool":
        name = raw.get("name")
        if not isinstance(name, str):
            _fail("tool_choice.tool.name", "Field required")
        if name not in {t.name for t in tools}:
            _fail("tool_choice", f"Tool '{name}' not found in provided tools")
        return "required", name, parallel
    return {"auto": "auto", "any": "required", "none": "none"}[kind], None, parallel  # type: ignore[return-value]


def has_cache_control(body: Mapping[str, Any]) -> bool:
    """Anthropic caches only up to explicit `cache_control` breakpoints; none means no caching."""
    return b'"cache_control"' in orjson.dumps([body.get("system"), body.get("tools"), body.get("messages")])


def messages_request(body: Mapping[str, Any]) -> ChatRequest:
    for key in body:
        if key not in KNOWN_FIELDS:
            _fail(key, "Extra inputs are not permitted")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        _fail("model", "Field required")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        _fail("max_tokens", "Field required")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        _fail("max_tokens", "Input should be a valid integer")
    if max_tokens < 1:
        _fail("max_tokens", "Input should be greater than or equal to 1")
    messages = _messages(body.get("messages"))
    system = body.get("system")
    if system is not None:
        messages.insert(0, Message("system", _text_of(system, "system")))
    stops = body.get("stop_sequences") or []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        _fail("stop_sequences", "Input should be a valid list")
    tools = _tools(body.get("tools"))
    tool_choice, forced, parallel = _tool_choice(body.get("tool_choice"), tools)
    return ChatRequest(
        model=model,
        messages=tuple(messages),
        max_tokens=max_tokens,
        stop=tuple(s for s in stops if s),
        tools=tools,
        tool_choice=tool_choice,
        forced_tool=forced,
        parallel_tool_calls=parallel,
        stream=body.get("stream") is True,
    )


def _tool_id(call_id: str) -> str:
    return "toolu_01" + call_id.removeprefix("call_")[:22]


def _blocks(choice: Choice) -> list[dict[str, Any]]:
    if choice.text is not None:
        return [{"type": "text", "text": choice.text}]
    blocks = []
    for call in choice.tool_calls:
        try:
            arguments = orjson.loads(call.arguments)
        except orjson.JSONDecodeError:  # cut off by max_tokens
            arguments = {}
        blocks.append({"type": "tool_use", "id": _tool_id(call.id), "name": call.name, "input": arguments})
    return blocks


def _stop(choice: Choice) -> tuple[str, str | None]:
    if choice.stop_sequence is not None:
        return "stop_sequence", choice.stop_sequence
    return _STOP_REASONS.get(choice.finish_reason, "end_turn"), None


def usage(plan: ChatPlan, output_tokens: int) -> dict[str, Any]:
    fresh = plan.prompt_tokens - plan.cached_tokens - plan.cache_creation_tokens
    return {
        "input_tokens": fresh,
        "cache_creation_input_tokens": plan.cache_creation_tokens,
        "cache_read_input_tokens": plan.cached_tokens,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def message(plan: ChatPlan) -> dict[str, Any]:
    choice = plan.choices[0]
    stop_reason, stop_sequence = _stop(choice)
    return {
        "id": "msg_01" + random_id(length=22),
        "type": "message",
        "role": "assistant",
        "model": plan.request.model,
        "content": _blocks(choice),
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage(plan, choice.completion_tokens),
    }


def event(name: str, payload: dict[str, Any], tokens_carried: int = 0) -> StreamItem:
    return StreamItem(
        b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n", tokens_carried
    )


def stream(plan: ChatPlan) -> list[StreamItem]:
    choice = plan.choices[0]
    start = {
        **message(plan),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage(plan, 1),
    }
    items = [event("message_start", {"type": "message_start", "message": start})]
    rng = random.Random(choice.split_seed)
    blocks = _blocks(choice)
    sources = [choice.text or ""] if choice.text is not None else [c.arguments for c in choice.tool_calls]
    for index, (block, source) in enumerate(zip(blocks, sources, strict=True)):
        opening = {**block, "text": ""} if block["type"] == "text" else {**block, "input": {}}
        items.append(
            event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": opening},
            )
        )
        if index == 0:
            items.append(event("ping", {"type": "ping"}))
        delta_kind, field = (
            ("text_delta", "text") if block["type"] == "text" else ("input_json_delta", "partial_json")
        )
        if block["type"] == "tool_use":
            delta = {"type": delta_kind, field: ""}
            items.append(
                event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            )
        for piece in tokens.split_pieces(plan.encoding, source, rng):
            delta = {"type": delta_kind, field: piece.text}
            payload = {"type": "content_block_delta", "index": index, "delta": delta}
            items.append(event("content_block_delta", payload, len(piece.tokens)))
        items.append(event("content_block_stop", {"type": "content_block_stop", "index": index}))
    stop_reason, stop_sequence = _stop(choice)
    items.append(
        event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": {"output_tokens": choice.completion_tokens},
            },
        )
    )
    items.append(event("message_stop", {"type": "message_stop"}))
    return items
