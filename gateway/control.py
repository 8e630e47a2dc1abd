"""Control routes (Starlette): model list, health, the admin API for teams, keys and policies,
budget usage, and spend.

The admin API answers only to the master key. Errors use the same OpenAI-style body as the
proxied endpoints.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.accounting.spend import SpendSummary, parse_group_by, parse_time, to_csv, totals
from gateway.batch.openai_surface import batch_file_routes
from gateway.batch.routes import deferred_routes
from gateway.errors import (
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PermissionDenied,
    ServiceUnavailable,
    TollgateError,
)
from gateway.pipeline import Principal
from gateway.stages.auth import AuthStage
from gateway.stages.policy import PolicyStage
from gateway.stages.policy_report import budget_report, list_policies, relative_errors, team_policy_entry
from gateway.stages.policy_source import PolicySource
from gateway.store.base import StoreUnavailable
from policies import PolicyError

if TYPE_CHECKING:
    from gateway.runtime import Runtime
    from gateway.server import TollgateApp

log = logging.getLogger("tollgate.control")
# Ledger rows read per store round trip while adding up spend.
_SPEND_PAGE = 5_000


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def build_control_app(app: TollgateApp) -> Starlette:
    def runtime() -> Runtime:
        assert app.runtime is not None
        return app.runtime

    async def models(request: Request) -> Response:
        await _principal(runtime(), request)
        created = int(time.time())
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "tollgate"}
            for name in runtime().dispatcher.listed_models()
        ]
        return _json({"object": "list", "data": data})

    async def metrics(request: Request) -> Response:
        # Prometheus scrapes without credentials, as it does every exporter; switch it off
        # with `telemetry.prometheus: false` where spend per team must stay private.
        text = runtime().telemetry.prometheus_text()
        if text is None:
            raise NotFound("Prometheus exposition is switched off (telemetry.prometheus).")
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if app.runtime is None:
            return _json({"status": "starting"}, 503)
        try:
            await app.runtime.store.ping()
        except StoreUnavailable as err:
            return _json({"status": "unavailable", "store": str(err)}, 503)
        return _json({"status": "ready", "store": app.runtime.config.store.backend})

    async def teams(request: Request) -> Response:
        rt = runtime()
        await _master(rt, request)
        if request.method == "POST":
            body = await _body(request)
            team = await rt.keys.create_team(body.get("id"))  # type: ignore[arg-type]
            return _json(asdict(team), 201)
        return _json({"data": [asdict(t) for t in await rt.keys.list_teams()]})

    async def team(request: Request) -> Response:
        rt = runtime()
        await _master(rt, request)
        return _json(asdict(await rt.keys.revoke_team(request.path_params["team_id"])))

    async def keys(request: Request) -> Response:
        rt = runtime()
        await _master(rt, request)
        if request.method == "POST":
            body = await _body(request)
            team_id, name = body.get("team"), body.get("name", "")
            if not isinstance(team_id, str) or not team_id:
                raise InvalidRequest("Missing required parameter: 'team'.", param="team")
            if not isinstance(name, str):
                raise InvalidRequest("Invalid 'name': expected a string.", param="name")
            plaintext, record = await rt.keys.create_key(team_id, name)
            return _json({"key": plaintext, **asdict(record)}, 201)
        team_filter = request.query_params.get("team")
        return _json({"data": [asdict(k) for k in await rt.keys.list_keys(team_filter)]})

    async def key(request: Request) -> Response:
        rt = runtime()
        await _master(rt, request)
        return _json(asdict(await rt.keys.revoke_key(request.path_params["key_id"])))

    async def ledger(request: Request) -> Response:
        rt = runtime()
        await _master(rt, request)
        try:
            after = int(request.query_params.get("after", "0"))
            limit = int(request.query_params.get("limit", "10000"))
        except ValueError:
            raise InvalidRequest("'after' and 'limit' must be integers.", param="after") from None
        return _json({"data": await rt.ledger.rows(after=after, limit=limit)})

    async def spend(request: Request) -> Response:
        rt = runtime()
        await _master(rt, request)
        summary, output = _spend_query(request.query_params)
        # Page through the whole ledger, folding each page in, so memory holds one page at a time.
        after = 0
        while True:
            page = await rt.ledger.rows(after=after, limit=_SPEND_PAGE)
            for row in page:
                summary.add(row)
            if len(page) < _SPEND_PAGE:
                break
            after = page[-1]["seq"]
        groups = summary.groups()
        if output == "csv":
            return Response(to_csv(groups, summary.group_by), media_type="text/csv")
        body = {"object": "spend", "group_by": list(summary.group_by), "data": groups}
        return _json({**body, "total": totals(groups, summary.group_by)})

    async def policies(request: Request) -> Response:
        rt = runtime()
        await _master(rt, request)
        listing = await list_policies(_policy_source(rt), rt.store)
        return _json({**listing, "reload_interval_s": rt.config.stages.policy.reload_interval_s})

    async def policy(request: Request) -> Response:
        rt = runtime()
        await _master(rt, request)
        source, team_id = _policy_source(rt), request.path_params["team"]
        if request.method == "PUT":
            document = await _body(request)
            try:
                await source.set_team(team_id, document)
            except PolicyError as err:
                message, param = relative_errors(team_id, err)
                raise InvalidRequest(
                    f"Invalid policy for team '{team_id}': {message}", param=param, code="invalid_policy"
                ) from None
            # In force here when this answers; every other instance within the reload interval.
            await source.reload()
            return _json({"team": team_id, "source": "api", "policy": document,
                          "reload_interval_s": rt.config.stages.policy.reload_interval_s})  # fmt: skip
        if request.method == "DELETE":
            if not await source.delete_team(team_id):
                raise NotFound(
                    f"Team '{team_id}' has no policy set through the admin API; a policy from the "
                    "policy file is changed in the file.",
                    param="team",
                )
            await source.reload()
            now_applies = await team_policy_entry(source, rt.store, team_id)
            source_now = None if now_applies is None else now_applies["source"]
            return _json({"team": team_id, "deleted": True, "source": source_now})
        entry = await team_policy_entry(source, rt.store, team_id)
        if entry is None:
            raise NotFound(
                f"No policy applies to team '{team_id}': it has none and there is no default.", param="team"
            )
        return _json(entry)

    async def budgets(request: Request) -> Response:
        rt = runtime()
        await _master(rt, request)
        source = _policy_source(rt)
        team_filter = request.query_params.get("team") or None
        team_ids = [t.id for t in await rt.keys.list_teams() if not t.revoked]
        key_ids: dict[str, list[str]] = {}
        for record in await rt.keys.list_keys(team_filter):
            if not record.revoked:
                key_ids.setdefault(record.team, []).append(record.id)
        report = await budget_report(
            source, rt.store, team_ids=team_ids, key_ids=key_ids, now=datetime.now(UTC), team=team_filter
        )
        return _json(report)

    routes = [
        Route("/v1/models", models, methods=["GET"]),
        Route("/models", models, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/admin/teams", teams, methods=["GET", "POST"]),
        Route("/admin/teams/{team_id}", team, methods=["DELETE"]),
        Route("/admin/keys", keys, methods=["GET", "POST"]),
        Route("/admin/keys/{key_id}", key, methods=["DELETE"]),
        Route("/admin/ledger", ledger, methods=["GET"]),
        Route("/admin/policies", policies, methods=["GET"]),
        Route("/admin/policies/{team}", policy, methods=["GET", "PUT", "DELETE"]),
        Route("/admin/budgets", budgets, methods=["GET"]),
        Route("/v1/spend", spend, methods=["GET"]),
        *deferred_routes(runtime, _principal),
        *batch_file_routes(runtime, _principal),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={
            TollgateError: _tollgate_error,
            HTTPException: _http_error,
            StoreUnavailable: _store_error,
            Exception: _unhandled,
        },
    )


def _spend_query(params: QueryParams) -> tuple[SpendSummary, str]:
    """An empty summary for the query's grouping and filters, and the output format."""
    try:
        group_by = parse_group_by(params.get("group_by", "team,model").split(","))
    except ValueError as err:
        raise InvalidRequest(f"Invalid 'group_by': {err}.", param="group_by", code="invalid_value") from None
    bounds: dict[str, float | None] = {}
    for name in ("start", "end"):
        text = params.get(name)
        try:
            bounds[name] = parse_time(text, is_end=name == "end") if text else None
        except ValueError as err:
            raise InvalidRequest(f"Invalid '{name}': {err}.", param=name, code="invalid_value") from None
    start, end = bounds["start"], bounds["end"]
    if start is not None and end is not None and end <= start:
        raise InvalidRequest("Invalid 'end': it must be after 'start'.", param="end", code="invalid_value")
    output = params.get("format", "json")
    if output not in ("json", "csv"):
        raise InvalidRequest(
            f"Invalid 'format': {output!r}; expected 'json' or 'csv'.", param="format", code="invalid_value"
        )
    summary = SpendSummary(group_by=group_by, start=start, end=end, team=params.get("team") or None)
    return summary, output


