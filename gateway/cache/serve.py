"""What every answer cache does with a stored entry: read it, and serve it as a hit.

A store that is down or an entry that cannot be read is a miss, with a warning, never a
failed request. A hit says so in `x-tollgate-cache` and `x-tollgate-cache-age`, claims the
request's whole saving for its stage, and replays the answer as the client asked for it:
a stream when the request streams, a JSON body otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gateway.cache.answer import CachedAnswer
from gateway.cache.controls import AGE_HEADER, CACHE_HEADER
from gateway.cache.storage import CacheStorage
from gateway.pipeline import RequestContext
from gateway.providers.base import ProviderResponse
from gateway.store.base import StoreUnavailable

# How a cache warns (a throttled logger): the message, and the error behind it.
Warn = Callable[[str, Exception], None]


async def read_answer(
    storage: CacheStorage,
    key: str,
    warn: Warn,
    *,
    cache: str = "cache",
    on_absent: Callable[[], None] | None = None,
) -> CachedAnswer | None:
    """The answer stored under `key`, or None: absent (then `on_absent` is called), the
    store unavailable, or an entry this version cannot read. `cache` names the cache in
    warnings."""
    try:
        raw = await storage.get(key)
    except StoreUnavailable as err:
        warn(f"the {cache}'s store is unavailable; answering without it", err)
        return None
    if raw is None:
        if on_absent is not None:
            on_absent()
        return None
    try:
        return CachedAnswer.from_bytes(raw)
    except ValueError as err:
        warn(f"a {cache} entry could not be read; treated as a miss", err)
        return None


def replay(
    ctx: RequestContext,
    stage: str,
    answer: CachedAnswer,
    age_s: float,
    *,
    headers: Mapping[str, str] | None = None,
    detail: Mapping[str, Any] | None = None,
) -> ProviderResponse:
    """Serve a hit: its headers (`headers` added after `x-tollgate-cache`), the stage's
    record (owning the saving; `detail` added to its status and age), and the answer."""
    response_headers = ctx.response_headers
    response_headers[CACHE_HEADER] = "hit"
    if headers:
        response_headers.update(headers)
    response_headers[AGE_HEADER] = str(int(age_s))
    ctx.record(
        stage, owns_remainder=True, detail={"status": "hit", **(detail or {}), "age_s": round(age_s, 3)}
    )
    request = ctx.request
    if request.stream and answer.endpoint != "embeddings":
        return answer.stream_response(request.include_usage, request_id=ctx.request_id)
    return answer.json_response(ctx.request_id)
