"""The streams stages and the dispatcher wrap around an upstream's: what accounting and the
caches read through them (`seen`, `usage`) is the source's, and closing closes the source once."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest

from gateway.accounting.estimate import stream_finish_reasons, streamed_text
from gateway.balance import Balancer, DeploymentState, TrackedStream
from gateway.config import RouterConfig
from gateway.pipeline import Request, RequestContext
from gateway.providers.base import DONE_EVENT, SSEStream, Usage, sse_payloads
from gateway.stages.context import _WatchedStream

pytestmark = pytest.mark.anyio

PIECES = [
    b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"Hello"}}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"get_time"}}]}}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\n',
    DONE_EVENT,
]


class _Bare:
    """A source that keeps no pieces of its own."""

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.closed = 0

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._gen()

    async def _gen(self) -> AsyncIterator[bytes]:
        for piece in PIECES:
            yield piece

    async def aclose(self) -> None:
        self.closed += 1


async def _pieces() -> AsyncIterator[bytes]:
    for piece in PIECES:
        yield piece


def _ctx() -> RequestContext:
    request = Request(endpoint="chat", model="m", body={"model": "m", "messages": []}, stream=True)
    return RequestContext(request_id="r1", original=request, request=request)


async def test_a_context_watched_stream_shows_accounting_what_was_generated() -> None:
    source = SSEStream(_pieces())
    ctx = _ctx()
    watched = _WatchedStream(source, ctx, {"get_time"})
    assert watched.seen is source.seen
    assert [piece async for piece in watched] == PIECES
    # What accounting reads when no usage came: the finish reasons and the generated text.
    assert stream_finish_reasons(watched.seen) == ["tool_calls"]
    assert streamed_text(watched.seen) == "Helloget_time"
    assert ctx.records[0].detail["called_removed"] == ["get_time"]
    watched.usage = Usage(prompt_tokens=3, completion_tokens=2)
    assert source.usage == Usage(prompt_tokens=3, completion_tokens=2)


async def test_a_wrapped_source_that_keeps_no_pieces_gets_them_kept_and_is_closed_once() -> None:
    source = _Bare()
    watched = _WatchedStream(source, _ctx(), set())
    assert [piece async for piece in watched] == PIECES and watched.seen == PIECES
    await watched.aclose()
    await watched.aclose()
    assert source.closed == 1

    state = DeploymentState(in_flight=1)
    bare = _Bare()
    tracked = TrackedStream(bare, Balancer(RouterConfig(), rng=random.Random(0)), state, 0.0)
    assert [piece async for piece in tracked] == PIECES and tracked.seen == PIECES
    await tracked.aclose()
    await tracked.aclose()
    assert state.in_flight == 0 and bare.closed == 1


def test_sse_payloads_reads_crlf_multi_line_data_and_skips_comments() -> None:
    pieces = [
        b'data: {"a":1}\n\n: keep-alive\n\n',
        b'event: x\r\ndata: {"b":\r\ndata: 2}\r\n\r\ndata:[DONE]\n\n',
    ]
    assert list(sse_payloads(pieces)) == [b'{"a":1}', b'{"b":\n2}', b"[DONE]"]
