"""Every provider that does not speak the OpenAI wire format, through litellm's translation.

This is the only module that imports litellm, and only on first use: the import costs
~2 s and registers global state, so a gateway that never routes here never pays for it.
We use two things of litellm: its per-provider request/response translation
(`acompletion`, `atext_completion`, `aembedding`) and its bundled price map. Retries,
fallbacks, logging and budgets stay in the gateway.

Choices, each because the alternative was worse for a client:
- `drop_params=True` per call (litellm's global stays untouched): an OpenAI parameter the
  provider lacks (`seed`, `logit_bias`, `n` on Anthropic) is dropped instead of failing
  the request, so a request that is valid for one deployment of an alias stays valid
  when the router falls back to a deployment of another provider.
- Client body fields reach litellm only if they are OpenAI parameters; others are not
  forwarded. litellm reads its keyword arguments as instructions to itself (`api_base`,
  `api_key`, `mock_response`, `metadata`, cloud credentials: hundreds of names, growing
  with each release), and passing them as `extra_body` instead is not neutral either:
  for Anthropic litellm sends a literal `"extra_body"` field. A client must never steer
  litellm, and dropping matches `drop_params`. `deployment.extra_body` comes from the
  operator and is passed as keyword arguments, so it may carry provider fields (`top_k`)
  and litellm settings (`api_version` for Azure) alike.
- Streams always ask for usage (accounting needs it); `SSEStream` drops the usage chunk
  again when the client did not ask for it.
- Responses are re-serialised as plain OpenAI bodies: litellm's own additions
  (`provider_specific_fields`, cost, Anthropic cache counters, null-valued extras) are
  removed so the client sees what OpenAI would have sent.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import importlib.util
import re
import warnings
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from gateway.config import LITELLM_PROVIDERS, Deployment
from gateway.errors import (
    TollgateError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.providers.base import (
    DONE_EVENT,
    Endpoint,
    ProviderCall,
    ProviderResponse,
    SSEStream,
    retry_after_seconds,
    sse_event,
)
from gateway.providers.openai_compat import CONTEXT_LENGTH_EXCEEDED

# OpenAI request parameters handed to litellm as keyword arguments (it translates them).
_OPENAI_PARAMS: dict[Endpoint, frozenset[str]] = {
    "chat": frozenset({
        "messages", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "max_tokens",
        "max_completion_tokens", "n", "presence_penalty", "response_format", "seed", "stop",
        "temperature", "top_p", "tools", "tool_choice", "parallel_tool_calls", "user", "functions",
        "function_call", "modalities", "prediction", "audio", "reasoning_effort", "service_tier",
        "verbosity", "web_search_options", "prompt_cache_key", "safety_identifier", "thinking",
    }),
    "completions": frozenset({
        "prompt", "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "n",
        "presence_penalty", "seed", "stop", "suffix", "temperature", "top_p", "user",
    }),
    "embeddings": frozenset({"input", "dimensions", "encoding_format", "user"}),
}  # fmt: skip

# Keys litellm adds to OpenAI-shaped objects that OpenAI itself never sends.
_LITELLM_ONLY_KEYS = frozenset({"provider_specific_fields", "citations", "thinking_blocks"})
_USAGE_KEYS = frozenset({"prompt_tokens", "completion_tokens", "total_tokens"})
_USAGE_DETAIL_KEYS = {
    # `cache_creation_tokens` is litellm's name for Anthropic's cache writes, which OpenAI's
    # shape has no field for; kept so accounting bills them at the cache-write rate.
    "prompt_tokens_details": frozenset({"cached_tokens", "audio_tokens", "cache_creation_tokens"}),
    "completion_tokens_details": frozenset(
        {"reasoning_tokens", "audio_tokens", "accepted_prediction_tokens", "rejected_prediction_tokens"}
    ),
}
_EMBEDDING_USAGE_KEYS = frozenset({"prompt_tokens", "total_tokens"})

# "litellm.RateLimitError: RateLimitError: OpenAIException - slow down" -> "slow down"
_MESSAGE_PREFIX = re.compile(r"^(?:litellm\.\w+:\s*|\w+(?:Error|Exception)(?:: | - ))+")
_MESSAGE_SUFFIX = re.compile(r"\.?\s*Handle with `litellm\.\w+`\.?\s*$")
_READONLY_TYPEDDICT_WARNING = r"Item '\w+' on TypedDict class '\w+' is using the `ReadOnly` qualifier"
# Some litellm messages embed the whole upstream response; a client needs the gist.
_MAX_MESSAGE_CHARS = 1000


def _litellm() -> Any:
    """The litellm module, imported on first use; typed Any because its own stubs are partial."""
    module: Any = importlib.import_module("litellm")
    # Without this litellm prints a provider-list banner to stdout on every failed call.
    module.suppress_debug_info = True
    _build_response_models(module)
    return module


def anthropic_messages_params(body: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI chat body as Anthropic Messages params (a Message Batches request), translated
    by litellm as the online path would translate it."""
    config = importlib.import_module("litellm.llms.anthropic.chat.transformation").AnthropicConfig()
    rest = dict(body)
    messages = rest.pop("messages")
    model = str(rest.pop("model"))
    optional = config.map_openai_params(non_default_params=rest, optional_params={}, model=model, drop_params=True)
    params: dict[str, Any] = config.transform_request(model, messages, optional, {}, {})
    params["model"] = model
    params.pop("stream", None)
    return params


