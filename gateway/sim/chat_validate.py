"""`POST /v1/chat/completions` bodies validated into a `ChatRequest`, as OpenAI validates them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.sim.request import ChatRequest, Message, Tool, ToolChoice
from gateway.sim.validate import (
    bool_param,
    check_known,
    expect,
    fail,
    float_param,
    int_param,
    require_model,
    stop_param,
    stream_params,
)

CHAT_PARAMS = frozenset(
    "model messages audio frequency_penalty function_call functions logit_bias logprobs "
    "max_completion_tokens max_tokens metadata modalities n parallel_tool_calls prediction "
    "presence_penalty prompt_cache_key prompt_cache_retention reasoning_effort response_format "
    "safety_identifier seed service_tier stop store stream stream_options temperature tool_choice "
    "tools top_logprobs top_p user verbosity web_search_options".split()
)
ROLES = ("system", "assistant", "user", "function", "tool", "developer")


def content_text(content: Any, param: str) -> str:
    """A message's text: a string, or the text parts of a content array (other parts counted as a tag)."""
    if content is None or isinstance(content, str):
        return content or ""
    expect(content, list, "a string or an array", param)
    texts: list[str] = []
    for i, part in enumerate(content):
        expect(part, dict, "an object", f"{param}[{i}]")
        kind = part.get("type")
        if kind is None:
            fail(
                f"Missing required parameter: '{param}[{i}].type'.",
                f"{param}[{i}].type",
                "missing_required_parameter",
            )
        if kind in ("text", "input_text", "refusal"):
            value = part.get("text", part.get("refusal"))
            expect(value, str, "a string", f"{param}[{i}].text")
            texts.append(value)
        elif kind in ("image_url", "input_audio", "file"):
            texts.append(f"[{kind}]")
        else:
            fail(
                f"Invalid value: '{kind}'. Supported values are: 'text', 'image_url', 'input_audio', 'refusal', and 'file'.",
                f"{param}[{i}].type",
                "invalid_value",
            )
    return "\n".join(texts)


def message(raw: Any, i: int, previous: Sequence[Message]) -> Message:
    param = f"messages[{i}]"
    expect(raw, dict, "an object", param)
    role = raw.get("role")
    if role is None:
        fail(f"Missing required parameter: '{param}.role'.", f"{param}.role", "missing_required_parameter")
    if role not in ROLES:
        supported = ", ".join(f"'{r}'" for r in ROLES[:-1]) + f", and '{ROLES[-1]}'"
        fail(f"Invalid value: '{role}'. Supported values are: {supported}.", f"{param}.role", "invalid_value")
    tool_calls: list[tuple[str, str]] = []
    if role == "assistant" and raw.get("tool_calls") is not None:
        expect(raw["tool_calls"], list, "an array", f"{param}.tool_calls")
        for j, call in enumerate(raw["tool_calls"]):
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                fail(
                    f"Missing required parameter: '{param}.tool_calls[{j}].function'.",
                    f"{param}.tool_calls[{j}].function",
                    "missing_required_parameter",
                )
            tool_calls.append((function["name"], str(function.get("arguments") or "")))
    if "content" not in raw and role != "assistant":
        fail(
            f"Missing required parameter: '{param}.content'.",
            f"{param}.content",
            "missing_required_parameter",
        )
    if role == "tool":
        if not isinstance(raw.get("tool_call_id"), str):
            fail(
                f"Missing required parameter: '{param}.tool_call_id'.",
                f"{param}.tool_call_id",
                "missing_required_parameter",
            )
        if not any(m.tool_calls for m in previous):
            fail(
                "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
                f"messages.[{i}].role",
            )
    name = raw.get("name")
    if name is not None:
        expect(name, str, "a string", f"{param}.name")
    return Message(str(role), content_text(raw.get("content"), f"{param}.content"), name, tuple(tool_calls))


def tools_param(body: Mapping[str, Any]) -> tuple[Tool, ...]:
    raw = body.get("tools")
    if raw is None:
        return ()
    expect(raw, list, "an array", "tools")
    tools: list[Tool] = []
    for i, item in enumerate(raw):
        expect(item, dict, "an object", f"tools[{i}]")
        if item.get("type", "function") != "function":
            fail(
                f"Invalid value: '{item.get('type')}'. Supported values are: 'function' and 'custom'.",
                f"tools[{i}].type",
                "invalid_value",
            )
        function = item.get("function")
        if function is None:
            fail(
                f"Missing required parameter: 'tools[{i}].function'.",
                f"tools[{i}].function",
                "missing_required_parameter",
            )
        expect(function, dict, "an object", f"tools[{i}].function")
        name = function.get("name")
        if name is None:
            fail(
                f"Missing required parameter: 'tools[{i}].function.name'.",
                f"tools[{i}].function.name",
                "missing_required_parameter",
            )
        expect(name, str, "a string", f"tools[{i}].function.name")
        parameters = function.get("parameters") or {}
        expect(parameters, dict, "an object", f"tools[{i}].function.parameters")
        tools.append(Tool(name, str(function.get("description") or ""), parameters))
    return tuple(tools)


