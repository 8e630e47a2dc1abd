"""Compress: send fewer prompt tokens without losing what the answer needs.

Lossless rewrites run at every level but `off`: whitespace and decoration collapsed in
prose, JSON documents (tool results, structured parts) minified, paragraphs repeated across
messages replaced by a reference to their first copy. When the level is a ratio, each long
block (a document, a tool result, an earlier turn of at least `min_block_tokens`) also keeps
only that share of its tokens: the sentences that best serve the current question, in their
original order. The system prompt's instructions, the last user turn's question, code blocks
and `<protect>` regions are never changed (gateway.compress.messages says exactly what may).

Every transformation that removed tokens is recorded (tokens before and after, where, and
how many sentences were dropped, never the text) and listed in `x-tollgate-transforms`;
the tokens removed are this stage's saving. A team sets its own `level` and may switch each
transformation off under `stages.compress` in its policy.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.accounting.tokens import count_text
from gateway.compress.extractive import SentenceEmbedder
from gateway.compress.messages import Options, Outcome, compress_messages
from gateway.compress.settings import CompressLevel, CompressStageConfig
from gateway.pipeline import CallNext, RequestContext, add_transform
from gateway.providers.base import ProviderResponse
from gateway.stages.team_settings import TeamOverrides

log = logging.getLogger("tollgate.compress")

# Prompts above this many characters are compressed on a worker thread, off the event loop
# (~4 ms of CPU per 1k tokens when extracting: ~20 ms at 20k characters).
_INLINE_CHARS = 20_000

Level = Literal["off", "lossless"] | float


class TeamSettings(BaseModel):
    """A team's `stages.compress` in its policy; what it leaves out is the gateway's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    level: CompressLevel | None = None
    min_block_tokens: int | None = Field(default=None, gt=0)
    whitespace: bool | None = None
    minify_json: bool | None = None
    dedupe: bool | None = None


@dataclass(frozen=True, slots=True)
class _Settings:
    level: Level
    min_block_tokens: int
    whitespace: bool
    minify_json: bool
    dedupe: bool


class CompressStage:
    name: ClassVar[str] = "compress"

    def __init__(self, config: CompressStageConfig, embedder: SentenceEmbedder | None = None) -> None:
        defaults = _Settings(
            config.level, config.min_block_tokens, config.whitespace, config.minify_json, config.dedupe
        )
        self._overrides = TeamOverrides(self.name, TeamSettings, defaults, logger=log)
        self._embedder = embedder
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tollgate-compress")

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def __call__(self, ctx: RequestContext, call_next: CallNext) -> ProviderResponse:
        request = ctx.request
        settings = self._overrides.resolve(ctx.team, ctx.stage_settings)
        messages = request.body.get("messages")
        if settings.level == "off" or request.endpoint != "chat" or not isinstance(messages, list):
            return await call_next(ctx)
        options = Options(
            keep_ratio=settings.level if isinstance(settings.level, float) else None,
            min_block_tokens=settings.min_block_tokens,
            whitespace=settings.whitespace,
            minify_json=settings.minify_json,
            dedupe=settings.dedupe,
        )
        if sum(len(str(m.get("content") or "")) for m in messages if isinstance(m, dict)) > _INLINE_CHARS:
            loop = asyncio.get_running_loop()
            outcome = await loop.run_in_executor(self._pool, self._compress, messages, options, request.model)
        else:
            outcome = self._compress(messages, options, request.model)
        if outcome.changed_messages:
            ctx.request = request.replace(body={**request.body, "messages": outcome.messages})
            self._report(ctx, outcome, settings.level)
        return await call_next(ctx)

    def _compress(self, messages: list[Any], options: Options, model: str) -> Outcome:
        embedder = self._vectors() if options.keep_ratio is not None else None
        return compress_messages(messages, options, partial(count_text, model), embedder)

    def _vectors(self) -> SentenceEmbedder:
        """The word-piece table, read the first time a request is compressed extractively."""
        if self._embedder is None:
            from gateway.routing.static_embedding import shared_static_embedder  # ~0.4 s, 22 MiB

            self._embedder = shared_static_embedder()
        return self._embedder

    def _report(self, ctx: RequestContext, outcome: Outcome, level: Level) -> None:
        for name in outcome.transforms:
            if name == "extractive":
                kept = outcome.extractive_after / max(outcome.extractive_before, 1)
                add_transform(ctx, f"{self.name}:extractive({kept:.2f})")
            else:
                add_transform(ctx, f"{self.name}:{name}")
        saved = sum(outcome.saved_by_transform.values())
        ctx.record(
            self.name,
            saved_input_tokens=max(saved, 0),
            detail={
                "level": level,
                "transforms": outcome.transforms,
                "saved_tokens_by_transform": dict(outcome.saved_by_transform),
                "removed": outcome.removed,
            },
        )