def _build_response_models(module: Any) -> None:
    """Complete litellm's response models now, with pydantic's one known warning silenced.

    Their pydantic schemas are built on first use, and building them warns (UserWarning)
    that a TypedDict of litellm's uses `ReadOnly`. Left alone, that warning fires in the
    middle of the first request, where a process running with warnings as errors (the test
    suite) turns it into a failed request. Once built, this is a few attribute reads.
    """
    types = module.types.utils
    # Message and Delta are the two that warn; building a response does not complete them.
    models = (
        types.Message,
        types.Delta,
        types.ModelResponse,
        types.ModelResponseStream,
        types.TextCompletionResponse,
        types.EmbeddingResponse,
    )
    pending = [model for model in models if not model.__pydantic_complete__]
    if not pending:
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_READONLY_TYPEDDICT_WARNING, category=UserWarning)
        for model in pending:
            model.model_rebuild()


class LitellmProvider:
    kind = "litellm"

    @staticmethod
    async def warm() -> None:
        """Import litellm before the first request needs it (seconds, off the event loop)."""
        await asyncio.to_thread(_litellm)

    async def send(self, call: ProviderCall, deployment: Deployment) -> ProviderResponse:
        litellm = _litellm()
        upstream_model = _upstream_model(call, deployment)
        where = f"{deployment.provider}/{upstream_model}"
        kwargs = _arguments(call, deployment, upstream_model)
        try:
            if call.endpoint == "chat":
                result = await litellm.acompletion(**kwargs)
            elif call.endpoint == "completions":
                result = await litellm.atext_completion(**kwargs)
            else:
                result = await litellm.aembedding(**kwargs)
        except Exception as err:
            raise _translate_or_reraise(err, where, deployment) from err
        if call.stream and call.endpoint != "embeddings":
            include_usage = bool((call.body.get("stream_options") or {}).get("include_usage"))
            return ProviderResponse(
                stream=SSEStream(_events(result, where, deployment), include_usage=include_usage)
            )
        body = _dump(result)
        if call.endpoint == "embeddings":
            return ProviderResponse.from_json(_clean_embeddings(body))
        return ProviderResponse.from_json(_clean_completion(body, chunk=False))

    async def aclose(self) -> None:
        # Nothing of ours to close. litellm pools its HTTP clients in a process-wide cache and
        # closes them from its own exit hook; closing them here would break any other user of
        # litellm in the process (a second gateway app in the same test run, say).
        return None


def _upstream_model(call: ProviderCall, deployment: Deployment) -> str:
    # A wildcard deployment serves whatever the router put in the body (already the upstream's name).
    if deployment.model == "*":
        return str(call.body.get("model") or "")
    return deployment.model


def _arguments(call: ProviderCall, deployment: Deployment, upstream_model: str) -> dict[str, Any]:
    prefix = LITELLM_PROVIDERS.get(deployment.provider, "")
    allowed = _OPENAI_PARAMS[call.endpoint]
    kwargs: dict[str, Any] = {k: v for k, v in call.body.items() if k in allowed}
    kwargs.update(deployment.extra_body)
    if call.headers:
        kwargs["extra_headers"] = {**(kwargs.get("extra_headers") or {}), **call.headers}
    kwargs.update(
        model=f"{prefix}/{upstream_model}" if prefix else upstream_model,
        api_base=deployment.resolved_api_base(),
        api_key=deployment.resolved_api_key(),
        timeout=deployment.timeout_s,
        # The gateway's router retries and falls back; litellm retrying as well would multiply attempts.
        num_retries=0,
        max_retries=0,
        drop_params=True,
    )
    if call.stream and call.endpoint != "embeddings":
        kwargs["stream"] = True
        kwargs["stream_options"] = {**(call.body.get("stream_options") or {}), "include_usage": True}
    return kwargs


