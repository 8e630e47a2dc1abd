"""The ledger: one row per request, written off the response path, and never lost.

Rows wait in memory and a timer appends them to the store's `ledger` log in batches, so a
slow disk or a Redis hiccup never delays a response. Memory alone would lose them to a
killed process or a long store outage, so `submit` also appends each row, as one JSON
line, to this process's spool file with a single unbuffered `os.write`. There is no fsync:
the kernel's page cache outlives a killed process, so only a machine crash (power loss,
kernel panic) can lose rows, those of the last seconds before it.

The spool protocol:
- One file per live process, `ledger-<pid>-<random>.spool`, flocked for its whole life:
  a file another process can flock belongs to a dead process (an orphan).
- Its first line is a fixed-width header, `#tollgate-ledger-spool stored=<offset>`: every
  row before that byte offset is in the store. It is rewritten in place after each stored
  batch; once everything is stored and the file has grown, it is truncated.
- `start()` replays orphans from their offset into the store, then deletes them. The
  directory must be local: flock over NFS is not to be trusted.
- Delivery is at least once. A row is stored twice when a process dies between a batch's
  commit and the header rewrite after it (microseconds), or when a store write whose reply
  was lost is retried. `rows()` therefore shows each request_id once, the first copy; it
  looks back `_DEDUPE_LOOKBACK` rows, so a copy stored further from its original (other
  gateways wrote that much in between) would still show twice.

A failed store write is retried forever with capped exponential backoff. While the store is
down, rows wait in memory up to `max_pending_rows`; past that, memory lets go of them and
the spool file is their only record until the store is back, when they are read back from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from gateway.store.base import Store, StoreUnavailable

if TYPE_CHECKING:
    from gateway.config import Config

log = logging.getLogger("tollgate.ledger")
LEDGER_LOG = "ledger"
_BATCH = 256
_CLOSE_TIMEOUT_S = 10.0
# A duplicate is a replayed or retried batch, stored soon after its original: a page is also
# checked against this many rows before it, so a copy just past a page boundary stays hidden.
_DEDUPE_LOOKBACK = 1024

_HEADER_PREFIX = b"#tollgate-ledger-spool stored="
_HEADER_DIGITS = 16
_HEADER_LEN = len(_HEADER_PREFIX) + _HEADER_DIGITS + 1
# Truncating costs a few system calls; doing it only past this size keeps it rare.
_TRUNCATE_AT_BYTES = 1 << 20
_READ_CHUNK = 1 << 18
# A spool is created under a hidden name and renamed once flocked, so no scan can mistake it
# for an orphan. A hidden file this old was left by a process that died in between (no rows).
_STALE_TMP_S = 60.0


def spool_dir_for(config: Config) -> Path | None:
    """The configured spool directory, or the default beside the store; None: no spool."""
    if not config.ledger.spool or config.store.backend == "memory":
        return None
    if config.ledger.spool_dir is not None:
        return Path(config.ledger.spool_dir)
    if config.store.backend == "sqlite":
        return Path(f"{config.store.path}-spool")
    return Path("tollgate-spool")


def _header(stored: int) -> bytes:
    return _HEADER_PREFIX + str(stored).zfill(_HEADER_DIGITS).encode() + b"\n"


def _parse_header(data: bytes) -> int:
    """The stored offset, or 0 for a missing or torn header: then the whole file is read and
    the header line, not being JSON, is skipped."""
    digits = data[len(_HEADER_PREFIX) : -1]
    if (
        len(data) == _HEADER_LEN
        and data.startswith(_HEADER_PREFIX)
        and data.endswith(b"\n")
        and digits.isdigit()
    ):
        return int(digits)
    return 0


def _is_row(line: bytes, path: Path) -> bool:
    try:
        if isinstance(orjson.loads(line), dict):
            return True
    except orjson.JSONDecodeError:
        pass
    if not line.startswith(b"#"):
        log.warning("skipping an unreadable ledger spool line", extra={"path": str(path), "line": line[:200]})
    return False


class _Spool:
    """One spool file: JSON lines behind a header that names how far they are stored."""

    def __init__(self, path: Path, fd: int, append_fd: int | None, *, size: int, stored: int) -> None:
        self.path = path
        self._fd = fd  # holds the flock; reads and header rewrites
        # O_APPEND, rows only: Linux appends a pwrite on such an fd, so the header needs the other.
        self._append_fd = append_fd
        self.size = size  # bytes of complete lines (own spool) or of the whole file (orphan)
        self.stored = stored
        self.writable = append_fd is not None

    @classmethod
    def create(cls, directory: Path) -> _Spool:
        name = f"ledger-{os.getpid()}-{secrets.token_hex(6)}.spool"
        hidden = directory / f".{name}.tmp"
        fd = os.open(hidden, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        append_fd: int | None = None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            append_fd = os.open(hidden, os.O_WRONLY | os.O_APPEND)
            os.write(append_fd, _header(_HEADER_LEN))
            os.rename(hidden, directory / name)
        except BaseException:
            for opened in (fd, append_fd):
                if opened is not None:
                    os.close(opened)
            hidden.unlink(missing_ok=True)
            raise
        return cls(directory / name, fd, append_fd, size=_HEADER_LEN, stored=_HEADER_LEN)

    @classmethod
    def claim(cls, path: Path) -> _Spool | None:
        """Lock a dead process's spool for replay; None when its process lives or it is gone."""
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        status = os.fstat(fd)
        # Another process may have replayed and deleted it between our open and our lock.
        if status.st_nlink == 0:
            os.close(fd)
            return None
        stored = _parse_header(os.pread(fd, _HEADER_LEN, 0))
        return cls(path, fd, None, size=status.st_size, stored=min(stored, status.st_size))

    def append(self, line: bytes) -> bool:
        """Write one whole line; False when it may not be in the file (memory must keep it)."""
        if not self.writable or self._append_fd is None:
            return False
        error: OSError | None = None
        try:
            written = os.write(self._append_fd, line)
        except OSError as err:
            written, error = 0, err
        if written == len(line):
            self.size += written
            return True
        # A partial line may now end the file; nothing is written after it until `reset`.
        self.writable = False
        log.error(
            "ledger spool write failed; rows wait in memory only until the spool recovers",
            extra={
                "path": str(self.path),
                "error": str(error) if error else f"short write {written}/{len(line)}",
            },
        )
        return False

    def read_rows(self, max_rows: int) -> tuple[list[bytes], int]:
        """Up to max_rows complete rows after `stored`, and the offset just past them.

        The offset stays at `stored` only when no complete line is left: at the end, or
        before a torn last line (a write cut short when its process was killed).
        """
        start, end = self.stored, self.size
        chunk = _READ_CHUNK
        while start < end:
            data = os.pread(self._fd, min(chunk, end - start), start)
            rows: list[bytes] = []
            pos = 0
            while len(rows) < max_rows:
                newline = data.find(b"\n", pos)
                if newline < 0:
                    break
                line, pos = data[pos:newline], newline + 1
                if _is_row(line, self.path):
                    rows.append(line)
            if pos or not data or len(data) >= end - start:
                return rows, start + pos
            chunk *= 2  # one line longer than the chunk
        return [], start

    def mark_stored(self, offset: int) -> None:
        self.stored = offset
        try:
            os.pwrite(self._fd, _header(offset), 0)
        except OSError as err:
            # Only a restart reads the header: a stale one replays rows twice, and reads dedupe.
            log.warning("ledger spool header not updated", extra={"path": str(self.path), "error": str(err)})

    def reset(self) -> None:
        """Empty the file once every row in it is stored; an empty file replays nothing."""
        if self._append_fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            os.write(self._append_fd, _header(_HEADER_LEN))
        except OSError as err:
            log.warning("ledger spool not truncated", extra={"path": str(self.path), "error": str(err)})
            self.writable = False
            return
        self.size = self.stored = _HEADER_LEN
        self.writable = True

    def remove(self) -> None:
        # Deleted before the lock is released, so no other process can claim it in between.
        self.path.unlink(missing_ok=True)
        self.close()

    def close(self) -> None:
        for fd in (self._append_fd, self._fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._append_fd = None
        self.writable = False


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def _claim_orphans(directory: Path) -> list[_Spool]:
    """Spool files that no live process holds, oldest first, each now locked by this process."""
    now = time.time()
    for hidden in directory.glob(".ledger-*.spool.tmp"):
        if now - _mtime(hidden) > _STALE_TMP_S and (stale := _Spool.claim(hidden)) is not None:
            stale.remove()
    paths = sorted(directory.glob("ledger-*.spool"), key=lambda path: (_mtime(path), path.name))
    return [spool for path in paths if (spool := _Spool.claim(path)) is not None]


class Ledger:
    """Rows are collected in memory and written every `flush_interval_s`, many per round trip.

    Waking a writer task for every request would cost more than the row itself; a timer
    that drains whatever has gathered costs the same at 1 or 10,000 requests a second.
    Without a `spool_dir` (the memory store, or the spool turned off) memory is the only
    record: nothing survives the process, and a long outage keeps every row in memory.
    """

    def __init__(
        self,
        store: Store,
        *,
        spool_dir: Path | None = None,
        flush_interval_s: float = 0.05,
        max_pending_rows: int = 50_000,
        retry_base_s: float = 0.2,
        retry_max_s: float = 5.0,
    ) -> None:
        self._store = store
        self._spool_dir = spool_dir
        self._interval = flush_interval_s
        self._max_pending = max_pending_rows
        self._retry_base_s = retry_base_s
        self._retry_max_s = retry_max_s
        self._pending: list[bytes] = []
        self._spool: _Spool | None = None
        self._orphans: list[_Spool] = []
        # True while rows from `stored` on live only in the spool file; read back from there.
        self._spilled = False
        # Counts spills, so a write in flight can tell that memory let go of its batch meanwhile.
        self._spills = 0
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def spool_path(self) -> Path | None:
        return None if self._spool is None else self._spool.path

    @property
    def pending_in_memory(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        """Replay what dead processes left in the spool directory, open this process's own
        spool, and start the timer. If the store is down, the replay goes on in the background."""
        if self._spool_dir is not None:
            self._spool_dir.mkdir(parents=True, exist_ok=True)
            self._orphans = _claim_orphans(self._spool_dir)
            try:
                try:
                    await self.flush()
                except StoreUnavailable as err:
                    log.warning("orphaned ledger spools wait for the store", extra={"error": str(err)})
                self._spool = _Spool.create(self._spool_dir)
            except BaseException:
                self._release_orphans()
                raise
            for row in self._pending:  # submitted before start: the spool must hold them too
                self._spool.append(row + b"\n")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ledger-writer")

    def submit(self, row: Mapping[str, Any]) -> None:
        line = orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)
        spool = self._spool
        if spool is not None and spool.append(line):
            if self._spilled:
                return  # read back from the file, after the rows spilled before it
            # The slice is an exact-size copy: orjson's result keeps a multi-KiB allocation
            # behind a short row, which adds up across the rows waiting for the next write.
            self._pending.append(line[:-1])
            if len(self._pending) > self._max_pending:
                self._spill()
            return
        self._pending.append(line[:-1])

    def _spill(self) -> None:
        # Every pending row is in the spool from `stored` on (its writes all succeeded).
        log.warning(
            "ledger backlog too large for memory; it waits in the spool file until the store is back",
            extra={"rows": len(self._pending)},
        )
        self._pending = []
        self._spilled = True
        self._spills += 1

    async def flush(self) -> None:
        """Write everything submitted so far, oldest first (orphans, spilled rows, memory).

        Raises StoreUnavailable when the store fails; nothing is lost, and the next flush
        goes on from the first row not yet stored.
        """
        async with self._lock:
            while self._orphans:
                await self._replay(self._orphans[0])
                self._orphans.pop(0).remove()
            spool = self._spool
            while True:
                if self._spilled and spool is not None:
                    rows, end = spool.read_rows(_BATCH)
                    if end == spool.stored:
                        self._spilled = False  # caught up: new rows go to memory again
                        continue
                    if rows:
                        await self._store.append_many(LEDGER_LOG, rows)
                    spool.mark_stored(end)
                elif self._pending:
                    batch, spills = self._pending[:_BATCH], self._spills
                    await self._store.append_many(LEDGER_LOG, batch)
                    if spool is not None:
                        # Pending rows follow `stored` in the file, except those memory kept
                        # after a failed spool write: they are past `size`, hence the cap.
                        written = sum(len(row) + 1 for row in batch)
                        spool.mark_stored(min(spool.stored + written, spool.size))
                    if spills == self._spills:
                        # Removed only once written: rows submitted meanwhile came after it.
                        del self._pending[: len(batch)]
                else:
                    break
            if spool is not None and spool.stored >= spool.size:
                if spool.size >= _TRUNCATE_AT_BYTES or not spool.writable:
                    spool.reset()

    async def _replay(self, spool: _Spool) -> None:
        replayed = 0
        while True:
            rows, end = spool.read_rows(_BATCH)
            if end == spool.stored:
                break
            if rows:
                await self._store.append_many(LEDGER_LOG, rows)
                replayed += len(rows)
            spool.mark_stored(end)
        if spool.stored < spool.size:
            log.warning("ignoring the torn last line of a ledger spool", extra={"path": str(spool.path)})
        log.info("replayed an orphaned ledger spool", extra={"path": str(spool.path), "rows": replayed})

    def _has_work(self) -> bool:
        return bool(self._pending or self._spilled or self._orphans)

    async def _run(self) -> None:
        failures = 0
        while True:
            delay = self._interval
            if failures:
                delay = min(self._retry_max_s, self._retry_base_s * 2 ** min(failures - 1, 30))
            await asyncio.sleep(delay)
            if not self._has_work():
                continue
            try:
                await self.flush()
            except StoreUnavailable as err:
                failures += 1
                log.warning(
                    "ledger write failed; rows kept, retrying",
                    extra={"error": str(err), "failures": failures, "pending_rows": len(self._pending)},
                )
                continue
            except Exception:
                # Whatever broke, the timer must live on: it is the only thing writing rows.
                failures += 1
                log.exception("ledger write failed unexpectedly; rows kept, retrying")
                continue
            if failures:
                log.info("ledger writes resumed", extra={"failures": failures})
                failures = 0

    async def rows(self, *, after: int = 0, limit: int = 10_000) -> list[dict[str, Any]]:
        """Stored rows with seq > after, oldest first, each request_id once (its first copy).

        A page holds `limit` distinct rows unless the log ends first, so a short page means
        the end. Duplicates are dropped within the page and against the rows just before it.
        """
        await self.flush()
        seen: set[Any] = set()
        if after > 0:
            start = max(0, after - _DEDUPE_LOOKBACK)
            for _, raw in await self._store.read_log(LEDGER_LOG, after=start, limit=after - start):
                seen.add(orjson.loads(raw).get("request_id"))
        page: list[dict[str, Any]] = []
        cursor = after
        while len(page) < limit:
            records = await self._store.read_log(LEDGER_LOG, after=cursor, limit=limit - len(page))
            if not records:
                break
            for seq, raw in records:
                row = orjson.loads(raw)
                request_id = row.get("request_id")
                if request_id is not None:
                    if request_id in seen:
                        continue
                    seen.add(request_id)
                page.append({"seq": seq, **row})
            cursor = records[-1][0]
        return page

    async def aclose(self) -> None:
        """Store everything and delete this process's spool; if the store is down, the spool
        stays for the next start to replay."""
        if self._task is not None:
            # Let a write in flight finish before stopping the timer, so no batch is cut in half.
            async with self._lock:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        error = ""
        try:
            await asyncio.wait_for(self.flush(), timeout=_CLOSE_TIMEOUT_S)
        except (StoreUnavailable, TimeoutError) as err:
            error = str(err) or "timed out"
        except Exception as err:
            log.exception("ledger flush failed at shutdown")
            error = repr(err)
        spool, self._spool = self._spool, None
        memory_only = spool is None or not spool.writable
        if spool is not None and not error:
            spool.remove()
        elif spool is not None:
            log.warning(
                "ledger rows not stored at shutdown stay in the spool",
                extra={"path": str(spool.path), "error": error},
            )
            spool.close()
        if error and self._pending and memory_only:
            log.error(
                "ledger rows held only in memory are lost at shutdown",
                extra={"rows": len(self._pending), "error": error},
            )
        self._release_orphans()

    def _release_orphans(self) -> None:
        for orphan in self._orphans:
            orphan.close()  # unlocked and left for the next start
        self._orphans = []
