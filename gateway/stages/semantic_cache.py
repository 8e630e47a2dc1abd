"""Semantic cache: a question asked before in other words is answered from the cache.

What is compared is the last user turn's text, embedded (all-MiniLM-L6-v2, int8 ONNX by
default). Everything else that determines the answer (model, system prompt, earlier turns,
tools, parameters, the config of later stages) is hashed into the entry's namespace with
the team, so only questions asked in the same context by the same team are ever compared:
a follow-up such as "and in French?" never meets another conversation's follow-up.

A candidate is served only if it is similar enough (the team's threshold) and passes
verification: numbers, names, negation and polarity must agree (gateway.semantic.verify).
Precision comes first; the benchmark (bench/semantic_cache_eval.py) chose the defaults.

Like the exact cache, only deterministic requests are cached unless the team opts in, a
hit costs nothing and earns its baseline, and answers are stored after the client has
them. Entries are shared with every instance through the store (gateway.semantic.catalog).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from gateway.cache import (
    DEFAULT,
    CacheControls,
    CachedAnswer,
    CacheStorage,
    context_fingerprint,
    deterministic,
    keep_answer,
    last_user_text,
    parse_controls,
    read_answer,
    replay,
)
from gateway.cache.keys import digest
from gateway.cache.versions import AnswerVersions
from gateway.config import SemanticCacheStageConfig
from gateway.pipeline import CallNext, RequestContext
from gateway.providers.base import ProviderResponse
from gateway.semantic.catalog import Catalog, Entry
from gateway.semantic.embedder import Embedder
from gateway.semantic.matcher import DEFAULT_THRESHOLD, Match, best_match
from gateway.stages.team_settings import TeamOverrides, Throttled
from gateway.store.base import Store, StoreUnavailable

log = logging.getLogger("tollgate.semantic_cache")

SOURCE_HEADER = "x-tollgate-cache-source"
SIMILARITY_HEADER = "x-tollgate-cache-similarity"


class TeamSettings(BaseModel):
    """A team's `stages.semantic_cache` in its policy; what it leaves out is the gateway's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool | None = None
    threshold: float | None = Field(default=None, gt=0, le=1)
    verify: bool | None = None
    cache_nondeterministic: bool | None = None


@dataclass(frozen=True, slots=True)
class _Settings:
    enabled: bool
    threshold: float
    verify: bool
    cache_nondeterministic: bool


