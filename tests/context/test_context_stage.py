"""The context stage: what reaches the upstream, what is recorded, the re-send, team settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from gateway.pipeline import Principal, RequestContext
from gateway.providers.base import ProviderResponse
from tests.context.support import build, context
from tests.support.toolbox import TOPICS

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": f"{name}_{i}",
            "description": description,
            "parameters": {"type": "object", "properties": {}},
        },
    }
    for i in range(4)
    for name, description in TOPICS
]  # 32 tools
QUESTION = [{"role": "user", "content": "What's the weather forecast for Lisbon this weekend?"}]


def answer(*calls: str) -> ProviderResponse:
    message: dict[str, Any] = {"role": "assistant", "content": None if calls else "Sunny."}
    if calls:
        message["tool_calls"] = [
            {"id": f"c{i}", "type": "function", "function": {"name": n, "arguments": "{}"}}
            for i, n in enumerate(calls)
        ]
    usage = {"prompt_tokens": 300, "completion_tokens": 12, "total_tokens": 312}
    return ProviderResponse.from_json({"choices": [{"index": 0, "message": message}], "usage": usage})


class Upstream:
    def __init__(self, *answers: ProviderResponse) -> None:
        self.answers = list(answers)
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, ctx: RequestContext) -> ProviderResponse:
        self.bodies.append(dict(ctx.request.body))
        return self.answers.pop(0)


def names(body: dict[str, Any]) -> list[str]:
    return [t["function"]["name"] for t in body["tools"]]


@pytest.mark.anyio
async def test_many_tools_become_the_top_k() -> None:
    stage, _, _ = build({"tool_selection": {"top_k": 5}})
    ctx = context({"messages": QUESTION, "tools": TOOLS})
    ctx.response_headers["x-tollgate-transforms"] = "exact_cache:normalise"
    upstream = Upstream(answer())
    await stage(ctx, upstream)
    sent = names(upstream.bodies[0])
    assert len(sent) == 5
    assert sum(n.startswith("get_weather") for n in sent) >= 3
    assert ctx.response_headers["x-tollgate-transforms"] == "exact_cache:normalise,context:tools(32->5)"
    (record,) = ctx.records
    assert record.stage == "context" and record.detail["transform"] == "tools"
    assert record.saved_input_tokens == record.detail["tokens_before"] - record.detail["tokens_after"] > 0
    assert len(record.detail["removed"]) == 27
    assert ctx.original.body["tools"] == TOOLS


@pytest.mark.anyio
async def test_few_tools_are_sent_as_they_are() -> None:
    stage, _, _ = build()
    ctx = context({"messages": QUESTION, "tools": TOOLS[:20]})
    upstream = Upstream(answer())
    await stage(ctx, upstream)
    assert upstream.bodies[0]["tools"] == TOOLS[:20]
    assert ctx.request is ctx.original and not ctx.records


@pytest.mark.anyio
async def test_calling_a_removed_tool_sends_again_with_every_tool() -> None:
    stage, _, _ = build()
    ctx = context({"messages": QUESTION, "tools": TOOLS})
    upstream = Upstream(answer("play_music_3"), answer("play_music_3"))
    response = await stage(ctx, upstream)
    assert len(upstream.bodies) == 2
    assert "play_music_3" not in names(upstream.bodies[0])
    assert upstream.bodies[1]["tools"] == TOOLS
    assert response.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "play_music_3"
    assert ctx.response_headers["x-tollgate-transforms"] == "context:tools(32->5),context:tools-resend"
    resend = ctx.records[-1]
    assert resend.detail == {
        "transform": "tools_resend",
        "called_removed": ["play_music_3"],
        "discarded_usage": [300, 12],
    }
    assert (resend.saved_input_tokens, resend.saved_output_tokens) == (-300, -12)


@pytest.mark.anyio
async def test_calling_a_kept_tool_is_not_sent_again() -> None:
    stage, _, _ = build()
    ctx = context({"messages": QUESTION, "tools": TOOLS})
    upstream = Upstream(answer("get_weather_0"))
    await stage(ctx, upstream)
    assert len(upstream.bodies) == 1


@pytest.mark.anyio
async def test_a_stream_calling_a_removed_tool_is_recorded_not_resent() -> None:
    stage, _, _ = build()
    ctx = context({"messages": QUESTION, "tools": TOOLS, "stream": True}, stream=True)
    delta = {
        "choices": [
            {"delta": {"tool_calls": [{"index": 0, "function": {"name": "play_music_3", "arguments": ""}}]}}
        ]
    }
    chunks = [b"data: " + orjson.dumps(delta) + b"\n\n", b"data: [DONE]\n\n"]

    class Stream:
        usage = None

        def __aiter__(self) -> AsyncIterator[bytes]:
            return self._gen()

        async def _gen(self) -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        async def aclose(self) -> None:
            pass

    upstream = Upstream(ProviderResponse(stream=Stream()))  # type: ignore[arg-type]
    response = await stage(ctx, upstream)
    assert response.stream is not None
    assert [c async for c in response.stream] == chunks
    assert len(upstream.bodies) == 1
    assert ctx.records[-1].detail == {"transform": "tools_removed_called", "called_removed": ["play_music_3"]}


@pytest.mark.anyio
@pytest.mark.parametrize("off", [{"tool_selection": False}, {"enabled": False}])
async def test_a_team_can_turn_tool_selection_off(off: dict[str, Any]) -> None:
    stage, _, _ = build()
    ctx = context({"messages": QUESTION, "tools": TOOLS})
    ctx.principal = Principal(team="t", key_id="k")
    ctx.stage_settings = {"context": off}
    upstream = Upstream(answer())
    await stage(ctx, upstream)
    assert upstream.bodies[0]["tools"] == TOOLS and not ctx.records


@pytest.mark.anyio
async def test_a_team_can_retune_top_k() -> None:
    stage, _, _ = build()
    ctx = context({"messages": QUESTION, "tools": TOOLS})
    ctx.principal = Principal(team="t", key_id="k")
    ctx.stage_settings = {"context": {"top_k": 2, "max_tools": 10}}
    upstream = Upstream(answer())
    await stage(ctx, upstream)
    assert len(upstream.bodies[0]["tools"]) == 2


@pytest.mark.anyio
async def test_a_team_turning_selection_on_without_an_embedder_sends_every_tool(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The gateway has tool selection off, so no embedder is loaded: a team's policy that
    turns it on cannot select, and its requests pass with every tool (said once in the log)."""
    stage, _, _ = build({"tool_selection": {"enabled": False}}, with_embedder=False)
    for _ in range(3):
        ctx = context({"messages": QUESTION, "tools": TOOLS})
        ctx.principal = Principal(team="t", key_id="k")
        ctx.stage_settings = {"context": {"tool_selection": True, "max_tools": 4, "top_k": 2}}
        upstream = Upstream(answer())
        response = await stage(ctx, upstream)
        assert response.status == 200
        assert upstream.bodies[0]["tools"] == TOOLS and not ctx.records
        assert "x-tollgate-transforms" not in ctx.response_headers
    told = [r for r in caplog.records if r.name == "tollgate.context" and "tool selection" in r.getMessage()]
    assert len(told) == 1


@pytest.mark.anyio
async def test_a_team_can_turn_pruning_off() -> None:
    big = "x " * 1000
    messages = [
        {"role": "user", "content": "look it up"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": big},
        {"role": "assistant", "content": "done"},
        {"role": "user", "content": "thanks"},
    ]
    stage, _, _ = build()
    pruned_ctx = context({"messages": messages})
    upstream = Upstream(answer(), answer())
    await stage(pruned_ctx, upstream)
    assert upstream.bodies[0]["messages"][2]["content"].startswith("[tool result pruned")
    assert pruned_ctx.response_headers["x-tollgate-transforms"] == "context:prune(1)"
    kept_ctx = context({"messages": messages})
    kept_ctx.principal = Principal(team="t", key_id="k")
    kept_ctx.stage_settings = {"context": {"prune_tool_results": False}}
    await stage(kept_ctx, upstream)
    assert upstream.bodies[1]["messages"] == messages


def test_an_invalid_team_setting_falls_back_to_the_gateway() -> None:
    stage, _, _ = build()
    settings = stage._overrides.resolve("t", {"context": {"tool_selection": "sometimes"}})
    assert settings.tool_selection is True
