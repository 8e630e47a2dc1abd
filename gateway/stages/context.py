"""Context: send the model what the answer needs, not everything the client kept.

Three transformations of a chat request, each switched on and tuned in `stages.context`
and each one a team may turn off (docs/context.md):

1. stale tool results: a tool output a later user turn has moved past becomes a short stub
   (gateway.context.prune);
2. history: a conversation past `budget_tokens` keeps its system prompt and recent turns and
   has the middle replaced by a summary written by `summary_model`, kept in the store per
   conversation prefix (gateway.context.history);
3. tool selection: a request with more than `max_tools` tools is sent the `top_k` most
   relevant to the conversation, plus every tool already used or forced
   (gateway.context.tools). If the answer calls a tool that was left out, the request is
   sent again with every tool (JSON answers; a stream is passed through as it comes and the
   call is only recorded, since re-sending would mean holding the client's stream back).

Each transformation is recorded with the tokens before and after and what it removed, and
named in the `x-tollgate-transforms` response header, e.g. `context:tools(40->5)`.
A summary costs a model call: its price is subtracted from the saving (see `_summarise`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from gateway.accounting.prices import PriceTable
from gateway.accounting.tokens import count_prompt, count_tools, encoding_for
from gateway.config import ContextStageConfig
from gateway.context import history
from gateway.context.prune import prune_tool_results
from gateway.context.settings import ToolSelectionConfig
from gateway.context.tools import Selection, TextEmbedder, ToolVectors, called_tools, select
from gateway.dispatch import Dispatcher
from gateway.errors import TollgateError
from gateway.pipeline import CallNext, Request, RequestContext, add_transform
from gateway.providers.base import ProviderResponse, StreamWrapper
from gateway.stages.team_settings import TeamOverrides, Throttled
from gateway.store.base import Store, StoreUnavailable

log = logging.getLogger("tollgate.context")


class TeamSettings(BaseModel):
    """A team's `stages.context` in its policy; what it leaves out is the gateway's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool | None = None
    tool_selection: bool | None = None
    max_tools: int | None = Field(default=None, ge=1)
    top_k: int | None = Field(default=None, ge=1)
    prune_tool_results: bool | None = None
    history: bool | None = None
    budget_tokens: int | None = Field(default=None, ge=256)
    keep_recent_turns: int | None = Field(default=None, ge=1)


@dataclass(frozen=True, slots=True)
class _Settings:
    enabled: bool
    tool_selection: bool
    max_tools: int
    top_k: int
    prune_tool_results: bool
    history: bool
    budget_tokens: int
    keep_recent_turns: int


