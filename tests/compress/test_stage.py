"""The compress stage: what it sends on, records and says in headers, per team."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.config import parse_config
from gateway.pipeline import TRANSFORMS_HEADER, Principal, Request, RequestContext
from gateway.providers.base import ProviderResponse
from gateway.stages.compress import CompressStage
from tests.compress.test_messages import ANSWER, QUESTION, _document

pytestmark = pytest.mark.anyio


def _stage(**settings: Any) -> CompressStage:
    config = parse_config({"stages": {"compress": settings}})
    return CompressStage(config.stages.compress)


def _ctx(messages: list[dict[str, Any]], team_settings: dict[str, Any] | None = None) -> RequestContext:
    body = {"model": "gpt-4o", "messages": messages}
    request = Request(endpoint="chat", model="gpt-4o", body=body)
    ctx = RequestContext(request_id="r1", original=request, request=request, principal=Principal("t", "k"))
    if team_settings is not None:
        ctx.stage_settings = {"compress": team_settings}
    return ctx


def _messages() -> list[dict[str, Any]]:
    tool = json.dumps({"rows": [{"id": i, "name": f"row {i}"} for i in range(10)]}, indent=2)
    return [
        {"role": "system", "content": "Answer  from the documents."},
        {"role": "tool", "tool_call_id": "c", "content": tool},
        {"role": "user", "content": f"<document>{_document()}</document>\n{QUESTION}"},
    ]


async def _run(stage: CompressStage, ctx: RequestContext) -> RequestContext:
    seen: list[RequestContext] = []

    async def downstream(c: RequestContext) -> ProviderResponse:
        seen.append(c)
        return ProviderResponse.from_json({"ok": True})

    await stage(ctx, downstream)
    return seen[0]


async def test_lossless_by_default_records_the_saving_and_appends_the_header() -> None:
    ctx = _ctx(_messages())
    ctx.response_headers[TRANSFORMS_HEADER] = "context:tools"
    await _run(_stage(), ctx)
    assert ctx.response_headers[TRANSFORMS_HEADER] == "context:tools,compress:json"
    [record] = ctx.records
    assert record.stage == "compress" and record.saved_input_tokens > 20
    assert record.detail["saved_tokens_by_transform"] == {"json": record.saved_input_tokens}
    assert ctx.original.body["messages"] == _messages()
    sent = ctx.request.body["messages"]
    assert sent[0] == _messages()[0] and sent[2] == _messages()[2]


async def test_a_ratio_extracts_long_documents() -> None:
    ctx = _ctx(_messages())
    await _run(_stage(level=0.5, min_block_tokens=100), ctx)
    header = ctx.response_headers[TRANSFORMS_HEADER]
    assert header.startswith("compress:json,compress:extractive(0.")
    last = ctx.request.body["messages"][-1]["content"]
    assert ANSWER in last and last.endswith(QUESTION) and len(last) < len(_messages()[-1]["content"])


async def test_a_team_sets_its_own_level_and_switches_transforms_off() -> None:
    stage = _stage(level=0.5, min_block_tokens=100)
    off = _ctx(_messages(), {"level": "off"})
    await _run(stage, off)
    assert off.records == [] and TRANSFORMS_HEADER not in off.response_headers
    assert off.request is off.original
    no_json = _ctx(_messages(), {"level": "lossless", "minify_json": False})
    await _run(stage, no_json)
    assert no_json.records == [] and no_json.request is no_json.original


async def test_a_team_setting_that_does_not_validate_keeps_the_gateways() -> None:
    ctx = _ctx(_messages(), {"level": 3})
    await _run(_stage(), ctx)
    assert ctx.response_headers[TRANSFORMS_HEADER] == "compress:json"


def test_the_config_rejects_a_bad_level_by_its_path() -> None:
    from gateway.config import ConfigError

    with pytest.raises(ConfigError, match=r"stages\.compress\.level"):
        parse_config({"stages": {"compress": {"level": 1.5}}})
