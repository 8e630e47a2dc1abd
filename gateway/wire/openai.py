"""OpenAI request bodies: parse, validate, and name exactly what is wrong.

Validation checks what the OpenAI API itself would reject (types, required fields, ranges)
and lets everything else through untouched: provider-specific extras must reach the
provider, and the validated body is never re-serialised, so the bytes the client sent are
the bytes forwarded.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from gateway.errors import InvalidRequest
from gateway.pipeline import Request
from gateway.providers.base import Endpoint


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _FunctionCall(_Open):
    name: str
    arguments: str


class _ToolCall(_Open):
    id: str
    type: Literal["function"] = "function"
    function: _FunctionCall


class _ContentPart(_Open):
    type: str


class _Message(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[_ContentPart] | None = None
    name: str | None = None
    tool_calls: list[_ToolCall] | None = None
    tool_call_id: str | None = None


class _FunctionDef(_Open):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class _Tool(_Open):
    type: str
    function: _FunctionDef | None = None


class _StreamOptions(_Open):
    include_usage: bool | None = None


class _ResponseFormat(_Open):
    type: Literal["text", "json_object", "json_schema"]


_Stop = str | list[str] | None


class ChatCompletionRequest(_Open):
    model: str = Field(min_length=1)
    messages: list[_Message] = Field(min_length=1)
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    tools: list[_Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: _ResponseFormat | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    stop: _Stop = None
    seed: int | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    user: str | None = None


class CompletionRequest(_Open):
    model: str = Field(min_length=1)
    prompt: str | list[str] | list[int] | list[list[int]]
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    stop: _Stop = None
    max_tokens: Annotated[int, Field(ge=0)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None
    echo: bool | None = None
    seed: int | None = None


class EmbeddingRequest(_Open):
    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int, Field(ge=1)] | None = None
    stream: Literal[False] | None = None


_VALIDATORS: dict[Endpoint, TypeAdapter[Any]] = {
    "chat": TypeAdapter(ChatCompletionRequest),
    "completions": TypeAdapter(CompletionRequest),
    "embeddings": TypeAdapter(EmbeddingRequest),
}


def _param(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not path:
            path = part
        elif part[:1].isupper() or "[" in part or part in ("str", "list", "int", "dict", "bool", "float"):
            # pydantic names union branches ("str", "list[_ContentPart]"): not part of the path.
            continue
        else:
            path += f".{part}"
    return path


def _message(err: dict[str, Any], param: str) -> str:
    kind = err["type"]
    if kind == "missing":
        return f"Missing required parameter: '{param}'."
    if kind == "literal_error":
        return f"Invalid value for '{param}': {err['msg'].lower()}."
    if kind in ("too_short", "too_long") and isinstance(err.get("input"), list):
        return f"Invalid '{param}': {err['msg'].lower()}."
    return f"Invalid type or value for '{param}': {err['msg'].lower()}."


def parse_body(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise InvalidRequest("Request body is empty; expected a JSON object.", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise InvalidRequest(f"Request body is not valid JSON: {err}.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("Request body must be a JSON object.", code="invalid_json")
    return body


def validate(endpoint: Endpoint, body: dict[str, Any], raw: bytes | None = None) -> Request:
    """Check the body against the endpoint's schema and wrap it as the internal Request."""
    try:
        _VALIDATORS[endpoint].validate_python(body)
    except ValidationError as err:
        first = err.errors()[0]
        param = _param(tuple(first["loc"]))
        # OpenAI's own codes: a missing field is `missing_required_parameter`, anything else a bad value.
        code = "missing_required_parameter" if first["type"] == "missing" else "invalid_value"
        raise InvalidRequest(_message(dict(first), param), param=param, code=code) from None
    stream = bool(body.get("stream"))
    return Request(endpoint=endpoint, model=body["model"], body=body, stream=stream, raw=raw)
