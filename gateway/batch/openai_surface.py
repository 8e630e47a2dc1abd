"""OpenAI's Files and Batch APIs on the gateway, so the official SDKs' calls work unchanged:
`files.create/retrieve/content/delete/list` and `batches.create/retrieve/cancel/list`.

A batch file's lines go through the whole pipeline as requests of the key that created the
batch (gateway.batch.client_batches): the caches answer what they can at once, and only the
rest is sent upstream, in provider batches at batch prices. Files and batches belong to the
uploading team; any other team is told they do not exist (404).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.batch.client_batches import ClientBatches
from gateway.batch.client_files import (
    MAX_FILE_BYTES,
    UPLOAD_PURPOSES,
    ClientFile,
    expiry_seconds,
    team_of,
)
from gateway.batch.routes import PrincipalOf
from gateway.errors import InvalidRequest, NotFound, PayloadTooLarge, ServiceUnavailable, TollgateError
from gateway.store.base import StoreUnavailable
from gateway.wire.batch_input import starts_as_jsonl
from gateway.wire.multipart import parse_form, required
from gateway.wire.openai import parse_body
from gateway.wire.paging import openai_list, page_limit

if TYPE_CHECKING:
    from gateway.runtime import Runtime

Handler = Callable[[Request, str], Awaitable[Response]]
# Room for the form's other fields and its boundaries around a file of the largest size.
_FORM_OVERHEAD = 64 * 1024


def batch_file_routes(runtime: Callable[[], Runtime], principal_of: PrincipalOf) -> list[Route]:
    def service() -> ClientBatches:
        rt = runtime()
        if rt.deferred is None:
            raise NotFound(
                "The Batch API needs the batch path, which is switched off on this gateway (stages.defer).",
                code="batches_disabled",
            )
        batches: ClientBatches = rt.deferred.client_batches
        batches.bind(rt.chain)
        return batches

    async def upload(request: Request, request_id: str) -> Response:
        principal = await principal_of(runtime(), request)
        batches = service()
        form = parse_form(request.headers.get("content-type", ""), await _read_upload(request))
        purpose = required(form, "purpose").text()
        if purpose not in UPLOAD_PURPOSES:
            raise InvalidRequest(
                f"Invalid value for 'purpose': {purpose!r}. Supported values are: 'batch' "
                "(this gateway keeps batch input files only).",
                param="purpose",
                code="invalid_value",
            )
        file_part = required(form, "file", file=True)
        if len(file_part.content) > MAX_FILE_BYTES:
            raise PayloadTooLarge(
                f"File is {len(file_part.content)} bytes; the limit is {MAX_FILE_BYTES} bytes.", param="file"
            )
        if not starts_as_jsonl(file_part.content):
            raise InvalidRequest("Invalid file format for Batch API. Must be .jsonl", param="file")
        anchor, seconds = form.get("expires_after[anchor]"), form.get("expires_after[seconds]")
        ttl_s = expiry_seconds(
            anchor.text() if anchor else None, seconds.text() if seconds else None, param="expires_after"
        )
        file = await batches.files.add(
            team_of(principal), file_part.filename or "upload.jsonl", purpose, file_part.content, ttl_s=ttl_s
        )
        return _json(file.to_json(), request_id)

    async def list_files(request: Request, request_id: str) -> Response:
        principal = await principal_of(runtime(), request)
        batches = service()
        query = request.query_params
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidRequest(
                f"Invalid value for 'order': {order!r}. Supported values are: 'asc' and 'desc'.",
                param="order",
                code="invalid_value",
            )
        files, has_more = await batches.files.page(
            team_of(principal), purpose=query.get("purpose"), limit=page_limit(query.get("limit"), 10_000, 10_000),
            after=query.get("after"), oldest_first=order == "asc",
        )  # fmt: skip
        return _json(openai_list([file.to_json() for file in files], has_more), request_id)

    async def own_file(request: Request) -> tuple[ClientBatches, ClientFile]:
        principal = await principal_of(runtime(), request)
        batches = service()
        return batches, await batches.files.get(request.path_params["file_id"], principal)

    async def get_file(request: Request, request_id: str) -> Response:
        _, file = await own_file(request)
        return _json(file.to_json(), request_id)

    async def file_content(request: Request, request_id: str) -> Response:
        batches, file = await own_file(request)
        content = await batches.files.content(file.id)
        if content is None:
            raise NotFound(f"No such File object: {file.id}", param="file_id", code="file_not_found")
        headers = {**_ids(request_id), "content-disposition": f'attachment; filename="{file.filename}"'}
        return Response(content, media_type="application/octet-stream", headers=headers)

    async def delete_file(request: Request, request_id: str) -> Response:
        batches, file = await own_file(request)
        # A batch still running reads its lines from the file: its bytes outlive it until then.
        await batches.files.delete(file, keep_content=await batches.input_in_use(file.id))
        return _json({"id": file.id, "object": "file", "deleted": True}, request_id)

    async def create_batch(request: Request, request_id: str) -> Response:
        principal = await principal_of(runtime(), request)
        batches = service()
        batch = await batches.create(principal, parse_body(await request.body()))
        return _json(batch.to_json(), request_id)

    async def list_batches(request: Request, request_id: str) -> Response:
        principal = await principal_of(runtime(), request)
        batches = service()
        query = request.query_params
        views, has_more = await batches.page(
            principal, limit=page_limit(query.get("limit"), 20, 100), after=query.get("after")
        )
        return _json(openai_list(views, has_more), request_id)

    async def get_batch(request: Request, request_id: str) -> Response:
        principal = await principal_of(runtime(), request)
        batches = service()
        batch = await batches.get(request.path_params["batch_id"], principal)
        return _json(await batches.view(batch), request_id)

    async def cancel_batch(request: Request, request_id: str) -> Response:
        principal = await principal_of(runtime(), request)
        batches = service()
        return _json(await batches.cancel(request.path_params["batch_id"], principal), request_id)

    table: list[tuple[str, Handler, str]] = [
        ("/files", upload, "POST"),
        ("/files", list_files, "GET"),
        ("/files/{file_id}", get_file, "GET"),
        ("/files/{file_id}", delete_file, "DELETE"),
        ("/files/{file_id}/content", file_content, "GET"),
        ("/batches", create_batch, "POST"),
        ("/batches", list_batches, "GET"),
        ("/batches/{batch_id}", get_batch, "GET"),
        ("/batches/{batch_id}/cancel", cancel_batch, "POST"),
    ]
    routes: list[Route] = []
    for path in dict.fromkeys(path for path, _, _ in table):
        methods = {method: handler for p, handler, method in table if p == path}
        endpoint = _dispatch(methods)
        # Clients that set base_url without /v1 are served too, as on the proxied endpoints.
        routes.append(Route("/v1" + path, endpoint, methods=list(methods)))
        routes.append(Route(path, endpoint, methods=list(methods)))
    return routes


def _dispatch(methods: dict[str, Handler]) -> Callable[[Request], Awaitable[Response]]:
    """One endpoint per path; every answer, errors included, names its request id."""

    @wraps(next(iter(methods.values())))
    async def endpoint(request: Request) -> Response:
        request_id = os.urandom(12).hex()
        try:
            return await methods[request.method](request, request_id)
        except TollgateError as err:
            return _error(err, request_id)
        except StoreUnavailable:
            return _error(
                ServiceUnavailable("The gateway's store is unavailable; try again shortly."), request_id
            )

    return endpoint


def _ids(request_id: str) -> dict[str, str]:
    return {"x-request-id": request_id, "x-tollgate-request-id": request_id}


def _json(data: Any, request_id: str) -> Response:
    return Response(orjson.dumps(data), media_type="application/json", headers=_ids(request_id))


def _error(err: TollgateError, request_id: str) -> Response:
    headers = {**err.headers, **_ids(request_id)}
    return Response(err.openai_body(), status_code=err.status, media_type="application/json", headers=headers)


async def _read_upload(request: Request) -> bytes:
    """The whole upload, refused (413) as soon as it is larger than a file may be."""
    limit = MAX_FILE_BYTES + _FORM_OVERHEAD
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"The upload is {declared} bytes; a file may be at most {MAX_FILE_BYTES} bytes."
        )
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The upload exceeds the {MAX_FILE_BYTES} bytes a file may have.")
        parts.append(chunk)
    return b"".join(parts)
