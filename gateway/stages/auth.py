"""Auth: who is calling. The master key, or a virtual key mapped to a team.

Verified keys are remembered for `cache_ttl_s` so the hot path does not ask the store on
every request; that is also the longest a revoked key keeps working.
"""

from __future__ import annotations

import hmac
import time
from typing import ClassVar

from gateway.config import AuthStageConfig
from gateway.errors import AuthenticationFailed
from gateway.keys import KeyRing, hash_key
from gateway.pipeline import CallNext, Principal, RequestContext
from gateway.providers.base import ProviderResponse

MASTER_TEAM = "master"
_CACHE_LIMIT = 10_000


class AuthStage:
    name: ClassVar[str] = "auth"

    def __init__(self, config: AuthStageConfig, keys: KeyRing, master_key: str | None) -> None:
        self._keys = keys
        self._master_key = master_key
        self._ttl = config.cache_ttl_s
        self._cache: dict[str, tuple[Principal | None, float]] = {}

    async def __call__(self, ctx: RequestContext, call_next: CallNext) -> ProviderResponse:
        # A principal already set was authenticated by the gateway itself: a line of a batch
        # file runs as the key that created the batch (gateway.batch.openai_surface).
        if ctx.principal is None:
            ctx.principal = await self.authenticate(ctx.api_key)
        return await call_next(ctx)

    async def authenticate(self, api_key: str | None) -> Principal:
        if not api_key:
            raise AuthenticationFailed(
                "Missing API key. Pass it as 'Authorization: Bearer <key>' (or 'x-api-key: <key>').",
                code="missing_api_key",
            )
        # Bytes, not str: compare_digest refuses non-ASCII strings, and a header may hold any.
        if self._master_key and hmac.compare_digest(api_key.encode(), self._master_key.encode()):
            return Principal(team=MASTER_TEAM, key_id="master", is_master=True)
        digest = hash_key(api_key)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            principal = cached[0]
        else:
            key = await self._keys.verify(api_key)
            principal = Principal(team=key.team, key_id=key.id) if key else None
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[digest] = (principal, now + self._ttl)
        if principal is None:
            raise AuthenticationFailed(f"Incorrect API key provided: {_redact(api_key)}.")
        return principal


def _redact(key: str) -> str:
    return key[:3] + "****" + key[-4:] if len(key) > 10 else "****"