class ContextStage:
    name: ClassVar[str] = "context"

    def __init__(
        self,
        config: ContextStageConfig,
        store: Store,
        dispatcher: Dispatcher,
        prices: PriceTable,
        embedder: TextEmbedder | None,
    ) -> None:
        self._config = config
        self._store = store
        self._dispatcher = dispatcher
        self._prices = prices
        tools, hist = config.tool_selection, config.history
        defaults = _Settings(
            enabled=True,
            tool_selection=tools.enabled and embedder is not None,
            max_tools=tools.max_tools,
            top_k=tools.top_k,
            prune_tool_results=config.prune_tool_results.enabled,
            history=hist.active,
            budget_tokens=hist.budget_tokens,
            keep_recent_turns=hist.keep_recent_turns,
        )
        self._overrides = TeamOverrides(self.name, TeamSettings, defaults, logger=log)
        self._vectors = ToolVectors(embedder) if embedder is not None else None
        # One thread embeds: onnxruntime releases the GIL, the event loop runs on meanwhile.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tollgate-context")
        self._warnings = Throttled(log)
        self._told_no_embedder = False

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def __call__(self, ctx: RequestContext, call_next: CallNext) -> ProviderResponse:
        settings = self._overrides.resolve(ctx.team, ctx.stage_settings)
        request = ctx.request
        messages = request.body.get("messages")
        if not settings.enabled or request.endpoint != "chat" or not isinstance(messages, list):
            return await call_next(ctx)
        model = request.model
        body: dict[str, Any] = dict(request.body)
        if settings.prune_tool_results:
            self._prune(ctx, body, model)
        if settings.history and self._config.history.summary_model:
            await self._shorten(ctx, body, model, settings)
        selection: Selection | None = None
        full_tools = body.get("tools")
        if settings.tool_selection and isinstance(full_tools, list) and len(full_tools) > settings.max_tools:
            selection = await self._select(ctx, body, model, settings)
        if body != request.body:
            ctx.request = request.replace(body=body)
        response = await call_next(ctx)
        if selection is None or not selection.removed:
            return response
        if response.stream is not None:
            response.stream = _WatchedStream(response.stream, ctx, set(selection.removed))
            return response
        if response.status != 200 or not isinstance(full_tools, list):
            return response
        return await self._resend_if_needed(ctx, call_next, response, full_tools, selection, model)

    # --- stale tool results ---------------------------------------------------------------

    def _prune(self, ctx: RequestContext, body: dict[str, Any], model: str) -> None:
        pruned = prune_tool_results(
            body["messages"], model, min_tokens=self._config.prune_tool_results.min_tokens
        )
        if not pruned.count:
            return
        body["messages"] = pruned.messages
        saved = pruned.tokens_before - pruned.tokens_after
        ctx.record(
            self.name,
            saved_input_tokens=saved,
            detail={
                "transform": "prune",
                "tool_results": pruned.count,
                "tokens_before": pruned.tokens_before,
                "tokens_after": pruned.tokens_after,
                "tool_call_ids": list(pruned.ids),
            },
        )
        add_transform(ctx, f"context:prune({pruned.count})")

    # --- history --------------------------------------------------------------------------

    async def _shorten(
        self, ctx: RequestContext, body: dict[str, Any], model: str, settings: _Settings
    ) -> None:
        conf = self._config.history
        messages = body["messages"]
        cut = history.plan(
            messages,
            model,
            budget_tokens=settings.budget_tokens,
            keep_recent_turns=settings.keep_recent_turns,
            summary_tokens=conf.summary_max_tokens,
        )
        if cut is None:
            return
        before = cut.tokens
        try:
            summary, cost_usd, cached, usage = await self._summarise(ctx, messages, cut)
        except (TollgateError, ValueError) as err:
            self._warnings.warn("a conversation could not be summarised; it is sent whole", err)
            return
        # The summariser's tokenizer may differ from this count's: cut to what was planned for.
        enc = encoding_for(model)
        ids = enc.encode(summary, disallowed_special=())
        if len(ids) > conf.summary_max_tokens:
            summary = enc.decode(ids[: conf.summary_max_tokens])
        body["messages"] = history.rebuild(messages, cut, summary)
        after = count_prompt("chat", model, {"messages": body["messages"]})
        # The summary call is real spending the answer's cost does not show: it is taken off
        # this saving, as the input tokens of the requested model that would cost the same.
        price = self._prices.price(ctx.original.model)
        charged = 0
        if cost_usd and price is not None and price.input_per_mtok > 0:
            charged = math.ceil(cost_usd * Decimal(1_000_000) / price.input_per_mtok)
        dropped = cut.cut - cut.head
        ctx.record(
            self.name,
            saved_input_tokens=before - after - charged,
            detail={
                "transform": "history",
                "tokens_before": before,
                "tokens_after": after,
                "messages_summarised": dropped,
                "summary_model": conf.summary_model,
                "summary_cached": cached,
                "summary_usage": usage,
                "summary_cost_usd": str(cost_usd) if cost_usd is not None else None,
                "summary_cost_as_input_tokens": charged,
                "over_budget": cut.over_budget,
            },
        )
        add_transform(ctx, f"context:history({before}->{after})")

    async def _summarise(
        self, ctx: RequestContext, messages: list[Any], cut: history.Cut
    ) -> tuple[str, Decimal | None, bool, dict[str, int] | None]:
        """(summary, what writing it cost, whether it came from the store, the call's usage)."""
        conf = self._config.history
        summary_model = str(conf.summary_model)
        key = history.prefix_key(summary_model, messages, cut.cut)
        stored = await self._get(key)
        if stored is not None:
            return stored, Decimal(0), True, None
        previous, start = None, cut.head
        for end in history.earlier_ends(messages, cut):
            found = await self._get(history.prefix_key(summary_model, messages, end))
            if found is not None:
                previous, start = found, end
                break
        body = {
            "model": summary_model,
            "messages": history.summary_request(previous, messages[start : cut.cut], conf.summary_max_tokens),
            "max_tokens": conf.summary_max_tokens,
            "temperature": 0,
        }
        request = Request(endpoint="chat", model=summary_model, body=body)
        call = RequestContext(
            request_id=f"{ctx.request_id}-summary",
            original=request,
            request=request,
            principal=ctx.principal,
        )
        response = await self._dispatcher(call)
        answer = response.json()
        text = answer["choices"][0]["message"].get("content") if answer.get("choices") else None
        if not isinstance(text, str) or not text.strip():
            raise ValueError("the summary model answered no text")
        usage = response.usage
        cost = None
        if usage is not None:
            override = call.deployment.effective_price() if call.deployment is not None else None
            cost = self._prices.cost(call.served_model or summary_model, usage, override=override)
        try:
            await self._store.set(key, text.encode(), ttl_s=conf.summary_ttl_s)
        except StoreUnavailable as err:
            self._warnings.warn("a conversation summary could not be stored", err)
        usage_detail = (
            None
            if usage is None
            else {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}
        )
        return text, cost, False, usage_detail

    async def _get(self, key: str) -> str | None:
        try:
            raw = await self._store.get(key)
        except StoreUnavailable as err:
            self._warnings.warn("the store is unavailable; conversation summaries are not reused", err)
            return None
        return None if raw is None else raw.decode()

    # --- tool selection -------------------------------------------------------------------

    async def _select(
        self, ctx: RequestContext, body: dict[str, Any], model: str, settings: _Settings
    ) -> Selection | None:
        if self._vectors is None:
            # A team turned selection on where the gateway loaded no embedder to select with.
            if not self._told_no_embedder:
                self._told_no_embedder = True
                log.warning(
                    "a team turned tool selection on, but the gateway has it off (no embedder "
                    "loaded): tools are sent as they come"
                )
            return None
        loop = asyncio.get_running_loop()
        selected = await loop.run_in_executor(
            self._pool, _select_tools, self._vectors, body, settings.top_k, model
        )
        if selected is None:
            return None
        selection, kept, before, after = selected
        tools = body["tools"]
        body["tools"] = kept
        ctx.record(
            self.name,
            saved_input_tokens=before - after,
            detail={
                "transform": "tools",
                "tools_before": len(tools),
                "tools_after": len(kept),
                "tokens_before": before,
                "tokens_after": after,
                "removed": list(selection.removed),
                "pinned": list(selection.pinned),
            },
        )
        add_transform(ctx, f"context:tools({len(tools)}->{len(kept)})")
        return selection

    async def _resend_if_needed(
        self,
        ctx: RequestContext,
        call_next: CallNext,
        response: ProviderResponse,
        full_tools: list[Any],
        selection: Selection,
        model: str,
    ) -> ProviderResponse:
        if not self._config.tool_selection.resend_on_removed_tool:
            return response
        try:
            called = called_tools(response.json())
        except ValueError:
            return response
        missing = sorted(called & set(selection.removed))
        if not missing:
            return response
        # The first answer was paid for and thrown away: its tokens count against the saving.
        usage = response.usage
        wasted_in = usage.prompt_tokens if usage else 0
        wasted_out = usage.completion_tokens if usage else 0
        ctx.request = ctx.request.replace(body={**ctx.request.body, "tools": full_tools})
        ctx.record(
            self.name,
            saved_input_tokens=-wasted_in,
            saved_output_tokens=-wasted_out,
            detail={
                "transform": "tools_resend",
                "called_removed": missing,
                "discarded_usage": [wasted_in, wasted_out],
            },
        )
        add_transform(ctx, "context:tools-resend")
        log.info("an answer called a tool left out; sent again with every tool", extra={"tools": missing})
        return await call_next(ctx)


