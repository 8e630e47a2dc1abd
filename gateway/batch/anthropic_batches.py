"""Anthropic Message Batches: the gateway's OpenAI-format requests sent as Messages params
(litellm's translation), and each result message brought back as an OpenAI chat completion.

Anthropic batches carry no metadata, so a gateway that died between creating a batch and
writing its id down finds it by the custom ids (our job ids) in the results of the batches
created since: it waits until those have ended (`NotYet`) rather than guess.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import aiohttp
import orjson

from gateway.batch.upstream import HTTP, NotYet, Outcome, Polled
from gateway.config import Deployment
from gateway.providers.litellm_adapter import anthropic_messages_params

_VERSION = "2023-06-01"
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}


class AnthropicBatches:
    kind = "anthropic"

    def __init__(self, deployment: Deployment, session: aiohttp.ClientSession) -> None:
        base = (deployment.api_base or "https://api.anthropic.com").rstrip("/")
        key = deployment.resolved_api_key() or ""
        self.http = HTTP(session, base, {"x-api-key": key, "anthropic-version": _VERSION})

    async def submit(
        self, endpoint: str, lines: Sequence[tuple[str, Mapping[str, Any]]], local_id: str
    ) -> str:
        requests = [
            {"custom_id": custom_id, "params": anthropic_messages_params(body)} for custom_id, body in lines
        ]
        created = await self.http.json("POST", "/v1/messages/batches", json={"requests": requests})
        return str(created["id"])

    async def find(self, local_id: str, since: float, custom_ids: Sequence[str] = ()) -> str | None:
        wanted = set(custom_ids)
        page = await self.http.json("GET", "/v1/messages/batches", params={"limit": "100"})
        for batch in page.get("data", []):
            if _epoch(batch.get("created_at")) < since - 60:
                break  # newest first: older batches cannot be ours
            if batch.get("processing_status") != "ended":
                raise NotYet(str(batch["id"]))
            for outcome in await self.results(str(batch["id"])):
                if outcome.custom_id in wanted:
                    return str(batch["id"])
        return None

    async def poll(self, provider_id: str) -> Polled:
        batch = await self.http.json("GET", f"/v1/messages/batches/{provider_id}")
        status = str(batch.get("processing_status"))
        return Polled(ended=status == "ended", status=status)

    async def results(self, provider_id: str) -> list[Outcome]:
        content = await self.http.call("GET", f"/v1/messages/batches/{provider_id}/results")
        return [_outcome(orjson.loads(line)) for line in content.splitlines() if line.strip()]

    async def cancel(self, provider_id: str) -> None:
        await self.http.call("POST", f"/v1/messages/batches/{provider_id}/cancel")


def _outcome(line: Mapping[str, Any]) -> Outcome:
    custom_id = str(line.get("custom_id"))
    result = line.get("result") or {}
    kind = result.get("type")
    if kind == "succeeded":
        return Outcome(custom_id, status=200, body=chat_completion(result["message"]))
    if kind == "canceled":
        return Outcome(custom_id, missing="cancelled")
    if kind == "expired":
        return Outcome(custom_id, missing="expired")
    error = (result.get("error") or {}).get("error") or {}
    status = 400 if error.get("type") == "invalid_request_error" else 500
    body = {"error": {"message": str(error.get("message", "failed in batch")),
                      "type": "invalid_request_error" if status == 400 else "server_error",
                      "param": None, "code": error.get("type")}}  # fmt: skip
    return Outcome(custom_id, status=status, body=body)


def chat_completion(message: Mapping[str, Any]) -> dict[str, Any]:
    """An Anthropic message as the OpenAI chat completion the online path would have returned."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or []:
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"), "arguments": orjson.dumps(block.get("input") or {}).decode()}})  # fmt: skip
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        reply["tool_calls"] = calls
    usage = message.get("usage") or {}
    read = int(usage.get("cache_read_input_tokens") or 0)
    written = int(usage.get("cache_creation_input_tokens") or 0)
    prompt = int(usage.get("input_tokens") or 0) + read + written
    completion = int(usage.get("output_tokens") or 0)
    return {
        "id": f"chatcmpl-{message.get('id', '')}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model"),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "finish_reason": _FINISH.get(str(message.get("stop_reason")), "stop"),
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": read, "cache_creation_tokens": written},
        },
    }


def _epoch(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0
