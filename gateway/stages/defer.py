"""Defer: a request that may wait is answered `202 Accepted` and sent in a provider batch.

A request is deferred when the client says so (`x-tollgate-defer: 24h`, an ISO time, or
`true`), when its team's policy marks such traffic deferrable (`stages.defer.deferrable`:
by endpoint, model or key), when a budget whose action is `defer` is spent, or when it is a
line of a batch file sent to `/v1/batches`. It is stored as a job (gateway.batch.jobs)
before the client hears of it; `GET /v1/deferred/{id}` gives its status and, once done,
exactly the answer the online API would have given, costed at batch prices.

Only deployments whose provider has a batch API (OpenAI and OpenAI-compatible, Anthropic)
are deferred. Any other request the client asked to defer is served online at once, which
is faster and no dearer; one that a spent budget sends here is refused instead.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from gateway.batch.jobs import (
    DEFER_HEADER,
    WEBHOOK_HEADER,
    Deferral,
    Job,
    Jobs,
    dump_records,
    parse_deadline,
)
from gateway.batch.upstream import batch_kind
from gateway.cache.keys import digest
from gateway.config import DeferStageConfig
from gateway.dispatch import Dispatcher
from gateway.errors import BudgetExceeded, InvalidRequest
from gateway.pipeline import CallNext, RequestContext, add_transform
from gateway.providers.base import ProviderResponse
from gateway.stages.team_settings import TeamOverrides

log = logging.getLogger("tollgate.defer")

DEFERRED_PATH = "/v1/deferred/"


class Deferrable(BaseModel):
    """One rule of a team's `stages.defer.deferrable`: every field given must match."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: str | None = None  # chat, completions, embeddings
    model: str | None = None  # a name or a glob (`gpt-4o*`)
    key_id: str | None = None


class TeamSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool | None = None
    deferrable: list[Deferrable] | None = None
    deadline: str | None = None  # for traffic the policy defers: `24h`, `2d` ...


@dataclass(frozen=True, slots=True)
class _Team:
    enabled: bool = True
    deferrable: tuple[Mapping[str, Any], ...] | list[Mapping[str, Any]] = ()
    deadline: str | None = None


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a deferred request is sent: an alias's deployment with a batch API."""

    alias: str
    index: int
    upstream_model: str
    kind: str


