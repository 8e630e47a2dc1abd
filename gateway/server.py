"""The ASGI app: a thin raw-ASGI hot path for the proxied endpoints, Starlette for the rest.

The proxied endpoints (chat completions, completions, embeddings, Anthropic messages) are
the gateway's cost: each request here pays for every microsecond, so they are handled by a
plain ASGI callable (Starlette's Request/StreamingResponse add 20-70% to a proxied request;
see docs/decisions/0001-raw-asgi-hot-path.md). Control routes (models, health, admin) go
through Starlette, where readability wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from decimal import Decimal
from typing import Any

import orjson

from gateway.accounting.costing import CostReport, Outcome, usd_text
from gateway.batch.jobs import DEFER_HEADER, WEBHOOK_HEADER
from gateway.cache.controls import REQUEST_HEADERS
from gateway.config import Config
from gateway.control import build_control_app
from gateway.errors import InternalError, MethodNotAllowed, PayloadTooLarge, ServiceUnavailable, TollgateError
from gateway.pipeline import FORWARDED_HEADER_PREFIXES, Request, RequestContext, Wire
from gateway.providers.base import DONE_EVENT, Endpoint, ProviderResponse
from gateway.runtime import Runtime
from gateway.stages.route import ROUTE_HEADER
from gateway.store.base import StoreUnavailable
from gateway.telemetry import Telemetry
from gateway.wire import anthropic
from gateway.wire.anthropic_stream import AnthropicStream
from gateway.wire.openai import parse_body, validate

log = logging.getLogger("tollgate.server")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_ROUTES: dict[str, tuple[Endpoint, Wire]] = {
    "/v1/chat/completions": ("chat", "openai"),
    "/v1/completions": ("completions", "openai"),
    "/v1/embeddings": ("embeddings", "openai"),
    "/v1/messages": ("chat", "anthropic"),
}
# Clients that set base_url without /v1 are served too.
_ROUTES.update({path[3:]: route for path, route in list(_ROUTES.items())})

_JSON = (b"content-type", b"application/json")
_SSE = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_FORWARDED_PREFIXES = tuple(prefix.encode() for prefix in FORWARDED_HEADER_PREFIXES)
# W3C trace context: continued by our span when tracing, else passed upstream untouched.
_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate"})
# Request headers kept for stages: the cache controls, the route choice and the deferral.
_STAGE_HEADERS = frozenset(
    name.encode() for name in (*REQUEST_HEADERS, ROUTE_HEADER, DEFER_HEADER, WEBHOOK_HEADER)
)
_WATCH_DISCONNECT_AFTER_S = 0.05


class TollgateApp:
    def __init__(self, config: Config, *, telemetry: Telemetry | None = None) -> None:
        self.config = config
        self.runtime: Runtime | None = None
        # Given by tests that read spans in memory; otherwise built from the OTEL_* variables.
        self._telemetry = telemetry
        self.control = build_control_app(self)
        self._max_body = config.server.max_body_bytes
        self._user_header = config.stages.policy.user_header.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            route = _ROUTES.get(scope["path"])
            if route is not None:
                await self._proxy(scope, receive, send, *route)
            else:
                await self.control(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.control(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.runtime = await Runtime.start(self.config, telemetry=self._telemetry)
                except Exception as err:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(err)})
                    return
                # Everything built so far lives as long as the process (modules, config,
                # litellm's tables when loaded): move it out of the collector's sight, so
                # full collections under load do not walk it again and again.
                gc.collect()
                gc.freeze()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.runtime is not None:
                    await self.runtime.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _proxy(
        self, scope: Scope, receive: Receive, send: Send, endpoint: Endpoint, wire: Wire
    ) -> None:
        request_id = os.urandom(12).hex()
        runtime = self.runtime
        ctx: RequestContext | None = None
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed(
                    f"{scope['method']} is not allowed on {scope['path']}; use POST.",
                    headers={"allow": "POST"},
                )
            assert runtime is not None, "the lifespan has not started the gateway"
            api_key, client_headers, length, end_user, stage_headers = _read_headers(
                scope["headers"], self._user_header
            )
            raw = await _read_body(receive, length, self._max_body)
            body = parse_body(raw)
            if wire == "anthropic":
                request = validate("chat", anthropic.messages_to_chat(body))
            else:
                request = validate(endpoint, body, raw)
            ctx = RequestContext(
                request_id=request_id,
                original=request,
                request=request,
                wire=wire,
                client_headers=client_headers,
                api_key=api_key,
                end_user=end_user or _body_user(request),
            )
            if stage_headers is not None:
                ctx.request_headers = stage_headers
            runtime.telemetry.start(ctx)
            response = await runtime.chain(ctx)
        except Exception as exc:
            err = _as_tollgate_error(exc, request_id)
            if ctx is not None and runtime is not None:
                outcome: Outcome = "error" if ctx.deployment is not None or err.status >= 500 else "refused"
                _settle_quietly(
                    runtime, ctx, None, status=err.status, outcome=outcome, error_type=err.code or err.type
                )
            await _send_error(send, err, wire, request_id)
            return
        if response.stream is not None:
            await self._send_stream(runtime, ctx, response, receive, send)
        else:
            await self._send_json(runtime, ctx, response, send)

    async def _send_json(
        self, runtime: Runtime, ctx: RequestContext, response: ProviderResponse, send: Send
    ) -> None:
        try:
            if ctx.wire == "anthropic" and response.status != 202:
                body = orjson.dumps(anthropic.chat_to_message(response.json(), model=ctx.original.model))
            else:
                body = response.body_bytes()
            report = runtime.accountant.settle(
                ctx, response, status=response.status, outcome=_outcome(ctx, response)
            )
        except Exception:
            log.exception("failed to render the response", extra={"request_id": ctx.request_id})
            failure = InternalError("The gateway failed to render the upstream's answer.")
            _settle_quietly(
                runtime, ctx, None, status=failure.status, outcome="error", error_type=failure.code
            )
            await _send_error(send, failure, ctx.wire, ctx.request_id)
            return
        headers = [_JSON, (b"content-length", str(len(body)).encode()), *_tollgate_headers(ctx, report)]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _send_stream(
        self, runtime: Runtime, ctx: RequestContext, response: ProviderResponse, receive: Receive, send: Send
    ) -> None:
        """Forward the stream; cost it at its end, whatever the end is.

        Headers leave before the cost is known, so the figures follow in-band: an SSE comment
        (`: tollgate {...}`, which SSE clients skip) just before `data: [DONE]` (or at the end
        of an Anthropic stream), and in the ledger under the request id from the headers.
        """
        assert response.stream is not None
        chunks: AsyncIterator[bytes]
        openai_wire = ctx.wire == "openai"
        if openai_wire:
            chunks = aiter(response.stream)
        else:
            chunks = aiter(AnthropicStream(response.stream, model=ctx.original.model))
        headers = [*_SSE, *_tollgate_headers(ctx, None)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        # A client that hangs up must not keep the upstream generating (and billing) tokens.
        # The watcher is a task of its own, so it starts only once a stream proves slow: a
        # burst that is over within the grace period costs nothing to finish.
        disconnected: asyncio.Future[None] | None = None
        loop = asyncio.get_running_loop()
        watch_from = loop.time() + _WATCH_DISCONNECT_AFTER_S
        outcome: Outcome = "ok"
        error_type: str | None = None
        done = b""
        try:
            async for chunk in chunks:
                if disconnected is None:
                    if loop.time() >= watch_from:
                        disconnected = asyncio.ensure_future(_wait_disconnect(receive))
                elif disconnected.done():
                    outcome = "disconnected"
                    break
                if openai_wire and chunk.endswith(DONE_EVENT):
                    # Held back: the cost comment goes first.
                    chunk, done = chunk[: -len(DONE_EVENT)], DONE_EVENT
                    if not chunk:
                        continue
                if ctx.first_token_at is None:
                    ctx.first_token_at = time.perf_counter()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except TollgateError as err:
            log.warning(
                "upstream failed mid-stream", extra={"request_id": ctx.request_id, "error": err.message}
            )
            outcome, error_type = "error", err.code or err.type
            await send(
                {"type": "http.response.body", "body": _stream_error(err, ctx.wire), "more_body": True}
            )
        except Exception:
            log.exception("stream failed", extra={"request_id": ctx.request_id})
            failure = InternalError("The gateway failed while streaming the answer.")
            outcome, error_type = "error", failure.code
            await send(
                {"type": "http.response.body", "body": _stream_error(failure, ctx.wire), "more_body": True}
            )
        finally:
            if disconnected is not None:
                if disconnected.done() and outcome == "ok":
                    outcome = "disconnected"
                disconnected.cancel()
            with contextlib.suppress(Exception):
                await response.stream.aclose()
        if outcome == "ok":
            outcome = _outcome(ctx, response)
        report = _settle_quietly(runtime, ctx, response, status=200, outcome=outcome, error_type=error_type)
        tail = done
        if report is not None and outcome != "disconnected":
            tail = _cost_comment(ctx, report) + done
        await send({"type": "http.response.body", "body": tail})


def _outcome(ctx: RequestContext, response: ProviderResponse) -> Outcome:
    """How an answered request ended: a stage's own answer when no deployment served it."""
    if response.status == 202:
        return "deferred"
    if ctx.deployment is None:
        return "short_circuit"
    return "ok" if response.status < 400 else "error"


