"""The providers' batch APIs, spoken over raw HTTP (aiohttp): OpenAI Files + Batches and
Anthropic Message Batches, behind one small interface.

Every provider batch carries the gateway's own batch id where it can be found again
(OpenAI: `metadata.tollgate_batch`; Anthropic: the prefix of every `custom_id`), so a gateway
that died between creating a batch and writing its id down finds it instead of sending it
twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import aiohttp
import orjson

from gateway.config import Deployment
from gateway.errors import UpstreamError, UpstreamUnavailable

ENDPOINT_PATHS = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
}
# The most a provider takes in one batch (requests, bytes of the input).
LIMITS = {"openai": (50_000, 200 * 1024 * 1024), "anthropic": (100_000, 256 * 1024 * 1024)}
METADATA_KEY = "tollgate_batch"


class NotYet(Exception):
    """`find` cannot tell yet: a batch that may hold ours has not ended; ask again later."""


@dataclass(frozen=True, slots=True)
class Polled:
    ended: bool
    status: str  # the provider's own word (in_progress, completed, expired, ended ...)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request's end in a batch: an answer (status + OpenAI-shaped body), or a reason
    it got none (`expired`, `cancelled`)."""

    custom_id: str
    status: int | None = None
    body: dict[str, Any] | None = None
    missing: Literal["expired", "cancelled"] | None = None


class BatchAPI(Protocol):
    kind: str

    async def submit(
        self, endpoint: str, lines: Sequence[tuple[str, Mapping[str, Any]]], local_id: str
    ) -> str: ...
    async def find(self, local_id: str, since: float, custom_ids: Sequence[str] = ()) -> str | None: ...
    async def poll(self, provider_id: str) -> Polled: ...
    async def results(self, provider_id: str) -> list[Outcome]: ...
    async def cancel(self, provider_id: str) -> None: ...


def batch_kind(deployment: Deployment, endpoint: str = "chat") -> str | None:
    """Which batch API a deployment's provider offers for the endpoint; None: none (it is
    served online)."""
    if deployment.provider in ("openai", "openai_compat"):
        return "openai"
    if deployment.provider == "anthropic" and endpoint == "chat":
        return "anthropic"
    return None


def api_for(deployment: Deployment, session: aiohttp.ClientSession) -> BatchAPI:
    kind = batch_kind(deployment)
    if kind == "openai":
        return OpenAIBatches(deployment, session)
    if kind == "anthropic":
        from gateway.batch.anthropic_batches import AnthropicBatches

        anthropic_api: BatchAPI = AnthropicBatches(deployment, session)
        return anthropic_api
    raise ValueError(f"provider {deployment.provider} has no batch API")


class HTTP:
    """JSON over one shared session; failures become the gateway's upstream errors."""

    def __init__(self, session: aiohttp.ClientSession, base: str, headers: Mapping[str, str]) -> None:
        self.session = session
        self.base = base.rstrip("/")
        self.headers = dict(headers)

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> bytes:
        url = f"{self.base}{path}"
        headers = dict(self.headers)
        body: Any = data
        if json is not None:
            body = orjson.dumps(json)
            headers["content-type"] = "application/json"
        try:
            async with self.session.request(method, url, data=body, params=params, headers=headers) as resp:
                payload = await resp.read()
                if resp.status >= 400:
                    raise UpstreamUnavailable(
                        f"{method} {url} answered {resp.status}: {payload[:300].decode(errors='replace')}",
                        upstream_status=resp.status,
                    )
                return payload
        except (aiohttp.ClientError, TimeoutError) as err:
            raise UpstreamUnavailable(f"{method} {url} failed: {err!r}") from err

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return orjson.loads(await self.call(method, path, **kwargs))


class OpenAIBatches:
    kind = "openai"

    def __init__(self, deployment: Deployment, session: aiohttp.ClientSession) -> None:
        base = deployment.resolved_api_base() or "https://api.openai.com/v1"
        key = deployment.resolved_api_key() or ""
        self.http = HTTP(session, base, {"authorization": f"Bearer {key}"})

    async def submit(
        self, endpoint: str, lines: Sequence[tuple[str, Mapping[str, Any]]], local_id: str
    ) -> str:
        url = ENDPOINT_PATHS[endpoint]
        content = b"".join(
            orjson.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body}) + b"\n"
            for custom_id, body in lines
        )
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", content, filename=f"{local_id}.jsonl", content_type="application/jsonl")
        uploaded = await self.http.json("POST", "/files", data=form)
        created = await self.http.json(
            "POST",
            "/batches",
            json={
                "input_file_id": uploaded["id"],
                "endpoint": url,
                "completion_window": "24h",
                "metadata": {METADATA_KEY: local_id},
            },
        )
        return str(created["id"])

    async def find(self, local_id: str, since: float, custom_ids: Sequence[str] = ()) -> str | None:
        after: str | None = None
        while True:
            params = {"limit": "100", **({"after": after} if after else {})}
            page = await self.http.json("GET", "/batches", params=params)
            for batch in page.get("data", []):
                if (batch.get("metadata") or {}).get(METADATA_KEY) == local_id:
                    return str(batch["id"])
                if batch.get("created_at", 0) < since - 60:
                    return None  # newest first: older batches cannot be ours
            if not page.get("has_more") or not page.get("data"):
                return None
            after = page["data"][-1]["id"]

    async def poll(self, provider_id: str) -> Polled:
        batch = await self.http.json("GET", f"/batches/{provider_id}")
        status = str(batch.get("status"))
        return Polled(ended=status in ("completed", "failed", "expired", "cancelled"), status=status)

    async def results(self, provider_id: str) -> list[Outcome]:
        batch = await self.http.json("GET", f"/batches/{provider_id}")
        outcomes: list[Outcome] = []
        for file_id in (batch.get("output_file_id"), batch.get("error_file_id")):
            if not file_id:
                continue
            content = await self.http.call("GET", f"/files/{file_id}/content")
            for line in content.splitlines():
                if line.strip():
                    outcomes.append(_openai_outcome(orjson.loads(line)))
        return outcomes

    async def cancel(self, provider_id: str) -> None:
        await self.http.call("POST", f"/batches/{provider_id}/cancel")


def _openai_outcome(line: Mapping[str, Any]) -> Outcome:
    custom_id = str(line.get("custom_id"))
    response = line.get("response")
    if response:
        return Outcome(
            custom_id, status=int(response.get("status_code", 500)), body=response.get("body") or {}
        )
    code = str((line.get("error") or {}).get("code", ""))
    if "cancel" in code:
        return Outcome(custom_id, missing="cancelled")
    if "expired" in code:
        return Outcome(custom_id, missing="expired")
    error = line.get("error") or {}
    body = {"error": {"message": str(error.get("message", "failed in batch")), "type": "server_error",
                      "param": None, "code": code or None}}  # fmt: skip
    return Outcome(custom_id, status=500, body=body)


def unavailable(err: Exception) -> bool:
    """A failure worth trying again later (the provider or the network), not a bug."""
    return isinstance(err, UpstreamError)