def _policy_source(rt: Runtime) -> PolicySource:
    stage = next((stage for stage in rt.stages if isinstance(stage, PolicyStage)), None)
    if stage is None:
        raise NotFound(
            "Policies are switched off on this gateway (stages.policy.enabled).", code="policy_disabled"
        )
    return stage.source


def _auth_stage(rt: Runtime) -> AuthStage | None:
    return next((stage for stage in rt.stages if isinstance(stage, AuthStage)), None)


async def _principal(rt: Runtime, request: Request) -> Principal | None:
    auth = _auth_stage(rt)
    return await auth.authenticate(_api_key(request)) if auth is not None else None


async def _master(rt: Runtime, request: Request) -> None:
    auth = _auth_stage(rt)
    if auth is None or not rt.config.server.master_key:
        raise PermissionDenied("The admin API needs a master key (server.master_key or TOLLGATE_MASTER_KEY).")
    principal = await auth.authenticate(_api_key(request))
    if not principal.is_master:
        raise PermissionDenied("The admin API requires the master key.")


def _api_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    return request.headers.get("x-api-key")


async def _body(request: Request) -> dict[str, Any]:
    from gateway.wire.openai import parse_body

    return parse_body(await request.body())


async def _tollgate_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TollgateError)
    return Response(exc.openai_body(), status_code=exc.status, media_type="application/json", headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    err: TollgateError
    if exc.status_code == 405:
        # Starlette's 405 carries the route's `Allow` header, which HTTP requires on a 405.
        err = MethodNotAllowed(
            f"{request.method} is not allowed on {request.url.path}.", headers=dict(exc.headers or {})
        )
    elif exc.status_code == 404:
        err = NotFound(f"Unknown path: {request.method} {request.url.path}.", code="unknown_url")
    else:
        err = TollgateError(str(exc.detail))
        err.status = exc.status_code
    return await _tollgate_error(request, err)


async def _store_error(request: Request, exc: Exception) -> Response:
    log.error("store unavailable", extra={"error": str(exc)})
    return await _tollgate_error(request, ServiceUnavailable("The gateway's store is unavailable; try again shortly."))


async def _unhandled(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on a control route")
    return await _tollgate_error(request, InternalError("The gateway failed to handle this request."))
