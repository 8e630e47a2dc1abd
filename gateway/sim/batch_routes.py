"""The HTTP side of the simulator's batch APIs: OpenAI's Files and Batch, Anthropic's Message Batches.

Routes (OpenAI ones take Bearer auth, Anthropic ones x-api-key and anthropic-version):
  POST/GET /v1/files, GET/DELETE /v1/files/{id}, GET /v1/files/{id}/content
  POST/GET /v1/batches, GET /v1/batches/{id}, POST /v1/batches/{id}/cancel
  POST/GET /v1/messages/batches, GET/DELETE /v1/messages/batches/{id},
  POST /v1/messages/batches/{id}/cancel, GET /v1/messages/batches/{id}/results
  GET /sim/batches/requests: how often each custom_id was submitted, per wire (for tests)
"""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from gateway.config import SimConfig
from gateway.errors import TollgateError
from gateway.sim.anthropic_batches import MessageBatches
from gateway.sim.batches import Clock, SubmissionLog, page_after
from gateway.sim.core import SimCore
from gateway.sim.exchange import Exchange
from gateway.sim.files import FileStore
from gateway.sim.openai_batches import OpenAIBatches
from gateway.sim.plan import random_id
from gateway.wire.multipart import parse_form
from gateway.wire.paging import openai_list, page_limit

OpenAIAuth = Callable[[Exchange], dict[str, Any] | None]
AnthropicAuth = Callable[[Exchange], tuple[int, dict[str, Any]] | None]
_PREFIXES = ("/v1/files", "/v1/batches", "/v1/messages/batches", "/sim/batches/")
_ID = r"(?P<id>[^/]+)"


@dataclass(slots=True, frozen=True)
class Raw:
    """A reply that is not JSON (a file's bytes, a results JSONL)."""

    content: bytes
    content_type: str


Reply = dict[str, Any] | Raw
Handler = Callable[[Exchange, str], Awaitable[Reply]]