class SemanticCacheStage:
    name: ClassVar[str] = "semantic_cache"

    def __init__(
        self,
        config: SemanticCacheStageConfig,
        store: Store,
        versions: AnswerVersions,
        embedder: Embedder,
    ) -> None:
        self._config = config
        self._store = store
        self._versions = versions
        self._embedder = embedder
        threshold = DEFAULT_THRESHOLD if config.threshold is None else config.threshold
        self._defaults = _Settings(True, threshold, config.verify, config.cache_nondeterministic)
        # One thread for embedding, search and index upkeep: onnxruntime, numpy and usearch
        # release the GIL, so the event loop runs on meanwhile, and never waits on an index lock.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tollgate-semantic")
        self._catalog = Catalog(
            store,
            embedder.dim,
            ttl_s=config.ttl_s,
            sync_interval_s=config.sync_interval_s,
            executor=self._pool,
        )
        self._storages: dict[str, CacheStorage] = {}
        self._overrides = TeamOverrides(self.name, TeamSettings, self._defaults, logger=log)
        self._pending: set[asyncio.Task[None]] = set()
        self._warnings = Throttled(log)

    async def start(self) -> None:
        await self._catalog.start()

    async def aclose(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=5.0)
        await asyncio.gather(*(storage.aclose() for storage in self._storages.values()))
        await self._catalog.aclose()
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    async def __call__(self, ctx: RequestContext, call_next: CallNext) -> ProviderResponse:
        request = ctx.request
        settings = self._overrides.resolve(ctx.team, ctx.stage_settings)
        if not settings.enabled or request.endpoint != "chat":
            return await call_next(ctx)
        controls = parse_controls(ctx.request_headers) if ctx.request_headers else DEFAULT
        if not (controls.read or controls.write):
            return await call_next(ctx)
        if not (settings.cache_nondeterministic or deterministic(request)):
            return await call_next(ctx)
        question = last_user_text(request)
        if question is None or not question.strip() or len(question) > self._config.max_question_chars:
            return await call_next(ctx)
        version = self._versions(request.model)
        if version is None:
            return await call_next(ctx)
        namespace = digest([ctx.team, version, context_fingerprint(request, question)])
        vector: np.ndarray | None = None
        index = self._catalog.index(namespace)
        if controls.read and index is not None and len(index):
            loop = asyncio.get_running_loop()
            vector, match = await loop.run_in_executor(self._pool, self._match, question, namespace, settings)
            hit = None if match is None else await self._answer(ctx, match, controls)
            if hit is not None:
                return hit
            ctx.record(self.name, detail={"status": "miss"})
        response = await call_next(ctx)
        if controls.write and response.status == 200 and ctx.deployment is not None:
            self._keep(ctx.team, namespace, question, vector, response)
        return response

    # --- lookup ---------------------------------------------------------------------------

    def _match(self, question: str, namespace: str, settings: _Settings) -> tuple[np.ndarray, Match | None]:
        """On the worker thread: embed the question and find the entry that may answer it."""
        vector = self._embedder.embed([question])[0]
        index = self._catalog.index(namespace)
        if index is None:
            return vector, None
        match = best_match(
            question, vector, index, self._question_of, threshold=settings.threshold, verify=settings.verify
        )
        return vector, match

    def _question_of(self, seq: int) -> str | None:
        entry = self._catalog.entry(seq)
        return None if entry is None else entry.question

    async def _answer(
        self, ctx: RequestContext, match: Match, controls: CacheControls
    ) -> ProviderResponse | None:
        entry = self._catalog.entry(match.id)
        if entry is None:
            return None
        # The entry's namespace includes the team, so its answer is in this team's storage.
        answer = await read_answer(
            self._storage(ctx.team),
            entry.answer_key,
            self._warnings.warn,
            cache="semantic cache",
            # Evicted or expired: forget it here too.
            on_absent=lambda: self._catalog.drop(match.id),
        )
        if answer is None:
            return None
        age = answer.age_s()
        if not controls.fresh_enough(age):
            return None
        return replay(
            ctx,
            self.name,
            answer,
            age,
            headers={SOURCE_HEADER: "semantic", SIMILARITY_HEADER: f"{match.similarity:.4f}"},
            detail={"similarity": round(match.similarity, 4)},
        )

    # --- storing --------------------------------------------------------------------------

    def _keep(
        self, team: str, namespace: str, question: str, vector: np.ndarray | None, response: ProviderResponse
    ) -> None:
        """Store the answer and its question once the client has the answer."""

        def keep(answer: CachedAnswer) -> None:
            task = asyncio.get_running_loop().create_task(
                self._write(team, namespace, question, vector, answer)
            )
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

        keep_answer(response, "chat", keep)

    async def _write(
        self, team: str, namespace: str, question: str, vector: np.ndarray | None, answer: CachedAnswer
    ) -> None:
        try:
            if vector is None:
                loop = asyncio.get_running_loop()
                vector = (await loop.run_in_executor(self._pool, self._embedder.embed, [question]))[0]
            key = f"sc:{team}:{digest([namespace, question])}"
            written = self._storage(team).put_nowait(key, answer.to_bytes())
            # The entry is announced only once its answer can be read (never if it was dropped).
            if written is not None and await written:
                await self._catalog.add(Entry(namespace, question, key, time.time()), vector)
        except StoreUnavailable as err:
            self._warnings.warn("the semantic cache could not store an answer", err)
        except Exception:
            log.exception("storing an answer in the semantic cache failed")

    # --- settings -------------------------------------------------------------------------

    def _storage(self, team: str) -> CacheStorage:
        storage = self._storages.get(team)
        if storage is None:
            storage = self._storages[team] = CacheStorage(
                self._store, f"sc:{team}", max_bytes=self._config.max_bytes, ttl_s=self._config.ttl_s
            )
        return storage
