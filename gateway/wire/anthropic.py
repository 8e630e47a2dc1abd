"""The Anthropic Messages wire format (`POST /v1/messages`): request in, response out.

Inside the gateway every request is an OpenAI chat-completions body, so a Messages request
is validated and translated in (`messages_to_chat`) and the answer translated back out
(`chat_to_message`); streams are translated by `gateway.wire.anthropic_stream`.

A bad request fails here, before any stage runs, with the error Anthropic's own API would
give: `InvalidRequest("<path>: <problem>", param="<path>")`, the path written with bracketed
indexes (`messages[2].content[0].type`). Parameters Anthropic documents but OpenAI has no
equivalent for (`thinking`, `service_tier`, `container`, `top_k`, the request-wide
`cache_control` ...) are type-checked and dropped; undocumented keys are rejected, as
Anthropic rejects them, so a misspelled parameter never silently does nothing. Cache
breakpoints on blocks and tools are kept (see `gateway.wire.anthropic_content`): they are
what makes a long prompt cheap at Anthropic.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Mapping
from types import MappingProxyType, NoneType
from typing import Any

import orjson

from gateway.errors import InvalidRequest, UpstreamError
from gateway.providers.base import Usage
from gateway.wire.anthropic_content import (
    ToolTurns,
    boolean,
    cache_control,
    invalid,
    join_text,
    number,
    obj,
    required,
    string,
    system_content,
    user_and_assistant_messages,
    with_breakpoint,
)

# Documented Messages parameters with no OpenAI chat equivalent: checked for type, then
# dropped. `thinking`/`output_config.effort` are not mapped to `reasoning_effort` because
# non-reasoning OpenAI models reject that parameter outright.
_DROPPED_PARAMS: Mapping[str, tuple[tuple[type, ...], str]] = MappingProxyType(
    {
        "thinking": ((dict,), "an object"),
        "service_tier": ((str,), "a valid string"),
        "container": ((str, dict, NoneType), "a valid string, an object or null"),
        "cache_control": ((dict, NoneType), "an object or null"),
        "context_management": ((dict, NoneType), "an object or null"),
        "diagnostics": ((dict, NoneType), "an object or null"),
        "inference_geo": ((str, NoneType), "a valid string or null"),
        "mcp_servers": ((list,), "a valid list"),
        "speed": ((str, NoneType), "a valid string or null"),
        "user_profile_id": ((str,), "a valid string"),
        "workspace_id": ((str,), "a valid string"),
    }
)
_TRANSLATED_PARAMS = frozenset(
    {
        "model", "max_tokens", "messages", "system", "metadata", "stop_sequences", "stream",
        "temperature", "top_p", "top_k", "tools", "tool_choice", "output_config", "output_format",
    }
)  # fmt: skip
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
# The key an unparseable tool-call argument string is kept under (see `_tool_input`).
UNPARSED_ARGUMENTS_KEY = "_unparsed_arguments"


def messages_to_chat(body: object) -> dict[str, Any]:
    """Validate an Anthropic Messages request and return a new OpenAI chat-completions body."""
    if not isinstance(body, dict):
        raise InvalidRequest("request body: Input should be a JSON object")
    for key in body:
        if key not in _TRANSLATED_PARAMS and key not in _DROPPED_PARAMS:
            raise invalid(key, "Extra inputs are not permitted")
    model = string(required(body, "model", ""), "model")
    if not model:
        raise invalid("model", "String should have at least 1 character")
    max_tokens = required(body, "max_tokens", "")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        raise invalid("max_tokens", "Input should be a valid integer")
    if max_tokens < 1:
        raise invalid("max_tokens", "Input should be greater than or equal to 1")

    messages: list[dict[str, Any]] = []
    if "system" in body:
        system = system_content(body["system"], "system")
        if system:
            messages.append({"role": "system", "content": system})
    messages.extend(user_and_assistant_messages(required(body, "messages", ""), ToolTurns()))
    # `max_completion_tokens`, not the deprecated `max_tokens`: OpenAI's reasoning models
    # reject the latter, and it is what the current chat-completions spec defines.
    chat: dict[str, Any] = {"model": model, "messages": messages, "max_completion_tokens": max_tokens}

    _sampling(body, chat)
    _tools(body, chat)
    response_format = _response_format(body)
    if response_format is not None:
        chat["response_format"] = response_format
    if boolean(body.get("stream", False), "stream"):
        # Usage only reaches a stream's end when asked for; message_delta must carry it.
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    for key, (types, expected) in _DROPPED_PARAMS.items():
        if key in body and not isinstance(body[key], types):
            raise invalid(key, f"Input should be {expected}")
    return chat


def _sampling(body: Mapping[str, Any], chat: dict[str, Any]) -> None:
    for key in ("temperature", "top_p"):
        if key in body:
            chat[key] = number(body[key], key, maximum=1.0)
    if "top_k" in body:
        # OpenAI chat has no top_k; still validated, so a bad value fails as it would at Anthropic.
        top_k = body["top_k"]
        if not isinstance(top_k, int) or isinstance(top_k, bool):
            raise invalid("top_k", "Input should be a valid integer")
        if top_k < 0:
            raise invalid("top_k", "Input should be greater than or equal to 0")
    if "stop_sequences" in body:
        sequences = body["stop_sequences"]
        if not isinstance(sequences, list):
            raise invalid("stop_sequences", "Input should be a valid list")
        stop = [string(sequence, f"stop_sequences[{i}]") for i, sequence in enumerate(sequences)]
        if stop:
            chat["stop"] = stop
    if "metadata" in body:
        metadata = obj(body["metadata"], "metadata")
        user_id = metadata.get("user_id")
        if user_id is not None:
            chat["user"] = string(user_id, "metadata.user_id")


def _tools(body: Mapping[str, Any], chat: dict[str, Any]) -> None:
    names: list[str] = []
    if "tools" in body:
        tools = body["tools"]
        if not isinstance(tools, list):
            raise invalid("tools", "Input should be a valid list")
        chat_tools = [_function_tool(tool, f"tools[{i}]", names) for i, tool in enumerate(tools)]
        if chat_tools:
            chat["tools"] = chat_tools
    if "tool_choice" not in body:
        return
    choice = obj(body["tool_choice"], "tool_choice")
    kind = string(required(choice, "type", "tool_choice"), "tool_choice.type")
    disable_parallel = boolean(
        choice.get("disable_parallel_tool_use", False), "tool_choice.disable_parallel_tool_use"
    )
    tool_choice: str | dict[str, Any]
    if kind == "auto":
        tool_choice = "auto"
    elif kind == "none":
        tool_choice = "none"
    elif kind == "any":
        if not names:
            raise invalid("tool_choice.type", "'any' requires at least one tool in `tools`")
        tool_choice = "required"
    elif kind == "tool":
        name = string(required(choice, "name", "tool_choice"), "tool_choice.name")
        if name not in names:
            raise invalid("tool_choice.name", f"tool '{name}' is not defined in `tools`")
        tool_choice = {"type": "function", "function": {"name": name}}
    else:
        raise invalid("tool_choice.type", "Input should be 'auto', 'any', 'tool' or 'none'")
    # OpenAI rejects tool_choice without tools; with none, 'auto' and 'none' mean the same.
    if names:
        chat["tool_choice"] = tool_choice
        if disable_parallel and kind != "none":
            chat["parallel_tool_calls"] = False


def _function_tool(value: object, path: str, names: list[str]) -> dict[str, Any]:
    tool = obj(value, path)
    kind = tool.get("type")
    if kind is not None and kind != "custom":
        if not isinstance(kind, str):
            raise invalid(f"{path}.type", "Input should be a valid string")
        raise invalid(
            f"{path}.type",
            f"'{kind}' is an Anthropic-defined tool and cannot be translated; "
            "only custom tools (name, description, input_schema) are supported",
        )
    name = string(required(tool, "name", path), f"{path}.name")
    if not _TOOL_NAME.match(name):
        raise invalid(f"{path}.name", "String should match pattern '^[a-zA-Z0-9_-]{1,128}$'")
    if name in names:
        raise invalid(f"{path}.name", "Tool names must be unique")
    names.append(name)
    function: dict[str, Any] = {"name": name}
    if "description" in tool:
        function["description"] = string(tool["description"], f"{path}.description")
    schema = obj(required(tool, "input_schema", path), f"{path}.input_schema")
    # A deep copy: a stage that rewrites the outgoing body must not reach into the client's.
    function["parameters"] = copy.deepcopy(schema)
    if "strict" in tool:
        function["strict"] = boolean(tool["strict"], f"{path}.strict")
    # On the tool object itself, which is where litellm looks for it first.
    return with_breakpoint({"type": "function", "function": function}, cache_control(tool, path))


def _response_format(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """Structured outputs (`output_config.format`, or the beta `output_format`) → `response_format`.

    Anthropic guarantees the answer matches the schema, so the OpenAI side asks for
    `strict` adherence too rather than a best-effort JSON mode.
    """
    found: list[tuple[object, str]] = []
    if "output_config" in body:
        config = obj(body["output_config"], "output_config")
        if config.get("format") is not None:
            found.append((config["format"], "output_config.format"))
    if body.get("output_format") is not None:
        found.append((body["output_format"], "output_format"))
    if not found:
        return None
    if len(found) > 1:
        raise invalid("output_format", "cannot be combined with `output_config.format`")
    value, path = found[0]
    output_format = obj(value, path)
    if required(output_format, "type", path) != "json_schema":
        raise invalid(f"{path}.type", "Input should be 'json_schema'")
    schema = obj(required(output_format, "schema", path), f"{path}.schema")
    return {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": copy.deepcopy(schema), "strict": True},
    }


# ---- response --------------------------------------------------------------------------


def chat_to_message(resp: Mapping[str, Any], *, model: str) -> dict[str, Any]:
    """Translate an OpenAI `chat.completion` (choice 0 only) into an Anthropic `message`.

    `model` is the name the client asked for, which is what Anthropic echoes back.
    Raises `UpstreamError` when the upstream answer has no choice to translate.
    """
    choices = resp.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise UpstreamError("The upstream response has no choices")
    choice: Mapping[str, Any] = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise UpstreamError("The upstream response's first choice has no message")

    content: list[dict[str, Any]] = []
    text = _message_text(message.get("content"))
    if text:
        content.append({"type": "text", "text": text})
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        content.append({"type": "text", "text": refusal})
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            content.append(_tool_use_block(call.get("id"), function))
    legacy_call = message.get("function_call")
    if isinstance(legacy_call, dict):
        content.append(_tool_use_block(None, legacy_call))

    stop_reason, stop_sequence = stop_reason_for(
        choice.get("finish_reason"),
        used_tools=any(block["type"] == "tool_use" for block in content),
        matched_stop=choice.get("stop_reason"),
        refused=isinstance(refusal, str) and bool(refusal),
    )
    return {
        "id": message_id_for(resp.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage_for(Usage.from_openai(resp.get("usage"))),
    }


def _message_text(content: object) -> str:
    if isinstance(content, str):
        return content
    # Some OpenAI-compatible servers answer with a list of text parts.
    if isinstance(content, list):
        return join_text(
            [part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)]
        )
    return ""


def _tool_use_block(call_id: object, function: Mapping[str, Any]) -> dict[str, Any]:
    name = function.get("name")
    return {
        "type": "tool_use",
        "id": call_id if isinstance(call_id, str) and call_id else tool_use_id(),
        "name": name if isinstance(name, str) else "",
        "input": _tool_input(function.get("arguments")),
    }


def _tool_input(arguments: object) -> dict[str, Any]:
    """The tool call's arguments as the JSON object Anthropic's `tool_use.input` must be.

    The SDKs type `input` as an object, so anything else cannot be passed through. Arguments
    that are not a JSON object are not replaced by `{}`: that would let a client run the tool
    with no arguments as if the model had asked for it. The raw string is kept under
    `UNPARSED_ARGUMENTS_KEY`, so the client's schema check fails loudly and the model's
    actual output stays visible. No arguments at all (`""`) is `{}`, as providers send it
    for tools that take none.
    """
    if isinstance(arguments, dict):
        return copy.deepcopy(arguments)
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {UNPARSED_ARGUMENTS_KEY: arguments}
    return parsed if isinstance(parsed, dict) else {UNPARSED_ARGUMENTS_KEY: arguments}


# ---- shared with the stream translation -----------------------------------------------------


def stop_reason_for(
    finish_reason: object, *, used_tools: bool, matched_stop: object = None, refused: bool = False
) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) for an OpenAI finish_reason.

    OpenAI does not say which stop sequence matched; vLLM-style servers do, in the choice's
    `stop_reason`, and only then is `stop_sequence` reported. Some servers finish a
    tool-calling turn with "stop": a turn that called tools is `tool_use` regardless, since
    that is what Anthropic clients loop on.
    """
    if finish_reason == "length":
        return "max_tokens", None
    if finish_reason == "content_filter" or refused:
        return "refusal", None
    if used_tools or finish_reason in ("tool_calls", "function_call"):
        return "tool_use", None
    if finish_reason == "stop" and isinstance(matched_stop, str) and matched_stop:
        return "stop_sequence", matched_stop
    return "end_turn", None