def tool_choice_param(body: Mapping[str, Any], tools: tuple[Tool, ...]) -> tuple[ToolChoice, str | None]:
    choice = body.get("tool_choice")
    if choice is None:
        return "auto", None
    if not tools:
        fail(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
            "tool_choice",
        )
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            fail(
                f"Invalid value: '{choice}'. Supported values are: 'none', 'auto', and 'required'.",
                "tool_choice",
                "invalid_value",
            )
        return choice, None  # type: ignore[return-value]
    expect(choice, dict, "a string or an object", "tool_choice")
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        fail(
            "Missing required parameter: 'tool_choice.function.name'.",
            "tool_choice.function.name",
            "missing_required_parameter",
        )
    if name not in {t.name for t in tools}:
        fail(f"Invalid value for 'tool_choice': function '{name}' is not in 'tools'.", "tool_choice")
    return "required", name


def response_format_param(
    body: Mapping[str, Any], messages: Sequence[Message]
) -> tuple[str, Mapping[str, Any] | None]:
    raw = body.get("response_format")
    if raw is None:
        return "text", None
    expect(raw, dict, "an object", "response_format")
    kind = raw.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        fail(
            f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object', and 'json_schema'.",
            "response_format.type",
            "invalid_value",
        )
    if kind == "json_object" and not any("json" in m.text.lower() for m in messages):
        fail(
            "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
            "messages",
        )
    if kind != "json_schema":
        return str(kind), None
    spec = raw.get("json_schema")
    if spec is None:
        fail(
            "Missing required parameter: 'response_format.json_schema'.",
            "response_format.json_schema",
            "missing_required_parameter",
        )
    expect(spec, dict, "an object", "response_format.json_schema")
    if not isinstance(spec.get("name"), str):
        fail(
            "Missing required parameter: 'response_format.json_schema.name'.",
            "response_format.json_schema.name",
            "missing_required_parameter",
        )
    schema = spec.get("schema") or {"type": "object"}
    expect(schema, dict, "an object", "response_format.json_schema.schema")
    return "json_schema", schema


def chat_request(body: Mapping[str, Any]) -> ChatRequest:
    check_known(body, CHAT_PARAMS)
    model = require_model(body)
    raw_messages = body.get("messages")
    if raw_messages is None:
        fail("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    expect(raw_messages, list, "an array", "messages")
    if not raw_messages:
        fail(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            "messages",
            "empty_array",
        )
    messages: list[Message] = []
    for i, raw in enumerate(raw_messages):
        messages.append(message(raw, i, messages))
    max_tokens = int_param(body, "max_tokens", 1)
    max_completion = int_param(body, "max_completion_tokens", 1)
    limits = [v for v in (max_tokens, max_completion) if v is not None]
    n = int_param(body, "n", 1, 128) or 1
    float_param(body, "temperature", 0, 2)
    float_param(body, "top_p", 0, 1)
    float_param(body, "presence_penalty", -2, 2)
    float_param(body, "frequency_penalty", -2, 2)
    seed = int_param(body, "seed", -(2**63))
    logprobs = bool_param(body, "logprobs")
    top_logprobs = int_param(body, "top_logprobs", 0, 20) or 0
    if body.get("top_logprobs") is not None and not logprobs:
        fail(
            "Invalid value for 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is used.",
            "top_logprobs",
        )
    stream, include_usage = stream_params(body)
    tools = tools_param(body)
    tool_choice, forced = tool_choice_param(body, tools)
    response_format, schema = response_format_param(body, messages)
    parallel = body.get("parallel_tool_calls")
    return ChatRequest(
        model=model,
        messages=tuple(messages),
        n=n,
        max_tokens=min(limits) if limits else None,
        stop=stop_param(body),
        seed=seed,
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        response_format=response_format,
        json_schema=schema,
        tools=tools,
        tool_choice=tool_choice,
        forced_tool=forced,
        parallel_tool_calls=parallel is not False,
        stream=stream,
        include_usage=include_usage,
    )