class DeferStage:
    name: ClassVar[str] = "defer"

    def __init__(self, config: DeferStageConfig, jobs: Jobs, dispatcher: Dispatcher) -> None:
        self._config = config
        self._jobs = jobs
        self._dispatcher = dispatcher
        self._teams: TeamOverrides[_Team] = TeamOverrides("defer", TeamSettings, _Team(), logger=log)

    async def __call__(self, ctx: RequestContext, call_next: CallNext) -> ProviderResponse:
        deferral = self._deferral(ctx)
        if deferral is None:
            return await call_next(ctx)
        placement = self.placement(ctx.request.model, ctx.request.endpoint)
        if placement is None:
            if deferral.required:
                raise BudgetExceeded(
                    f"{deferral.reason.capitalize()} is spent and defers to the batch path, but "
                    f"'{ctx.request.model}' is served by no provider with a batch API.",
                )
            add_transform(ctx, "defer:online(no batch API)")
            return await call_next(ctx)
        job = self.job_for(ctx, deferral, placement)
        await self._jobs.create(job, {"alias": placement.alias, "index": placement.index,
                                      "upstream_model": placement.upstream_model,
                                      "endpoint": job.endpoint, "kind": placement.kind})  # fmt: skip
        ctx.response_headers["location"] = DEFERRED_PATH + job.id
        ctx.response_headers["x-tollgate-deferred"] = deferral.reason
        return ProviderResponse.from_json(status_body(job, "queued"), status=202)

    def _deferral(self, ctx: RequestContext) -> Deferral | None:
        if ctx.deferral is not None:
            deferral: Deferral = ctx.deferral
            return deferral
        now = time.time()
        config = self._config
        header = ctx.request_headers.get(DEFER_HEADER) if ctx.request_headers else None
        webhook = ctx.request_headers.get(WEBHOOK_HEADER) if ctx.request_headers else None
        if webhook is not None and not webhook.startswith(("http://", "https://")):
            raise InvalidRequest(
                f"{WEBHOOK_HEADER} must be an http(s) URL; got {webhook!r}.", param=WEBHOOK_HEADER
            )
        if header is not None:
            if header.strip().lower() in ("0", "false", "no", "off"):
                return None
            deadline = parse_deadline(
                header, now=now, default_s=config.default_deadline_s, max_s=config.max_deadline_s
            )
            return Deferral(deadline=deadline, reason="requested", webhook=webhook)
        team = self._teams.resolve(ctx.team, ctx.stage_settings) if ctx.stage_settings else None
        if team is None or not team.enabled or not team.deferrable:
            return None
        key_id = ctx.principal.key_id if ctx.principal else None
        for rule in team.deferrable:
            # Validated with the team's settings; laid over the defaults as plain mappings.
            endpoint, model, rule_key = (rule.get(name) for name in ("endpoint", "model", "key_id"))
            if (
                (endpoint is None or endpoint == ctx.request.endpoint)
                and (model is None or fnmatch.fnmatchcase(ctx.original.model, model))
                and (rule_key is None or rule_key == key_id)
            ):
                deadline = parse_deadline(
                    team.deadline or "true", now=now, default_s=config.default_deadline_s,
                    max_s=config.max_deadline_s,
                )  # fmt: skip
                return Deferral(deadline=deadline, reason="team policy", webhook=webhook)
        return None

    def placement(self, model: str, endpoint: str) -> Placement | None:
        """The first of the alias's own deployments with a batch API (fallbacks are online only)."""
        try:
            target = self._dispatcher.resolve(model)
        except Exception:
            return None
        for index, deployment in enumerate(target.entry.deployments):
            kind = batch_kind(deployment, endpoint)
            if kind is None:
                continue
            upstream = target.wildcard_rest if deployment.model == "*" else deployment.model
            return Placement(target.alias, index, upstream or model, kind)
        return None

    def job_for(self, ctx: RequestContext, deferral: Deferral, placement: Placement) -> Job:
        body: dict[str, Any] = {**ctx.request.body, "model": placement.upstream_model}
        # The answer is kept whole and fetched later: there is no stream to send it on.
        body.pop("stream", None)
        body.pop("stream_options", None)
        endpoint = ctx.request.endpoint
        group = digest(
            [placement.alias, placement.index, placement.upstream_model, endpoint, placement.kind], size=12
        )
        ctx.record(self.name, detail={"deadline": deferral.deadline, "reason": deferral.reason})
        return Job(
            id=ctx.request_id,
            team=ctx.team,
            key_id=ctx.principal.key_id if ctx.principal else None,
            wire=ctx.wire,
            endpoint=endpoint,
            requested_model=ctx.original.model,
            original_body=dict(ctx.original.body),
            body=body,
            model=ctx.request.model,
            alias=placement.alias,
            deployment_index=placement.index,
            upstream_model=placement.upstream_model,
            group=group,
            deadline=deferral.deadline,
            reason=deferral.reason,
            webhook=deferral.webhook,
            owner=deferral.owner,
            records=dump_records(ctx.records),
            holds=list(ctx.holds),
        )


def status_body(job: Job, status: str) -> dict[str, Any]:
    """What `GET /v1/deferred/{id}` says of a job without an answer yet (and the 202)."""
    return {
        "id": job.id,
        "object": "deferred_request",
        "status": status,
        "model": job.requested_model,
        "endpoint": job.endpoint,
        "created_at": int(job.created_at),
        "deadline": int(job.deadline),
        "status_url": DEFERRED_PATH + job.id,
    }