def _settle_quietly(
    runtime: Runtime,
    ctx: RequestContext,
    response: ProviderResponse | None,
    *,
    status: int,
    outcome: Outcome,
    error_type: str | None,
) -> CostReport | None:
    """Settle after the client has its answer: a failure here is logged, never sent."""
    try:
        return runtime.accountant.settle(ctx, response, status=status, outcome=outcome, error_type=error_type)
    except Exception:
        log.exception("failed to cost a request", extra={"request_id": ctx.request_id})
        return None


def _as_tollgate_error(exc: Exception, request_id: str) -> TollgateError:
    if isinstance(exc, TollgateError):
        return exc
    if isinstance(exc, StoreUnavailable):
        log.error("store unavailable", extra={"request_id": request_id, "error": str(exc)})
        return ServiceUnavailable("The gateway's store is unavailable; try again shortly.")
    log.exception("unhandled error", extra={"request_id": request_id})
    return InternalError("The gateway failed to handle this request.")


def _read_headers(
    headers: list[tuple[bytes, bytes]], user_header: bytes
) -> tuple[str | None, dict[str, str], int | None, str | None, dict[str, str] | None]:
    api_key: str | None = None
    forwarded: dict[str, str] = {}
    length: int | None = None
    user: str | None = None
    for_stages: dict[str, str] | None = None
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token:
                api_key = token.strip()
        elif name == b"x-api-key":
            api_key = api_key or value.decode("latin-1").strip()
        elif name == b"content-length":
            with contextlib.suppress(ValueError):
                length = int(value)
        elif name.startswith(_FORWARDED_PREFIXES) or name in _TRACE_HEADERS:
            forwarded[name.decode("latin-1")] = value.decode("latin-1")
        elif name in _STAGE_HEADERS:
            if for_stages is None:
                for_stages = {}
            for_stages[name.decode("latin-1")] = value.decode("latin-1")
        elif name == user_header:
            user = value.decode("latin-1").strip() or None
    return api_key, forwarded, length, user, for_stages


