"""The simulator as a real HTTP server: OpenAI and Anthropic routes on one port.

A plain ASGI callable rather than a framework app: injecting connection-level faults
(dropping the socket, never answering) needs the raw `receive`/`send`, and as the upstream
of every benchmark it should cost as little CPU as possible. Each stream event is its own
`http.response.body` message, which the server writes out at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.config import SimConfig
from gateway.errors import InvalidRequest, TollgateError
from gateway.sim import tokens
from gateway.sim.batch_routes import BatchRoutes
from gateway.sim.core import SimCore
from gateway.sim.exchange import Exchange
from gateway.sim.faults import (
    ERROR_FAULTS,
    MALFORMED_BODY,
    MALFORMED_EVENT,
    FaultInjector,
    Wire,
    error_answer,
)
from gateway.sim.pacing import Pacer, fault_index, generation_s
from gateway.sim.plan import Answer, random_id

logger = logging.getLogger("gateway.sim")

MODELS = (
    "sim/gpt-4o", "sim/gpt-4o-mini", "sim/gpt-4.1", "sim/gpt-4.1-mini", "sim/gpt-4.1-nano", "sim/o4-mini",
    "sim/gpt-3.5-turbo-instruct", "sim/claude-3-5-haiku-latest", "sim/claude-3-5-sonnet-latest",
    "sim/claude-sonnet-4-0", "sim/text-embedding-3-small", "sim/text-embedding-3-large",
)  # fmt: skip
_MODELS_CREATED = 1_715_367_049
_OPENAI_ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer "
    "auth (i.e. Authorization: Bearer YOUR_KEY). You can obtain an API key from https://platform.openai.com/account/api-keys."
)


def _openai_error(
    message: str, kind: str = "invalid_request_error", code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _anthropic_error(message: str, kind: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


class SimServer:
    """ASGI app; one `SimCore` (prompt cache) and one `FaultInjector` (seeded RNG) per app."""

    def __init__(self, settings: SimConfig, *, api_key: str | None = None, fault_seed: int = 0) -> None:
        self.settings = settings
        self.api_key = api_key
        self.core = SimCore()
        self.faults = FaultInjector(settings, seed=fault_seed)
        self.batches = BatchRoutes(
            settings, self.core, openai_auth=self._openai_auth, anthropic_auth=self._anthropic_auth
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        exchange = Exchange(scope, receive, send)
        method, path = scope["method"], scope["path"]
        try:
            await self._route(exchange, method, path)
        except Exception:
            logger.exception("simulator failed on %s %s", method, path)
            if not exchange.started:
                await exchange.respond_json(
                    500, _openai_error("The server had an error processing your request.", "server_error")
                )

    async def _route(self, exchange: Exchange, method: str, path: str) -> None:
        if path in _OPENAI_ENDPOINTS or path == "/v1/messages":
            if method != "POST":
                await exchange.respond_json(405, _openai_error(f"Invalid method for URL ({method} {path})"))
            elif path == "/v1/messages":
                await self._anthropic(exchange)
            else:
                await self._openai(exchange, _OPENAI_ENDPOINTS[path])
        elif method == "GET" and path == "/health":
            await exchange.respond_json(200, {"status": "ok"})
        elif method == "GET" and (path == "/v1/models" or path.startswith("/v1/models/")):
            if (denied := self._openai_auth(exchange)) is not None:
                await exchange.respond_json(401, denied)
            elif path == "/v1/models":
                await exchange.respond_json(200, {"object": "list", "data": [_model(m) for m in MODELS]})
            else:
                await exchange.respond_json(200, _model(path.removeprefix("/v1/models/")))
        elif BatchRoutes.handles(path):
            await self.batches.route(exchange, method, path)
        else:
            await exchange.respond_json(404, _openai_error(f"Invalid URL ({method} {path})"))

    # -- auth ---------------------------------------------------------------------------
    def _openai_auth(self, exchange: Exchange) -> dict[str, Any] | None:
        header = exchange.headers.get("authorization", "")
        key = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not key:
            return _openai_error(_NO_KEY)
        if self.api_key is not None and key != self.api_key:
            shown = key[:3] + "*" * 4 + key[-4:] if len(key) > 8 else "*" * len(key)
            message = f"Incorrect API key provided: {shown}. You can find your API key at https://platform.openai.com/account/api-keys."
            return _openai_error(message, code="invalid_api_key")
        return None

    def _anthropic_auth(self, exchange: Exchange) -> tuple[int, dict[str, Any]] | None:
        key = exchange.headers.get("x-api-key", "")
        bearer = exchange.headers.get("authorization", "")
        if not key and bearer.lower().startswith("bearer "):
            # Newer Anthropic SDKs send the API key as a bearer token; the API takes both.
            key = bearer[7:].strip()
        if not key:
            return 401, _anthropic_error("x-api-key header is required", "authentication_error")
        if self.api_key is not None and key != self.api_key:
            return 401, _anthropic_error("invalid x-api-key", "authentication_error")
        if "anthropic-version" not in exchange.headers:
            return 400, _anthropic_error("anthropic-version: header is required", "invalid_request_error")
        return None

    # -- the two wires ------------------------------------------------------------------
    async def _openai(self, exchange: Exchange, endpoint: str) -> None:
        if (denied := self._openai_auth(exchange)) is not None:
            await exchange.respond_json(401, denied, {"www-authenticate": 'Bearer realm="OpenAI API"'})
            return
        headers = {"x-request-id": "req_" + random_id(length=32), "openai-version": "2020-10-01"}
        await self._serve(exchange, "openai", headers, lambda body: self.core.openai_answer(endpoint, body))

    async def _anthropic(self, exchange: Exchange) -> None:
        if (denied := self._anthropic_auth(exchange)) is not None:
            await exchange.respond_json(*denied)
            return
        headers = {"request-id": "req_011C" + random_id(length=20)}
        await self._serve(exchange, "anthropic", headers, self.core.anthropic_answer)

    async def _serve(
        self,
        exchange: Exchange,
        wire: Wire,
        headers: dict[str, str],
        answer_for: Callable[[Mapping[str, Any]], Answer],
    ) -> None:
        started = time.monotonic()
        try:
            body = await exchange.json_body()
            controls = self.faults.controls(body, exchange.headers)
        except TollgateError as err:
            await self._reject(exchange, wire, err, headers)
            return
        if controls.latency_ms:
            await asyncio.sleep(controls.latency_ms / 1000)
        fault = controls.fault
        if fault in ERROR_FAULTS:
            failure = error_answer(fault, wire, str(body.get("model")), controls.retry_after_s)
            await exchange.respond_json(failure.status, failure.body, {**headers, **failure.headers})
            return
        if fault == "timeout":
            await exchange.wait_for_disconnect()
            return
        streaming = body.get("stream") is True
        if fault == "reset" and not streaming:
            await exchange.drop()
            return
        try:
            answer = answer_for(body)
        except InvalidRequest as err:
            await self._reject(exchange, wire, err, headers)
            return
        if answer.events is None:
            if fault == "malformed":
                await exchange.respond(200, MALFORMED_BODY[wire], headers)
                return
            delay = generation_s(controls, answer.completion_tokens)
            if delay:
                await asyncio.sleep(delay)
            if wire == "openai":
                headers["openai-processing-ms"] = str(int((time.monotonic() - started) * 1000))
            await exchange.respond_json(200, answer.body, headers)
            return
        await exchange.start_stream(headers)
        pacer = Pacer(controls)
        strike = fault_index(answer.events) if fault in ("reset", "malformed") else -1
        try:
            for index, item in enumerate(answer.events):
                if index == strike and fault == "reset":
                    await exchange.drop()
                    return
                if index == strike:
                    await exchange.write(MALFORMED_EVENT[wire])
                await pacer.wait(item)
                if not await exchange.write(item.data):
                    return  # the client went away: stop generating for nobody
            await exchange.end_stream()
        finally:
            exchange.stop_watching()

    @staticmethod
    async def _reject(exchange: Exchange, wire: Wire, err: TollgateError, headers: dict[str, str]) -> None:
        if wire == "anthropic":
            body = {**err.to_anthropic(), "request_id": headers.get("request-id")}
        else:
            body = err.to_openai()
        await exchange.respond_json(err.status, body, headers)


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": _MODELS_CREATED, "owned_by": "tollgate-sim"}


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            # Load the tokenizers now, not on the first request, whose latency would show it.
            for model in ("gpt-4o", "gpt-3.5-turbo"):
                tokens.encoding_for(model)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_app(
    settings: SimConfig | None = None, *, api_key: str | None = None, fault_seed: int = 0
) -> ASGIApp:
    """The simulator app. `api_key`: when set, only this key is accepted (else any non-empty one)."""
    return SimServer(settings or SimConfig(), api_key=api_key, fault_seed=fault_seed)


def serve(host: str, port: int, settings: SimConfig | None = None, *, api_key: str | None = None) -> None:
    """Run the simulator under uvicorn until interrupted (`tollgate sim --port P`)."""
    import uvicorn

    # A `timeout` fault holds its connection until the client gives up; don't let it hold shutdown too.
    uvicorn.run(
        create_app(settings, api_key=api_key),
        host=host,
        port=port,
        access_log=False,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
