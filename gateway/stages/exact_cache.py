"""Exact cache: a request asked before is answered from the store, at no cost.

The key (gateway.cache.keys) hashes every field that determines the answer, the team's
namespace, the config of every later stage and of the requested model (so a changed
deployment or stage never serves an old answer), and the headers forwarded upstream. By
default only deterministic requests are cached (temperature 0 or a seed; embeddings
always); a team's policy can opt in to caching sampled ones.

A hit replays the stored answer in whichever form the client asked for (JSON or SSE), with
`x-tollgate-cache: hit` and `x-tollgate-cache-age`; it costs nothing, and the whole
baseline is this stage's saving. A miss passes on and stores the upstream's answer after
the client has it: a JSON body once sent, a stream once it has ended complete. Only
answers an upstream gave are stored (not another stage's short-circuit), only 200s, never
errors or streams cut short. A store that fails is a miss, never a failed request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from gateway.cache import (
    CACHE_HEADER,
    DEFAULT,
    CacheStorage,
    deterministic,
    exact_key,
    keep_answer,
    parse_controls,
    read_answer,
    replay,
)
from gateway.cache.versions import AnswerVersions
from gateway.config import Config, ExactCacheStageConfig
from gateway.dispatch import Dispatcher
from gateway.pipeline import FORWARDED_HEADER_PREFIXES, CallNext, RequestContext
from gateway.providers.base import ProviderResponse
from gateway.stages.team_settings import TeamOverrides, Throttled
from gateway.store.base import Store

log = logging.getLogger("tollgate.exact_cache")


class TeamSettings(BaseModel):
    """A team's `stages.exact_cache` in its policy; what it leaves out is the gateway's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool | None = None
    ttl_s: float | None = Field(default=None, gt=0)
    max_bytes: int | None = Field(default=None, gt=0)
    cache_nondeterministic: bool | None = None


@dataclass(frozen=True, slots=True)
class _Settings:
    enabled: bool
    ttl_s: float
    max_bytes: int
    cache_nondeterministic: bool


class ExactCacheStage:
    name: ClassVar[str] = "exact_cache"

    def __init__(self, config: Config, store: Store, dispatcher: Dispatcher) -> None:
        settings: ExactCacheStageConfig = config.stages.exact_cache
        self._defaults = _Settings(True, settings.ttl_s, settings.max_bytes, settings.cache_nondeterministic)
        self._store = store
        # The config of every later stage and of the requested alias, hashed once per model.
        self._version = AnswerVersions(config, dispatcher, stage=self.name)
        self._overrides = TeamOverrides(self.name, TeamSettings, self._defaults, logger=log)
        self._storages: dict[str, CacheStorage] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._warnings = Throttled(log)

    async def __call__(self, ctx: RequestContext, call_next: CallNext) -> ProviderResponse:
        request = ctx.request
        controls = parse_controls(ctx.request_headers) if ctx.request_headers else DEFAULT
        settings = self._overrides.resolve(ctx.team, ctx.stage_settings)
        version = None
        if settings.enabled and (controls.read or controls.write):
            if settings.cache_nondeterministic or deterministic(request):
                version = self._version(request.model)
        if version is None:
            # Not cached: switched off, bypassed, sampled, or a model the dispatcher will refuse.
            # (only-if-cached: the dispatcher refuses to call a model when no cache answered.)
            ctx.response_headers[CACHE_HEADER] = "bypass"
            return await call_next(ctx)
        key = exact_key(request, ctx.team, version, forwarded=_forwarded(ctx.client_headers))
        storage = self._storage(ctx.team, settings)
        if controls.read:
            answer = await read_answer(storage, key, self._warnings.warn)
            if answer is not None:
                age = answer.age_s()
                if controls.fresh_enough(age):
                    return replay(ctx, self.name, answer, age)
            ctx.record(self.name, detail={"status": "miss"})
        ctx.response_headers[CACHE_HEADER] = controls.status
        response = await call_next(ctx)
        # Only an upstream's own answer: never another stage's short-circuit, never an error.
        if controls.write and response.status == 200 and ctx.deployment is not None:
            # Stored once the client has it.
            keep_answer(response, request.endpoint, lambda answer: storage.put_nowait(key, answer.to_bytes()))
        return response

    # --- settings, versions, storages ----------------------------------------------------

    def _storage(self, team: str, settings: _Settings) -> CacheStorage:
        storage = self._storages.get(team)
        if (
            storage is not None
            and storage.ttl_s == settings.ttl_s
            and storage.max_bytes == settings.max_bytes
        ):
            return storage
        if storage is not None:
            # The team's policy changed: the old storage finishes its writes in the background.
            task = asyncio.get_running_loop().create_task(storage.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        storage = CacheStorage(self._store, f"xc:{team}", max_bytes=settings.max_bytes, ttl_s=settings.ttl_s)
        self._storages[team] = storage
        return storage

    async def aclose(self) -> None:
        """Finish the writes already queued, so a clean shutdown loses no answer."""
        await asyncio.gather(*(storage.aclose() for storage in self._storages.values()), *self._closing)


def _forwarded(headers: Mapping[str, str]) -> Mapping[str, str] | None:
    """The client headers forwarded upstream that can change the answer (trace context,
    also passed on, differs on every request and cannot)."""
    if not headers:
        return None
    return {
        name: value for name, value in headers.items() if name.startswith(FORWARDED_HEADER_PREFIXES)
    } or None