def load_tool_embedder(config: ToolSelectionConfig) -> TextEmbedder:
    if config.embedder == "static":
        from gateway.routing.static_embedding import shared_static_embedder

        return shared_static_embedder()
    from gateway.semantic.embedder import shared_embedder

    return shared_embedder("onnx")


def _select_tools(
    vectors: ToolVectors, body: dict[str, Any], top_k: int, model: str
) -> tuple[Selection, list[Any], int, int] | None:
    """On the worker thread: the selection, the tools kept, and the tools' tokens before and
    after; None when nothing is left out."""
    selection = select(vectors, body, top_k)
    if selection is None or not selection.removed:
        return None
    tools = body["tools"]
    kept = [tools[i] for i in selection.kept]
    return selection, kept, count_tools(model, tools), count_tools(model, kept)


class _WatchedStream(StreamWrapper):
    """A streamed answer passed through untouched; at its end, a call of a tool that was left
    out is recorded (the client already has the stream, so it is not re-sent)."""

    __slots__ = ("_ctx", "_names")

    def __init__(self, inner: Any, ctx: RequestContext, removed: set[str]) -> None:
        super().__init__(inner)
        self._ctx = ctx
        self._names = [n.encode() for n in removed]

    async def _iterate(self) -> AsyncIterator[bytes]:
        called: set[str] = set()
        own = self._own_seen
        async for chunk in self._source:
            if own is not None:
                own.append(chunk)
            if b'"tool_calls"' in chunk:
                called.update(
                    n.decode()
                    for n in self._names
                    if b'"name":"' + n + b'"' in chunk.replace(b'": "', b'":"')
                )
            yield chunk
        if called:
            self._ctx.record(
                "context", detail={"transform": "tools_removed_called", "called_removed": sorted(called)}
            )
