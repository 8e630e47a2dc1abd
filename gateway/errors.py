"""One error tree for everything a client can be told.

Foreign exceptions (aiohttp, litellm, sqlite, redis, pydantic) are translated into a
`TollgateError` once, at the boundary where they are caught; the server renders any
`TollgateError` as an OpenAI-style body (or Anthropic-style on /v1/messages). Anything else
that escapes is a bug: it is logged with its traceback and the client sees a plain 500.
"""

from __future__ import annotations

from typing import Any

import orjson


class TollgateError(Exception):
    status: int = 500
    type: str = "api_error"
    code: str | None = None
    anthropic_type: str = "api_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers: dict[str, str] = dict(headers or {})

    def to_openai(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def to_anthropic(self) -> dict[str, Any]:
        return {"type": "error", "error": {"type": self.anthropic_type, "message": self.message}}

    def openai_body(self) -> bytes:
        return orjson.dumps(self.to_openai())

    def anthropic_body(self) -> bytes:
        return orjson.dumps(self.to_anthropic())


class InvalidRequest(TollgateError):
    status = 400
    type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


def header_choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    """A request header that takes one of a few values: the value in lower case, or a 400
    naming the header and what it accepts."""
    chosen = value.strip().lower()
    if chosen not in allowed:
        raise InvalidRequest(
            f"Invalid value for header '{name}': {value!r}. Allowed values: {', '.join(allowed)}.",
            param=name,
            code="invalid_value",
        )
    return chosen


class AuthenticationFailed(TollgateError):
    # OpenAI itself answers a bad key with type invalid_request_error, code invalid_api_key.
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"
    anthropic_type = "authentication_error"


class PermissionDenied(TollgateError):
    status = 403
    type = "permission_error"
    code = "permission_denied"
    anthropic_type = "permission_error"


class NotFound(TollgateError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"
    anthropic_type = "not_found_error"


class ModelNotFound(NotFound):
    code = "model_not_found"


class Gone(TollgateError):
    """What was asked for existed and is no more (a deferred request cancelled before it was sent)."""

    status = 410
    type = "invalid_request_error"
    anthropic_type = "not_found_error"


class MethodNotAllowed(TollgateError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"
    anthropic_type = "invalid_request_error"


class PayloadTooLarge(TollgateError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"
    anthropic_type = "request_too_large"


class RateLimited(TollgateError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"
    anthropic_type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after_s = retry_after_s
        if retry_after_s is not None:
            self.headers.setdefault("retry-after", str(max(1, round(retry_after_s))))


class BudgetExceeded(TollgateError):
    """A team's (key's, user's, model's) budget would be exceeded: not worth retrying soon.

    OpenAI answers an exhausted quota with 429 `insufficient_quota`; `x-should-retry: false`
    tells the OpenAI SDKs not to retry it.
    """

    status = 429
    type = "insufficient_quota"
    code = "budget_exceeded"
    anthropic_type = "rate_limit_error"

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.headers.setdefault("x-should-retry", "false")


class ModelNotAllowed(PermissionDenied):
    code = "model_not_allowed"


class InternalError(TollgateError):
    status = 500
    type = "api_error"
    code = "internal_error"


class ServiceUnavailable(TollgateError):
    """A dependency of the gateway itself (its store) is down: 503, nothing charged."""

    status = 503
    type = "api_error"
    code = "service_unavailable"
    anthropic_type = "overloaded_error"


class CacheMiss(TollgateError):
    """`only-if-cached` was asked and nothing is cached: 504, as HTTP caches answer it
    (RFC 9111); `x-should-retry: false`, since asking again finds the same nothing."""

    status = 504
    type = "invalid_request_error"
    code = "cache_miss"
    anthropic_type = "invalid_request_error"

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.headers.setdefault("x-should-retry", "false")


class UpstreamError(TollgateError):
    """The provider answered with an error: 502, carrying the provider's own message."""

    status = 502
    type = "api_error"
    code = "upstream_error"
    anthropic_type = "api_error"

    def __init__(self, message: str, *, upstream_status: int | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.upstream_status = upstream_status


class UpstreamUnavailable(UpstreamError):
    """No connection could be made, or every deployment is cooling down."""

    status = 503
    code = "upstream_unavailable"
    anthropic_type = "overloaded_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
    anthropic_type = "api_error"


class UpstreamRejected(UpstreamError):
    """The provider refused the request itself (4xx other than 429): the caller's to fix.

    It keeps the provider's status and error type so a client sees what it would have seen
    talking to the provider directly.
    """

    retryable = False

    def __init__(self, message: str, *, upstream_status: int, error_type: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, upstream_status=upstream_status, **kwargs)
        if upstream_status in (401, 403):
            # The provider refused the gateway's own credentials: a gateway misconfiguration,
            # not the client's key, so the client must not see a 401/403 it cannot fix.
            self.status = 502
            self.type = "api_error"
            self.code = "upstream_auth_failed"
            self.anthropic_type = "api_error"
            return
        self.status = upstream_status
        self.type = error_type or "invalid_request_error"
        self.anthropic_type = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}.get(
            upstream_status, "invalid_request_error"
        )


class UpstreamRateLimited(RateLimited):
    """The provider said 429; retried and still limited."""

    code = "upstream_rate_limited"