class BatchRoutes:
    """Files, batches and message batches of one simulator app, kept in memory."""

    def __init__(
        self,
        settings: SimConfig,
        core: SimCore,
        *,
        openai_auth: OpenAIAuth,
        anthropic_auth: AnthropicAuth,
        clock: Clock = time.time,
    ) -> None:
        self._openai_auth = openai_auth
        self._anthropic_auth = anthropic_auth
        self.log = SubmissionLog()
        self.files = FileStore(clock)
        self.openai = OpenAIBatches(settings, core, self.files, self.log, clock)
        self.anthropic = MessageBatches(settings, core, self.log, clock)
        table: list[tuple[str, dict[str, Handler]]] = [
            ("/v1/files", {"POST": self._upload, "GET": self._files}),
            (f"/v1/files/{_ID}", {"GET": self._file, "DELETE": self._delete_file}),
            (f"/v1/files/{_ID}/content", {"GET": self._file_content}),
            ("/v1/batches", {"POST": self._create_batch, "GET": self._batches}),
            (f"/v1/batches/{_ID}", {"GET": self._batch}),
            (f"/v1/batches/{_ID}/cancel", {"POST": self._cancel_batch}),
            ("/v1/messages/batches", {"POST": self._create_message_batch, "GET": self._message_batches}),
            (
                f"/v1/messages/batches/{_ID}",
                {"GET": self._message_batch, "DELETE": self._delete_message_batch},
            ),
            (f"/v1/messages/batches/{_ID}/cancel", {"POST": self._cancel_message_batch}),
            (f"/v1/messages/batches/{_ID}/results", {"GET": self._message_batch_results}),
        ]
        self._table = [(re.compile(pattern + "$"), methods) for pattern, methods in table]

    @staticmethod
    def handles(path: str) -> bool:
        return path.startswith(_PREFIXES)

    async def route(self, exchange: Exchange, method: str, path: str) -> None:
        if path == "/sim/batches/requests" and method == "GET":
            await exchange.respond_json(200, self.log.snapshot())
            return
        wire: Literal["openai", "anthropic"] = "anthropic" if path.startswith("/v1/messages/") else "openai"
        if wire == "anthropic":
            headers = {"request-id": "req_011C" + random_id(length=20)}
        else:
            headers = {"x-request-id": "req_" + random_id(length=32), "openai-version": "2020-10-01"}
        matched = next(((m, methods) for pattern, methods in self._table if (m := pattern.match(path))), None)
        if matched is None or method not in matched[1]:
            status, message = (404, "Invalid URL") if matched is None else (405, "Invalid method for URL")
            if wire == "anthropic":
                kind = "not_found_error" if status == 404 else "invalid_request_error"
                body: Any = {
                    "type": "error",
                    "error": {"type": kind, "message": f"{message} ({method} {path})"},
                }
            else:
                body = {"error": {"message": f"{message} ({method} {path})", "type": "invalid_request_error",
                                  "param": None, "code": None}}  # fmt: skip
            await exchange.respond_json(status, body, headers)
            return
        if wire == "openai" and (denied := self._openai_auth(exchange)) is not None:
            await exchange.respond_json(401, denied, {"www-authenticate": 'Bearer realm="OpenAI API"'})
            return
        if wire == "anthropic" and (refused := self._anthropic_auth(exchange)) is not None:
            await exchange.respond_json(*refused)
            return
        match, methods = matched
        try:
            reply = await methods[method](exchange, urllib.parse.unquote(match.groupdict().get("id") or ""))
        except TollgateError as err:
            if wire == "anthropic":
                error = {**err.to_anthropic(), "request_id": headers["request-id"]}
            else:
                error = err.to_openai()
            await exchange.respond_json(err.status, error, headers)
            return
        if isinstance(reply, Raw):
            await exchange.respond(200, reply.content, headers, content_type=reply.content_type)
        else:
            await exchange.respond_json(200, reply, headers)

    # -- OpenAI files -------------------------------------------------------------------
    async def _upload(self, exchange: Exchange, _: str) -> Reply:
        form = parse_form(exchange.headers.get("content-type", ""), await exchange.body())
        return self.files.upload(form).to_json()

    async def _files(self, exchange: Exchange, _: str) -> Reply:
        query = _query(exchange)
        files = self.files.newest_first(query.get("purpose"))
        if query.get("order") == "asc":
            files.reverse()
        limit = page_limit(query.get("limit"), 10_000, 10_000)
        page, has_more = page_after(files, lambda f: f.id, query.get("after"), limit)
        return openai_list([f.to_json() for f in page], has_more)

    async def _file(self, _: Exchange, file_id: str) -> Reply:
        return self.files.get(file_id).to_json()

    async def _file_content(self, _: Exchange, file_id: str) -> Reply:
        return Raw(self.files.get(file_id).content, "application/octet-stream")

    async def _delete_file(self, _: Exchange, file_id: str) -> Reply:
        return self.files.delete(file_id)

    # -- OpenAI batches -----------------------------------------------------------------
    async def _create_batch(self, exchange: Exchange, _: str) -> Reply:
        return self.openai.create(await exchange.json_body())

    async def _batches(self, exchange: Exchange, _: str) -> Reply:
        return self.openai.page(_query(exchange))

    async def _batch(self, _: Exchange, batch_id: str) -> Reply:
        return self.openai.retrieve(batch_id)

    async def _cancel_batch(self, _: Exchange, batch_id: str) -> Reply:
        return self.openai.cancel(batch_id)

    # -- Anthropic message batches ------------------------------------------------------
    async def _create_message_batch(self, exchange: Exchange, _: str) -> Reply:
        return self.anthropic.create(await exchange.json_body(), _base_url(exchange))

    async def _message_batches(self, exchange: Exchange, _: str) -> Reply:
        return self.anthropic.page(_query(exchange), _base_url(exchange))

    async def _message_batch(self, exchange: Exchange, batch_id: str) -> Reply:
        return self.anthropic.retrieve(batch_id, _base_url(exchange))

    async def _delete_message_batch(self, _: Exchange, batch_id: str) -> Reply:
        return self.anthropic.delete(batch_id)

    async def _cancel_message_batch(self, exchange: Exchange, batch_id: str) -> Reply:
        return self.anthropic.cancel(batch_id, _base_url(exchange))

    async def _message_batch_results(self, _: Exchange, batch_id: str) -> Reply:
        # The SDK asks for application/binary and reads the body as JSON lines.
        return Raw(self.anthropic.results(batch_id), "application/binary")


def _query(exchange: Exchange) -> dict[str, str]:
    return {key: values[0] for key, values in urllib.parse.parse_qs(exchange.query).items()}


def _base_url(exchange: Exchange) -> str:
    """Where this simulator was reached, for the absolute `results_url` the SDK follows."""
    return f"http://{exchange.headers.get('host', '127.0.0.1')}"
