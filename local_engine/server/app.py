"""Starlette app: OpenAI-compatible routes, /health and /metrics, over one AsyncLLMEngine."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from local_engine.engine.llm_engine import CompletionOutput, LLMEngine
from local_engine.errors import EngineError, EngineOverloadedError, InvalidRequestError
from local_engine.server.async_engine import AsyncLLMEngine
from local_engine.server.metrics import render_metrics
from local_engine.server.protocol import ParsedRequest, parse_chat, parse_completion

log = logging.getLogger("local_engine")


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def error_response(message: str, status: int, param: str | None = None, code: str | None = None) -> Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return _json({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


def _sse(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _usage(outputs: dict[int, CompletionOutput]) -> dict[str, Any]:
    first = outputs[min(outputs)]
    completion = sum(o.completion_tokens for o in outputs.values())
    return {
        "prompt_tokens": first.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": first.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": first.cached_tokens},
    }


class EngineApp:
    def __init__(self, engine: LLMEngine, served_model_name: str) -> None:
        self.engine = engine
        self.async_engine = AsyncLLMEngine(engine)
        self.model_name = served_model_name
        self.created = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.async_engine.start()
        try:
            yield
        finally:
            self.async_engine.shutdown()

    async def models(self, request: Request) -> Response:
        card = {
            "id": self.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "tollgate",
            "max_model_len": self.engine.config.max_model_len,
        }
        return _json({"object": "list", "data": [card]})

    async def health(self, request: Request) -> Response:
        if not self.async_engine.alive:
            return error_response("engine loop is not running", 503)
        return _json({"status": "ok"})

    async def metrics(self, request: Request) -> Response:
        return PlainTextResponse(render_metrics(self.engine), media_type="text/plain; version=0.0.4")

    async def chat(self, request: Request) -> Response:
        return await self._serve(request, chat=True)

    async def completions(self, request: Request) -> Response:
        return await self._serve(request, chat=False)

    async def _serve(self, request: Request, chat: bool) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return error_response("request body is not valid JSON", 400)
        if not isinstance(body, dict):
            return error_response("request body must be a JSON object", 400)
        model = body.get("model")
        if model != self.model_name:
            return error_response(
                f"model {model!r} is not served here; this engine serves {self.model_name!r}",
                404 if isinstance(model, str) else 400, "model", "model_not_found",
            )
        headers = {k.lower(): v for k, v in request.headers.items()}
        parse = parse_chat if chat else parse_completion
        max_len = self.engine.config.max_model_len
        outputs: AsyncIterator[CompletionOutput] | None = None
        try:
            parsed = parse(body, headers, self.engine.tokenizer, max_len)
            outputs = self.async_engine.generate(parsed.prompt_token_ids, parsed.params, parsed.tenant)
            first = await anext(outputs)
        except InvalidRequestError as exc:
            if outputs is not None:
                await outputs.aclose()
            param = "messages" if chat and exc.param == "prompt" else exc.param
            return error_response(exc.message, 400, param)
        except EngineOverloadedError as exc:
            return error_response(str(exc), 503, code="overloaded")
        except EngineError as exc:
            return error_response(str(exc), 500)
        response_id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        if parsed.stream:
            return StreamingResponse(
                self._stream(response_id, chat, parsed, first, outputs), media_type="text/event-stream"
            )
        return await self._collect(response_id, chat, parsed, first, outputs)

    async def _collect(
        self, response_id: str, chat: bool, parsed: ParsedRequest, first: CompletionOutput,
        outputs: AsyncIterator[CompletionOutput],
    ) -> Response:
        texts: dict[int, list[str]] = {}
        last: dict[int, CompletionOutput] = {}
        try:
            async for out in _chain(first, outputs):
                texts.setdefault(out.index, []).append(out.text)
                last[out.index] = out
        except EngineError as exc:
            return error_response(str(exc), 500)
        choices = []
        for index in sorted(last):
            text = "".join(texts[index])
            reason = last[index].finish_reason
            if chat:
                message = {"role": "assistant", "content": text}
                choices.append({"index": index, "message": message, "finish_reason": reason, "logprobs": None})
            else:
                choices.append({"index": index, "text": text, "finish_reason": reason, "logprobs": None})
        return _json({
            "id": response_id,
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": choices,
            "usage": _usage(last),
        })

    async def _stream(
        self, response_id: str, chat: bool, parsed: ParsedRequest, first: CompletionOutput,
        outputs: AsyncIterator[CompletionOutput],
    ) -> AsyncIterator[bytes]:
        created = int(time.time())
        obj = "chat.completion.chunk" if chat else "text_completion"
        base = {"id": response_id, "object": obj, "created": created, "model": self.model_name}
        last: dict[int, CompletionOutput] = {}
        started: set[int] = set()
        try:
            async for out in _chain(first, outputs):
                last[out.index] = out
                if chat and out.index not in started:  # the role comes first, once per choice
                    started.add(out.index)
                    delta0 = {"role": "assistant", "content": ""}
                    choice0 = {"index": out.index, "delta": delta0, "finish_reason": None, "logprobs": None}
                    yield _sse({**base, "choices": [choice0]})
                if not out.text and not out.finished:
                    continue
                if chat:
                    delta = {"content": out.text} if out.text else {}
                    choice = {"index": out.index, "delta": delta, "finish_reason": out.finish_reason}
                else:
                    choice = {"index": out.index, "text": out.text, "finish_reason": out.finish_reason}
                yield _sse({**base, "choices": [{**choice, "logprobs": None}]})
        except EngineError as exc:
            yield _sse({"error": {"message": str(exc), "type": "server_error", "param": None, "code": None}})
        finally:
            await outputs.aclose()
        if parsed.include_usage and last:
            yield _sse({**base, "choices": [], "usage": _usage(last)})
        yield b"data: [DONE]\n\n"


async def _chain(first: CompletionOutput, rest: AsyncIterator[CompletionOutput]) -> AsyncIterator[CompletionOutput]:
    yield first
    async for item in rest:
        yield item


def build_app(engine: LLMEngine, served_model_name: str) -> Starlette:
    handlers = EngineApp(engine, served_model_name)
    routes = [
        Route("/v1/chat/completions", handlers.chat, methods=["POST"]),
        Route("/v1/completions", handlers.completions, methods=["POST"]),
        Route("/v1/models", handlers.models, methods=["GET"]),
        Route("/health", handlers.health, methods=["GET"]),
        Route("/metrics", handlers.metrics, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=handlers.lifespan)
    app.state.engine_app = handlers
    return app
