"""OpenAI's Batch API input, checked as OpenAI checks it: the create call's parameters (a 400
when wrong) and the input file line by line (a batch that reads `failed`, one error per bad
line, in OpenAI's codes and words).

The gateway's `/v1/batches` and the simulated provider's both check with these. They differ
only in what a line's body must hold before the batch runs (`BodyCheck`): the gateway needs a
model name and leaves the rest to its pipeline, line by line; the simulator refuses what
OpenAI refuses while `validating`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import InvalidRequest
from gateway.providers.base import Endpoint

ENDPOINTS: dict[str, Endpoint] = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
_TITLES = {"chat": "Chat Completions", "completions": "Completions", "embeddings": "Embeddings"}
COMPLETION_WINDOWS = {"24h": 24 * 3600.0}
MAX_REQUESTS = 50_000
_KNOWN_PARAMS = frozenset(
    {"input_file_id", "endpoint", "completion_window", "metadata", "output_expires_after"}
)

# (message, param) of the first thing a line's body lacks for its endpoint, or None.
BodyCheck = Callable[[Endpoint, Mapping[str, Any]], tuple[str, str] | None]


@dataclass(slots=True, frozen=True)
class Line:
    """One request of a batch file: its position among the file's requests (from 0)."""

    index: int
    custom_id: str
    body: dict[str, Any]


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", str: "a string", int: "an integer", float: "a number", list: "an array"}
    return names.get(type(value), "an object")


def line_error(code: str, message: str, param: str | None, line: int | None) -> dict[str, Any]:
    return {"code": code, "line": line, "message": message, "param": param}