def _dump(obj: Any) -> dict[str, Any]:
    # litellm answers with its pydantic response models; a plain dict is accepted as well.
    if isinstance(obj, dict):
        return obj
    body: dict[str, Any] = obj.model_dump()
    return body


async def _events(stream: Any, where: str, deployment: Deployment) -> AsyncIterator[bytes]:
    """litellm's chunk objects as OpenAI SSE events, ending in [DONE]; errors translated."""
    try:
        async for chunk in stream:
            yield sse_event(_clean_completion(_dump(chunk), chunk=True))
    except Exception as err:
        raise _translate_or_reraise(err, where, deployment) from err
    finally:
        await _close(stream)
    yield DONE_EVENT


async def _close(stream: Any) -> None:
    # The text-completion wrapper has no aclose of its own; the chat stream it wraps does.
    for candidate in (stream, getattr(stream, "completion_stream", None)):
        close = getattr(candidate, "aclose", None)
        if close is not None:
            await close()
            return


# --- response cleaning ---------------------------------------------------------------------


def _strip(value: Any) -> Any:
    """Drop None values and litellm-only keys, recursively; leaves of lists are returned as is."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if v is not None and k not in _LITELLM_ONLY_KEYS}
    # Embedding vectors and token lists are long lists of numbers: not walked.
    if isinstance(value, list) and value and isinstance(value[0], dict | list):
        return [_strip(v) for v in value]
    return value


def _clean_usage(usage: Any, keys: frozenset[str] = _USAGE_KEYS) -> dict[str, Any] | None:
    if not isinstance(usage, dict):
        return None
    cleaned: dict[str, Any] = {k: v for k, v in usage.items() if k in keys and v is not None}
    for name, detail_keys in _USAGE_DETAIL_KEYS.items():
        if keys is _USAGE_KEYS and isinstance(usage.get(name), dict):
            details = {k: v for k, v in usage[name].items() if k in detail_keys and v is not None}
            if details:
                cleaned[name] = details
    return cleaned


def _clean_completion(body: dict[str, Any], *, chunk: bool) -> dict[str, Any]:
    """A chat completion, chat chunk or text completion as OpenAI would have sent it."""
    usage = _clean_usage(body.get("usage"))
    cleaned: dict[str, Any] = _strip({k: v for k, v in body.items() if k != "usage"})
    text_completion = body.get("object") == "text_completion"
    choices = []
    for raw, choice in zip(body.get("choices") or [], cleaned.get("choices") or [], strict=False):
        # OpenAI always sends these, null or empty or not; a client may index them.
        choice["finish_reason"] = raw.get("finish_reason")
        choice["logprobs"] = raw.get("logprobs")
        if "message" in choice:
            choice["message"].setdefault("content", None)
        if text_completion:
            choice.setdefault("text", "")
        choices.append(choice)
    if chunk and usage is not None and all(_is_empty_choice(c) for c in choices):
        # litellm attaches stream usage to a chunk with one empty choice; OpenAI's usage chunk
        # has none, and that is what lets SSEStream drop it when the client did not ask.
        choices = []
    cleaned["choices"] = choices
    if usage is not None:
        cleaned["usage"] = usage
    return cleaned


def _is_empty_choice(choice: Mapping[str, Any]) -> bool:
    return not choice.get("delta") and not choice.get("text") and choice.get("finish_reason") is None


def _clean_embeddings(body: dict[str, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = _strip({k: v for k, v in body.items() if k != "usage"})
    usage = _clean_usage(body.get("usage"), _EMBEDDING_USAGE_KEYS)
    if usage is not None:
        cleaned["usage"] = usage
    return cleaned


# --- errors --------------------------------------------------------------------------------


def _translate_or_reraise(err: Exception, where: str, deployment: Deployment) -> Exception:
    """The gateway error for a litellm failure; a foreign error (a bug) is returned unchanged."""
    translated = translate_error(err, where, deployment)
    return translated if translated is not None else err


def translate_error(err: BaseException, where: str, deployment: Deployment) -> TollgateError | None:
    """Map a litellm (or underlying transport) exception onto the gateway's error tree.

    litellm's classes do not say what happened reliably: a refused connection arrives as
    InternalServerError, a response it could not parse as APIConnectionError (its
    catch-all), Anthropic's 503 as a 500. So the cause chain decides first (a timeout, a
    network failure), then the provider's own HTTP status, found deepest in the chain.
    Returns None for an exception that is not an upstream failure (a bug: let it surface).
    """
    # Imported here, not at the top: all three load with litellm, which has loaded by now.
    import aiohttp
    import httpx
    import openai

    if isinstance(err, TollgateError):
        return err
    chain = _cause_chain(err)
    if any(isinstance(e, openai.APITimeoutError | httpx.TimeoutException | TimeoutError) for e in chain):
        return UpstreamTimeout(f"{where}: no response within {deployment.timeout_s:g}s")
    base = deployment.resolved_api_base() or "the provider"
    detail = " ".join(str(chain[-1]).split())[:_MAX_MESSAGE_CHARS]
    refused = (ConnectionRefusedError, httpx.ConnectError, aiohttp.ClientConnectorError)
    if any(isinstance(e, refused) for e in chain):
        return UpstreamUnavailable(f"{where}: cannot connect to {base}: {detail}")
    litellm_catch_all = _litellm().APIConnectionError
    lost = (ConnectionError, httpx.NetworkError, httpx.RemoteProtocolError, aiohttp.ClientConnectionError)
    if any(
        isinstance(e, lost)
        or (isinstance(e, openai.APIConnectionError) and not isinstance(e, litellm_catch_all))
        for e in chain
    ):
        return UpstreamUnavailable(f"{where}: connection to {base} lost: {detail}")
    if not isinstance(err, openai.APIError):
        return None
    message, error_type = _provider_message(err)
    text = f"{where}: {message}"[:_MAX_MESSAGE_CHARS]
    status = _upstream_status(chain)
    if status == 429 or isinstance(err, openai.RateLimitError):
        return UpstreamRateLimited(text, retry_after_s=_retry_after(err))
    if status == 408 or status == 504:
        return UpstreamTimeout(text, upstream_status=status)
    if status is not None and 400 <= status < 500:
        # litellm recognises each provider's "prompt too long" (Anthropic's included) by its wording.
        overflow = any(isinstance(e, _litellm().ContextWindowExceededError) for e in chain)
        code = CONTEXT_LENGTH_EXCEEDED if overflow else None
        return UpstreamRejected(text, upstream_status=status, error_type=error_type, code=code)
    if status in (502, 503, 529):
        # 529 is Anthropic's "overloaded".
        return UpstreamUnavailable(text, upstream_status=status)
    return UpstreamError(text, upstream_status=status)


def _upstream_status(chain: list[BaseException]) -> int | None:
    # The deepest status is the provider's; litellm's outer exceptions restate it, sometimes wrongly.
    for exc in reversed(chain):
        status = getattr(exc, "status_code", None)
        if isinstance(status, int) and not isinstance(status, bool):
            return status
    return None


def _cause_chain(err: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and all(current is not seen for seen in chain) and len(chain) < 16:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _provider_message(err: Exception) -> tuple[str, str | None]:
    """The provider's own error message and type, without litellm's decoration."""
    body = getattr(err, "body", None)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        error_type = body.get("type")
        return body["message"], error_type if isinstance(error_type, str) else None
    raw = getattr(err, "message", None)
    text = raw if isinstance(raw, str) else str(err)
    text = _MESSAGE_SUFFIX.sub("", _MESSAGE_PREFIX.sub("", text.strip()))
    # Some providers' bodies arrive as a bytes repr (b'{...}') or as raw JSON.
    if text[:2] in ("b'", 'b"'):
        try:
            literal = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            literal = None
        if isinstance(literal, bytes):
            text = literal.decode("utf-8", "replace")
    if text.startswith("{"):
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            error = parsed.get("error", parsed)
            if isinstance(error, dict) and isinstance(error.get("message"), str):
                error_type = error.get("type")
                return error["message"], error_type if isinstance(error_type, str) else None
            if isinstance(error, str):
                return error, None
    return text or type(err).__name__, None


def _retry_after(err: Exception) -> float | None:
    headers = getattr(err, "litellm_response_headers", None)
    if headers is None:
        response = getattr(err, "response", None)
        headers = getattr(response, "headers", None)
    if headers is None:
        return None
    return retry_after_seconds(headers)