def usage_for(usage: Usage | None) -> dict[str, int]:
    """Anthropic's usage from the normalised one.

    Anthropic counts cache reads and cache writes apart from `input_tokens`; the normalised
    `prompt_tokens` (OpenAI's convention) counts them inside, so both are taken back out.
    Over-reported cache counts are clamped so the three never add up to more than the prompt.
    """
    usage = usage or Usage()
    prompt = max(usage.prompt_tokens, 0)
    read = min(max(usage.cached_prompt_tokens, 0), prompt)
    written = min(max(usage.cache_write_tokens, 0), prompt - read)
    return {
        "input_tokens": prompt - read - written,
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": read,
        # Zero for OpenAI-format upstreams: they cache implicitly and never bill a write.
        "cache_creation_input_tokens": written,
    }


def message_id_for(openai_id: object) -> str:
    """`msg_` + the OpenAI id's tail (`chatcmpl-abc` → `msg_abc`); a fresh id if there is none."""
    if isinstance(openai_id, str) and openai_id:
        return "msg_" + openai_id.split("-", 1)[-1]
    return "msg_" + uuid.uuid4().hex


def tool_use_id() -> str:
    """An id for a tool call the upstream sent without one; any unique id round-trips."""
    return "toolu_" + uuid.uuid4().hex