def required_string(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        raise InvalidRequest(
            f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter"
        )
    if not isinstance(value, str):
        raise InvalidRequest(
            f"Invalid type for '{name}': expected a string, but got {json_type(value)} instead.",
            param=name,
            code="invalid_type",
        )
    return value


def check_params(body: Mapping[str, Any]) -> tuple[str, str, str, dict[str, str] | None]:
    """(input_file_id, endpoint, completion_window, metadata) of a create call, or a 400."""
    for name in body:
        if name not in _KNOWN_PARAMS:
            raise InvalidRequest(f"Unrecognized request argument supplied: {name}", param=name)
    input_file_id = required_string(body, "input_file_id")
    endpoint = required_string(body, "endpoint")
    if endpoint not in ENDPOINTS:
        paths = [f"'{path}'" for path in ENDPOINTS]
        supported = ", ".join(paths[:-1]) + ", and " + paths[-1]
        raise InvalidRequest(
            f"Invalid value: '{endpoint}'. Supported values are: {supported}.",
            param="endpoint",
            code="invalid_value",
        )
    window = required_string(body, "completion_window")
    if window not in COMPLETION_WINDOWS:
        raise InvalidRequest(
            f"Invalid value: '{window}'. Supported values are: '24h'.",
            param="completion_window",
            code="invalid_value",
        )
    return input_file_id, endpoint, window, check_metadata(body.get("metadata"))


def check_metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest(
            f"Invalid type for 'metadata': expected an object, but got {json_type(value)} instead.",
            param="metadata",
            code="invalid_type",
        )
    if len(value) > 16:
        raise InvalidRequest(
            f"Invalid 'metadata': too many properties. Expected an object with at most 16 properties, "
            f"but got an object with {len(value)} properties instead.",
            param="metadata",
            code="object_above_max_properties",
        )
    for key, item in value.items():
        if len(key) > 64:
            raise InvalidRequest(
                f"Invalid 'metadata': key too long. Expected keys of at most 64 characters, got {key!r}.",
                param="metadata",
                code="invalid_value",
            )
        if not isinstance(item, str):
            raise InvalidRequest(
                f"Invalid type for 'metadata.{key}': expected a string, but got {json_type(item)} instead.",
                param=f"metadata.{key}",
                code="invalid_type",
            )
        if len(item) > 512:
            raise InvalidRequest(
                f"Invalid 'metadata.{key}': string too long. Expected a string with maximum length 512, "
                f"but got a string with length {len(item)} instead.",
                param=f"metadata.{key}",
                code="string_above_max_length",
            )
    return dict(value)


def starts_as_jsonl(content: bytes) -> bool:
    """OpenAI refuses a batch upload whose first line is not a JSON object; later lines are
    checked when a batch uses the file (and fail the batch, line by line)."""
    first = content.lstrip().split(b"\n", 1)[0]
    try:
        return isinstance(orjson.loads(first), dict)
    except orjson.JSONDecodeError:
        return False


def model_named(kind: Endpoint, body: Mapping[str, Any]) -> tuple[str, str] | None:
    """The body names its model: enough to route the line, whose body is validated on its own
    when it runs (a bad one is one line of the error file, not a failed batch)."""
    if not isinstance(body.get("model"), str):
        return "Model parameter is required.", "body.model"
    return None


def openai_validating(kind: Endpoint, body: Mapping[str, Any]) -> tuple[str, str] | None:
    """What OpenAI itself refuses while `validating`: no model, or a chat request with no messages."""
    if body.get("model") is None:
        return "Model parameter is required.", "body.model"
    if kind == "chat" and body.get("messages") is None:
        return "Messages parameter is required.", "body.messages"
    return None


def read_lines(
    content: bytes, endpoint: str, check_body: BodyCheck
) -> tuple[list[Line], list[dict[str, Any]]]:
    """(the requests of a batch input file, the errors that fail the batch: none when it is good)."""
    raw_lines = [(number, raw) for number, raw in enumerate(content.split(b"\n"), start=1) if raw.strip()]
    if not raw_lines:
        message = "The batch input file is empty. Please ensure that the batch input file contains at least one request."
        return [], [line_error("empty_file", message, None, None)]
    if len(raw_lines) > MAX_REQUESTS:
        message = (
            f"The batch input file contains {len(raw_lines):,} requests; a batch may contain at most "
            f"{MAX_REQUESTS:,} requests."
        )
        return [], [line_error("too_many_tasks", message, None, None)]
    lines: list[Line] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, raw in raw_lines:
        checked = _check_line(raw, number, endpoint, seen, check_body)
        if isinstance(checked, tuple):
            lines.append(Line(len(lines), *checked))
        else:
            errors.append(checked)
    return lines, errors


def _check_line(
    raw: bytes, number: int, endpoint: str, seen: set[str], check_body: BodyCheck
) -> tuple[str, dict[str, Any]] | dict[str, Any]:
    """(custom_id, body) of one input line, or the first thing wrong with it."""
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError:
        item = None
    if not isinstance(item, dict):
        return line_error("invalid_json_line", "This line is not parseable as valid JSON.", None, number)
    for name in ("custom_id", "method", "url", "body"):
        if item.get(name) is None:
            return line_error(
                "missing_required_parameter", f"Missing required parameter: '{name}'.", name, number
            )
    custom_id, body = item["custom_id"], item["body"]
    if not isinstance(custom_id, str):
        message = f"Invalid type for 'custom_id': expected a string, but got {json_type(custom_id)} instead."
        return line_error("invalid_type", message, "custom_id", number)
    if item["method"] != "POST":
        message = "The method provided for this request is not supported. Only POST is supported."
        return line_error("invalid_method", message, "method", number)
    if item["url"] != endpoint:
        message = "The URL provided for this request does not match the batch endpoint."
        return line_error("invalid_url", message, "url", number)
    if not isinstance(body, dict):
        message = f"Invalid type for 'body': expected an object, but got {json_type(body)} instead."
        return line_error("invalid_type", message, "body", number)
    kind = ENDPOINTS[endpoint]
    if (missing := check_body(kind, body)) is not None:
        message, param = missing
        return line_error("invalid_request", message, param, number)
    if body.get("stream") is True:
        message = f"{_TITLES[kind]}: Streaming is not supported in the Batch API."
        return line_error("streaming_unsupported", message, "body.stream", number)
    if custom_id in seen:
        message = (
            "The custom_id for this request is a duplicate of another request. "
            "The custom_id parameter must be unique for each request in a batch."
        )
        return line_error("duplicate_custom_id", message, "custom_id", number)
    seen.add(custom_id)
    return custom_id, body
