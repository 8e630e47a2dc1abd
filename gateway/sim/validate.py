"""OpenAI request validation: reject what the real API rejects, with its message and `param`.

The messages and codes follow what api.openai.com answers (`Missing required parameter:
'messages[1].role'.`, code `missing_required_parameter`), so a gateway test against the
simulator sees the same 400 a client would get from OpenAI. These are the shared checks;
`chat_validate` builds a `ChatRequest` from a chat body with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from gateway.errors import InvalidRequest

COMPLETION_PARAMS = frozenset(
    "model prompt best_of echo frequency_penalty logit_bias logprobs max_tokens n presence_penalty "
    "seed stop stream stream_options suffix temperature top_p user".split()
)


def fail(message: str, param: str | None = None, code: str | None = None) -> NoReturn:
    raise InvalidRequest(message, param=param, code=code)


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def expect(value: Any, kind: type | tuple[type, ...], expected: str, param: str) -> None:
    # bool is an int subclass in Python, but JSON's true is not a number: only bool accepts it.
    matches = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if not matches:
        fail(
            f"Invalid type for '{param}': expected {expected}, but got {type_name(value)} instead.",
            param,
            "invalid_type",
        )


def check_known(body: Mapping[str, Any], known: frozenset[str]) -> None:
    for key in body:
        if key not in known:
            fail(f"Unrecognized request argument supplied: {key}")


def require_model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if model is None or model == "":
        fail("you must provide a model parameter")
    expect(model, str, "a string", "model")
    return str(model)


def int_param(body: Mapping[str, Any], key: str, low: int, high: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    expect(value, int, "an integer", key)
    if value < low:
        fail(
            f"Invalid '{key}': integer below minimum value. Expected a value >= {low}, but got {value} instead.",
            key,
            "integer_below_min_value",
        )
    if high is not None and value > high:
        fail(
            f"Invalid '{key}': integer above maximum value. Expected a value <= {high}, but got {value} instead.",
            key,
            "integer_above_max_value",
        )
    return int(value)


def float_param(body: Mapping[str, Any], key: str, low: float, high: float) -> None:
    value = body.get(key)
    if value is None:
        return
    expect(value, (int, float), "a decimal", key)
    if value < low:
        fail(
            f"Invalid '{key}': decimal below minimum value. Expected a value >= {low:g}, but got {value} instead.",
            key,
            "decimal_below_min_value",
        )
    if value > high:
        fail(
            f"Invalid '{key}': decimal above maximum value. Expected a value <= {high:g}, but got {value} instead.",
            key,
            "decimal_above_max_value",
        )


def bool_param(body: Mapping[str, Any], key: str) -> bool:
    value = body.get(key)
    if value is None:
        return False
    expect(value, bool, "a boolean", key)
    return bool(value)


def stop_param(body: Mapping[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,) if stop else ()
    expect(stop, list, "a string or an array of strings", "stop")
    if len(stop) > 4:
        fail(
            f"Invalid 'stop': array too long. Expected an array with maximum length 4, but got an array with length {len(stop)} instead.",
            "stop",
            "array_above_max_length",
        )
    for i, item in enumerate(stop):
        expect(item, str, "a string", f"stop[{i}]")
    return tuple(s for s in stop if s)


def stream_params(body: Mapping[str, Any]) -> tuple[bool, bool]:
    stream = bool_param(body, "stream")
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not stream:
        fail("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options")
    expect(options, dict, "an object", "stream_options")
    return stream, bool_param(options, "include_usage")


def prompt_list(body: Mapping[str, Any], decode: Any) -> list[str]:
    """Legacy completions: a string, strings, token ids or lists of token ids, as one list of prompts."""
    prompt = body.get("prompt")
    if prompt is None:
        fail("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
    if isinstance(prompt, str):
        return [prompt]
    expect(prompt, list, "a string or an array", "prompt")
    if not prompt:
        fail(
            "Invalid 'prompt': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            "prompt",
            "empty_array",
        )
    if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
        return [decode(prompt)]
    prompts: list[str] = []
    for i, item in enumerate(prompt):
        if isinstance(item, list) and all(isinstance(t, int) for t in item):
            prompts.append(decode(item))
        else:
            expect(item, str, "a string", f"prompt[{i}]")
            prompts.append(item)
    return prompts
