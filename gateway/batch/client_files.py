"""The Files API's files, kept in the store and owned by the team that uploaded them.

Keys (under `batch:`): `file:<id>` the bytes, `filemeta:<id>` the File object's fields and
owner (a file exists while this does), `tfile:<team>:<newest-first time>:<id>` the team's
listing. A batch's output and error files are written here too, purpose `batch_output`.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import asdict, dataclass

import orjson

from gateway.errors import InvalidRequest, NotFound
from gateway.pipeline import Principal
from gateway.store.base import Store

FILE_PREFIX = "batch:file:"
META_PREFIX = "batch:filemeta:"
INDEX_PREFIX = "batch:tfile:"
# OpenAI's limit on one uploaded file.
MAX_FILE_BYTES = 200 * 1024 * 1024
UPLOAD_PURPOSES = ("batch",)
OUTPUT_PURPOSE = "batch_output"
# What OpenAI allows `expires_after.seconds` (an hour to 30 days), and how long a batch's
# output files are kept when the batch does not say.
MIN_EXPIRY_S, MAX_EXPIRY_S = 3600, 30 * 86400
OUTPUT_TTL_S = 30 * 86400


def team_of(principal: Principal | None) -> str:
    return principal.team if principal is not None else "anonymous"


def visible(owner: str, principal: Principal | None) -> bool:
    """A team sees its own files and batches; the master key (or a gateway without auth) all."""
    return principal is None or principal.is_master or principal.team == owner


def newest_first_key(prefix: str, team: str, created_at: float, object_id: str) -> str:
    """An index key that sorts a team's newest object first (the store scans in key order)."""
    return f"{prefix}{team}:{10**16 - int(created_at * 1e6):016d}:{object_id}"


def derived_file_id(batch_id: str, kind: str) -> str:
    """A batch's output (or error) file id: the same on every instance that finalizes it."""
    return "file-" + hashlib.sha256(f"{batch_id}:{kind}".encode()).hexdigest()[:24]


@dataclass(slots=True)
class ClientFile:
    id: str
    team: str
    filename: str
    purpose: str
    bytes: int
    created_at: float
    expires_at: float | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": int(self.created_at),
            "expires_at": None if self.expires_at is None else int(self.expires_at),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


class ClientFiles:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def add(
        self, team: str, filename: str, purpose: str, content: bytes, *,
        ttl_s: float | None = None, file_id: str | None = None,
    ) -> ClientFile:  # fmt: skip
        """Keep a file: its bytes first, then the record that makes it exist, then its listing.
        A file given its id (a batch's output) is written once: a second writer gets the first's."""
        if file_id is not None and (existing := await self.find(file_id)) is not None:
            return existing
        now = time.time()
        file = ClientFile(
            id=file_id or "file-" + secrets.token_hex(12), team=team, filename=filename,
            purpose=purpose, bytes=len(content), created_at=now,
            expires_at=None if ttl_s is None else now + ttl_s,
        )  # fmt: skip
        await self.store.set(FILE_PREFIX + file.id, content, ttl_s=ttl_s)
        await self.store.set(META_PREFIX + file.id, orjson.dumps(asdict(file)), ttl_s=ttl_s)
        await self.store.set(
            newest_first_key(INDEX_PREFIX, team, now, file.id), file.id.encode(), ttl_s=ttl_s
        )
        return file

    async def find(self, file_id: str) -> ClientFile | None:
        raw = await self.store.get(META_PREFIX + file_id)
        return None if raw is None else ClientFile(**orjson.loads(raw))

    async def get(self, file_id: str, principal: Principal | None) -> ClientFile:
        """The file, for its own team; anyone else is told it does not exist."""
        file = await self.find(file_id)
        if file is None or not visible(file.team, principal):
            raise NotFound(f"No such File object: {file_id}", param="file_id", code="file_not_found")
        return file

    async def content(self, file_id: str) -> bytes | None:
        return await self.store.get(FILE_PREFIX + file_id)

    async def delete(self, file: ClientFile, *, keep_content: bool = False) -> None:
        """Gone for the client; the bytes stay while a batch still reads its lines from them."""
        await self.store.delete(newest_first_key(INDEX_PREFIX, file.team, file.created_at, file.id))
        await self.store.delete(META_PREFIX + file.id)
        if not keep_content:
            await self.store.delete(FILE_PREFIX + file.id)

    async def drop_content(self, file_id: str) -> None:
        await self.store.delete(FILE_PREFIX + file_id)

    async def page(
        self, team: str, *, purpose: str | None, limit: int, after: str | None, oldest_first: bool
    ) -> tuple[list[ClientFile], bool]:
        """One page of the team's files, and whether more follow."""
        ids = [value.decode() for _, value in await self.store.scan(f"{INDEX_PREFIX}{team}:", limit=100_000)]
        if oldest_first:
            ids.reverse()
        files = [file for file_id in ids if (file := await self.find(file_id)) is not None]
        if purpose is not None:
            files = [file for file in files if file.purpose == purpose]
        start = 0
        if after:
            positions = [file.id for file in files]
            if after not in positions:
                raise NotFound(f"No such File object: {after}", param="after", code="file_not_found")
            start = positions.index(after) + 1
        return files[start : start + limit], start + limit < len(files)


def expiry_seconds(anchor: str | None, seconds: str | int | None, *, param: str) -> float | None:
    """An `expires_after` given as anchor + seconds: the seconds, checked as OpenAI checks them."""
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise InvalidRequest(
            f"Invalid value for '{param}.anchor': {anchor!r}. Supported values are: 'created_at'.",
            param=f"{param}.anchor",
            code="invalid_value",
        )
    try:
        value = int(seconds)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = 0
    if not MIN_EXPIRY_S <= value <= MAX_EXPIRY_S:
        raise InvalidRequest(
            f"Invalid '{param}.seconds': expected an integer between {MIN_EXPIRY_S} and {MAX_EXPIRY_S}, "
            f"got {seconds!r}.",
            param=f"{param}.seconds",
            code="invalid_value",
        )
    return float(value)
