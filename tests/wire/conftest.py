"""Fixtures for the wire-format tests.

`messages_server` is a real HTTP server on a loopback port that speaks `/v1/messages`
through the wire translation, so the official `anthropic` SDK can be pointed at it: requests
go through `messages_to_chat`, answers come from a scripted OpenAI upstream through
`chat_to_message` or `AnthropicStream`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.errors import TollgateError
from gateway.wire.anthropic import chat_to_message, messages_to_chat
from gateway.wire.anthropic_stream import AnthropicStream
from tests.support.asgi_thread import serve_in_thread


@dataclass
class MessagesServer:
    """What the scripted upstream answers, and the OpenAI bodies it was sent."""

    base_url: str  # set once the server is listening
    completion: dict[str, Any] = field(default_factory=dict)
    chunks: Callable[[], AsyncIterator[bytes]] | None = None
    chat_requests: list[dict[str, Any]] = field(default_factory=list)


def _app(server: MessagesServer) -> Starlette:
    async def messages(request: Request) -> Response:
        body = await request.json()
        try:
            chat = messages_to_chat(body)
        except TollgateError as err:
            return Response(err.anthropic_body(), status_code=err.status, media_type="application/json")
        server.chat_requests.append(chat)
        if chat.get("stream"):
            assert server.chunks is not None, "the test set no stream to replay"
            stream = AnthropicStream(server.chunks(), model=body["model"])
            return StreamingResponse(stream, media_type="text/event-stream")
        return JSONResponse(chat_to_message(server.completion, model=body["model"]))

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])


@pytest.fixture
def messages_server() -> Iterator[MessagesServer]:
    server = MessagesServer(base_url="")
    with serve_in_thread(_app(server)) as url:
        server.base_url = url
        yield server
