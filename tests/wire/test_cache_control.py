"""Where translated cache breakpoints go: to Anthropic through litellm, and nowhere else.

Two recording upstreams on loopback show the bodies that actually leave the gateway: an
Anthropic one behind the litellm adapter (the breakpoints arrive where Anthropic reads
them) and an OpenAI one behind the raw-HTTP provider (they are gone, and a client's own
bytes are still forwarded untouched).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.config import Deployment
from gateway.providers.base import ProviderCall
from gateway.providers.litellm_adapter import LitellmProvider
from gateway.providers.openai_compat import OpenAICompatProvider
from gateway.sim.transport import SimProvider
from gateway.wire.anthropic import messages_to_chat
from gateway.wire.cache_control import without_cache_control
from tests.support.asgi_thread import serve_in_thread
from tests.wire.test_anthropic_cache_control import EPHEMERAL, conversation

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": "gpt-4o",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}
MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-3-5-haiku-latest",
    "content": [{"type": "text", "text": "ok"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 3, "output_tokens": 1},
}


@dataclass
class Upstream:
    url: str
    bodies: list[bytes] = field(default_factory=list)


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    recorded = Upstream(url="")

    async def chat(request: Request) -> Response:
        recorded.bodies.append(await request.body())
        return JSONResponse(COMPLETION)

    async def messages(request: Request) -> Response:
        recorded.bodies.append(await request.body())
        return JSONResponse(MESSAGE)

    routes = [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/messages", messages, methods=["POST"]),
    ]
    with serve_in_thread(Starlette(routes=routes)) as url:
        recorded.url = url
        yield recorded


def _last(upstream: Upstream) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(upstream.bodies[-1])
    return body


# ---- the stripping helper ---------------------------------------------------------------------


def test_stripping_removes_every_breakpoint_and_nothing_else() -> None:
    marked = messages_to_chat(conversation(EPHEMERAL))
    before = copy.deepcopy(marked)

    stripped = without_cache_control(marked)

    assert b"cache_control" not in orjson.dumps(stripped)
    assert marked == before, "the translated body itself must stay as it was"
    messages = stripped["messages"]
    assert messages[0]["content"] == [
        {"type": "text", "text": "You are a clerk."},
        {"type": "text", "text": "Be exact."},
    ]
    assert messages[2]["tool_calls"][0] == {
        "id": "toolu_1",
        "type": "function",
        "function": {"name": "lookup", "arguments": '{"n":7}'},
    }
    assert messages[3] == {"role": "tool", "tool_call_id": "toolu_1", "content": "Clause 7: rent."}
    assert stripped["tools"][0] == {"type": "function", "function": marked["tools"][0]["function"]}
    # Parts without a breakpoint are shared, not copied.
    assert messages[4]["content"][0] is marked["messages"][4]["content"][0]


def test_a_body_without_breakpoints_comes_back_as_itself() -> None:
    body = messages_to_chat(conversation(None))
    assert without_cache_control(body) is body
    # The word in a prompt is text, not a breakpoint.
    talk = {"model": "m", "messages": [{"role": "user", "content": 'What does "cache_control" do?'}]}
    assert without_cache_control(talk) is talk


# ---- through the providers ----------------------------------------------------------------


def _openai(upstream: Upstream) -> Deployment:
    return Deployment(provider="openai_compat", model="gpt-4o", api_base=f"{upstream.url}/v1", api_key="k")


@pytest.mark.anyio
async def test_an_openai_wire_upstream_gets_the_translation_without_breakpoints(upstream: Upstream) -> None:
    chat = messages_to_chat(conversation(EPHEMERAL))
    provider = OpenAICompatProvider()
    try:
        response = await provider.send(ProviderCall(endpoint="chat", body=chat), _openai(upstream))
    finally:
        await provider.aclose()

    assert response.json()["choices"][0]["message"]["content"] == "ok"
    sent = _last(upstream)
    assert b"cache_control" not in upstream.bodies[-1]
    assert sent == without_cache_control(chat)


@pytest.mark.anyio
async def test_a_clients_own_bytes_are_still_forwarded_untouched(upstream: Upstream) -> None:
    # An OpenAI-format client that marks its own parts gets what it sent, as on the fast path.
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": EPHEMERAL}]}
        ],
    }
    raw = orjson.dumps(body)
    provider = OpenAICompatProvider()
    try:
        await provider.send(ProviderCall(endpoint="chat", body=body, raw_body=raw), _openai(upstream))
    finally:
        await provider.aclose()
    assert upstream.bodies[-1] == raw


@pytest.mark.anyio
async def test_litellm_hands_every_breakpoint_to_anthropic_where_it_reads_them(upstream: Upstream) -> None:
    chat = messages_to_chat(conversation(EPHEMERAL))
    deployment = Deployment(
        provider="anthropic", model="claude-3-5-haiku-latest", api_base=upstream.url, api_key="k"
    )

    await LitellmProvider().send(ProviderCall(endpoint="chat", body=chat), deployment)

    sent = _last(upstream)
    assert [block.get("cache_control") for block in sent["system"]] == [None, EPHEMERAL]
    assert [tool.get("cache_control") for tool in sent["tools"]] == [EPHEMERAL]
    user, assistant, results = sent["messages"]
    assert [(b["type"], b.get("cache_control")) for b in user["content"]] == [
        ("image", EPHEMERAL),
        ("text", EPHEMERAL),
    ]
    assert [(b["type"], b.get("cache_control")) for b in assistant["content"]] == [
        ("text", EPHEMERAL),
        ("text", None),
        ("tool_use", EPHEMERAL),
    ]
    assert [(b["type"], b.get("cache_control")) for b in results["content"]] == [
        ("tool_result", EPHEMERAL),
        ("text", None),
    ]


@pytest.mark.anyio
async def test_the_in_process_simulator_takes_a_translation_with_breakpoints() -> None:
    # It answers as an OpenAI upstream does, minus the rejection of unknown fields.
    chat = messages_to_chat(conversation(EPHEMERAL))
    response = await SimProvider().send(
        ProviderCall(endpoint="chat", body={**chat, "model": "gpt-4o"}), Deployment(provider="sim", model="*")
    )
    assert response.json()["choices"][0]["message"]