def _body_user(request: Request) -> str | None:
    user = request.body.get("user")
    return user if isinstance(user, str) and user else None


async def _read_body(receive: Receive, length: int | None, limit: int) -> bytes:
    if length is not None and length > limit:
        raise PayloadTooLarge(f"Request body is {length} bytes; the limit is {limit} bytes.")
    message = await receive()
    body: bytes = message.get("body", b"")
    # A chunked upload has no content-length, and the server may hand it over in one piece.
    if len(body) > limit:
        raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes.")
    if not message.get("more_body"):
        return body
    parts = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes.")
        parts.append(chunk)
    return b"".join(parts)


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _tollgate_headers(ctx: RequestContext, report: CostReport | None) -> list[tuple[bytes, bytes]]:
    request_id = ctx.request_id.encode()
    headers = [(b"x-request-id", request_id), (b"x-tollgate-request-id", request_id)]
    if ctx.served_model:
        headers.append((b"x-tollgate-model", ctx.served_model.encode()))
    if report is not None:
        for name, amount in (
            (b"x-tollgate-cost-usd", report.cost_usd),
            (b"x-tollgate-baseline-usd", report.baseline_usd),
            (b"x-tollgate-saved-usd", report.saved_usd),
        ):
            headers.append((name, _usd(amount)))
    for key, value in ctx.response_headers.items():
        headers.append((key.encode(), value.encode()))
    return headers


def _usd(amount: Decimal | None) -> bytes:
    return usd_text(amount).encode()


def _cost_comment(ctx: RequestContext, report: CostReport) -> bytes:
    figures = {
        "request_id": ctx.request_id,
        "cost_usd": _usd(report.cost_usd).decode(),
        "baseline_usd": _usd(report.baseline_usd).decode(),
        "saved_usd": _usd(report.saved_usd).decode(),
    }
    return b": tollgate " + orjson.dumps(figures) + b"\n\n"


def _stream_error(err: TollgateError, wire: Wire) -> bytes:
    if wire == "anthropic":
        return b"event: error\ndata: " + err.anthropic_body() + b"\n\n"
    return b"data: " + err.openai_body() + b"\n\n"


async def _send_error(send: Send, err: TollgateError, wire: Wire, request_id: str) -> None:
    body = err.anthropic_body() if wire == "anthropic" else err.openai_body()
    rid = request_id.encode()
    headers = [_JSON, (b"content-length", str(len(body)).encode()), (b"x-request-id", rid), (b"x-tollgate-request-id", rid)]
    headers += [(k.encode(), v.encode()) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(config: Config, *, telemetry: Telemetry | None = None) -> TollgateApp:
    return TollgateApp(config, telemetry=telemetry)
