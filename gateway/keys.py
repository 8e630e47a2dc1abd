"""Teams and virtual API keys, kept in the Store.

A key is shown once, at creation; only its SHA-256 is stored, so a leaked database leaks
no usable key. Revoking a team revokes every key of it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from gateway.errors import InvalidRequest, NotFound
from gateway.store.base import Store

KEY_PREFIX = "tg-"
_TEAM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Team:
    id: str
    created_at: float
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    team: str
    name: str
    created_at: float
    # The first characters of the key, so a person can tell their keys apart.
    preview: str
    revoked: bool = False


class KeyRing:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def create_team(self, team_id: str) -> Team:
        if not isinstance(team_id, str) or not _TEAM_ID.match(team_id):
            raise InvalidRequest(
                "Invalid 'id': a team id is 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit.",
                param="id",
            )
        team = Team(id=team_id, created_at=time.time())
        if not await self._store.set_if_absent(f"team:{team_id}", orjson.dumps(asdict(team))):
            existing = await self.get_team(team_id)
            if existing is not None and not existing.revoked:
                raise InvalidRequest(f"Team '{team_id}' already exists.", param="id", code="already_exists")
            await self._store.set(f"team:{team_id}", orjson.dumps(asdict(team)))
        return team

    async def get_team(self, team_id: str) -> Team | None:
        raw = await self._store.get(f"team:{team_id}")
        return Team(**orjson.loads(raw)) if raw else None

    async def list_teams(self) -> list[Team]:
        return [Team(**orjson.loads(v)) for _, v in await self._store.scan("team:", limit=100_000)]

    async def revoke_team(self, team_id: str) -> Team:
        team = await self.get_team(team_id)
        if team is None:
            raise NotFound(f"No team '{team_id}'.", param="team")
        # Its keys first: a team created again under this id is a new team, and must not
        # bring the old team's keys back to life.
        for key in await self.list_keys(team_id):
            if not key.revoked:
                await self.revoke_key(key.id)
        revoked = Team(id=team.id, created_at=team.created_at, revoked=True)
        await self._store.set(f"team:{team_id}", orjson.dumps(asdict(revoked)))
        return revoked

    async def create_key(self, team_id: str, name: str = "") -> tuple[str, ApiKey]:
        """Returns (plaintext, record). The plaintext is never stored and cannot be shown again."""
        team = await self.get_team(team_id)
        if team is None or team.revoked:
            raise NotFound(f"No team '{team_id}'; create it first.", param="team")
        plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
        digest = hash_key(plaintext)
        record = ApiKey(
            id="key_" + digest[:16], team=team_id, name=name, created_at=time.time(), preview=plaintext[:7] + "..."
        )
        await self._store.set(f"key:{digest}", orjson.dumps(asdict(record)))
        await self._store.set(f"keyid:{record.id}", digest.encode())
        return plaintext, record

    async def list_keys(self, team_id: str | None = None) -> list[ApiKey]:
        keys = [ApiKey(**orjson.loads(v)) for _, v in await self._store.scan("key:", limit=100_000)]
        return [k for k in keys if team_id is None or k.team == team_id]

    async def revoke_key(self, key_id: str) -> ApiKey:
        digest = await self._store.get(f"keyid:{key_id}")
        raw = await self._store.get(f"key:{digest.decode()}") if digest else None
        if digest is None or raw is None:
            raise NotFound(f"No API key '{key_id}'.", param="key_id")
        fields: dict[str, Any] = orjson.loads(raw)
        fields["revoked"] = True
        await self._store.set(f"key:{digest.decode()}", orjson.dumps(fields))
        return ApiKey(**fields)

    async def verify(self, plaintext: str) -> ApiKey | None:
        """The live key for this plaintext, or None if unknown, revoked, or its team is revoked."""
        raw = await self._store.get(f"key:{hash_key(plaintext)}")
        if raw is None:
            return None
        key = ApiKey(**orjson.loads(raw))
        if key.revoked:
            return None
        team = await self.get_team(key.team)
        if team is None or team.revoked:
            return None
        return key
