"""OpenAI request bodies -> prompt tokens and SamplingParams; every bad field is named."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from local_engine.errors import InvalidRequestError
from local_engine.sampling_params import SamplingParams
from local_engine.tokenizer import Tokenizer

TENANT_HEADER = "x-tollgate-tenant"
# OpenAI features the engine does not implement: refused, not silently ignored
_UNSUPPORTED_IF_SET = ("tools", "functions", "logit_bias", "response_format", "audio", "prediction")


@dataclass(slots=True)
class ParsedRequest:
    prompt_token_ids: list[int]
    params: SamplingParams
    stream: bool
    include_usage: bool
    tenant: str


def _number(body: dict[str, Any], name: str, default: float, kind: type = float) -> Any:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and not isinstance(value, int)):
        raise InvalidRequestError(f"{name} must be {'an integer' if kind is int else 'a number'}", name)
    return kind(value)


def _stop(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return list(stop)
    raise InvalidRequestError("stop must be a string or a list of strings", "stop")


def _tenant(body: dict[str, Any], headers: dict[str, str]) -> str:
    tenant = headers.get(TENANT_HEADER)
    if tenant is None:
        tenant = body.get("tenant", "")
        if not isinstance(tenant, str):
            raise InvalidRequestError("tenant must be a string", "tenant")
    if len(tenant) > 256:
        raise InvalidRequestError("tenant must be at most 256 characters", "tenant")
    return tenant


def _common(
    body: dict[str, Any], headers: dict[str, str], prompt: list[int], max_model_len: int, max_tokens_key: str
) -> ParsedRequest:
    for name in _UNSUPPORTED_IF_SET:
        if body.get(name) not in (None, [], {}, {"type": "text"}):
            raise InvalidRequestError(f"{name} is not supported by this engine", name)
    if body.get("logprobs") not in (None, False, 0):
        raise InvalidRequestError("logprobs is not supported by this engine", "logprobs")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequestError("stream must be a boolean", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise InvalidRequestError("stream_options must be an object", "stream_options")
    stop_ids = body.get("stop_token_ids") or []
    if not isinstance(stop_ids, list) or not all(isinstance(t, int) for t in stop_ids):
        raise InvalidRequestError("stop_token_ids must be a list of integers", "stop_token_ids")
    room = max(1, max_model_len - len(prompt))
    max_tokens = body.get(max_tokens_key)
    if max_tokens is None and max_tokens_key == "max_completion_tokens":
        max_tokens_key = "max_tokens"
        max_tokens = body.get("max_tokens")
    max_tokens = _number({max_tokens_key: max_tokens}, max_tokens_key, room, int)
    if max_tokens < 1:
        raise InvalidRequestError(f"{max_tokens_key} must be at least 1", max_tokens_key)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidRequestError("seed must be an integer", "seed")
    params = SamplingParams(
        temperature=_number(body, "temperature", 1.0),
        top_p=_number(body, "top_p", 1.0),
        top_k=_number(body, "top_k", 0, int),
        seed=seed,
        max_tokens=min(max_tokens, room),
        n=_number(body, "n", 1, int),
        stop=_stop(body),
        stop_token_ids=list(stop_ids),
        ignore_eos=bool(body.get("ignore_eos", False)),
    )
    return ParsedRequest(prompt, params, stream, bool(options.get("include_usage")), _tenant(body, headers))


def parse_chat(
    body: dict[str, Any], headers: dict[str, str], tokenizer: Tokenizer, max_model_len: int
) -> ParsedRequest:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages must be a non-empty list", "messages")
    normalised = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequestError(f"messages[{i}] must be an object with a role", f"messages[{i}].role")
        content = message.get("content")
        if isinstance(content, list):  # content parts: only text is understood
            texts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text":
                    raise InvalidRequestError("only text content parts are supported", f"messages[{i}].content")
                texts.append(str(part.get("text", "")))
            content = "".join(texts)
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise InvalidRequestError("content must be a string or a list of parts", f"messages[{i}].content")
        normalised.append({"role": message["role"], "content": content})
    prompt = tokenizer.apply_chat_template(normalised)
    return _common(body, headers, prompt, max_model_len, "max_completion_tokens")


def parse_completion(
    body: dict[str, Any], headers: dict[str, str], tokenizer: Tokenizer, max_model_len: int
) -> ParsedRequest:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str) and prompt:
        ids = tokenizer.encode(prompt)
    elif isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        ids = list(prompt)
    else:
        raise InvalidRequestError("prompt must be a non-empty string or list of token ids (one prompt)", "prompt")
    if body.get("echo"):
        raise InvalidRequestError("echo is not supported by this engine", "echo")
    return _common(body, headers, ids, max_model_len, "max_tokens")
