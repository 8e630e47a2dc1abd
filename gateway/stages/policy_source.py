"""Where the policies come from: a file, re-read when it changes, and teams set through the
admin API, kept in the store so every instance sees them.

A team set through the API replaces that team's entry in the file. Both are checked at most
every `reload_interval_s`, so a change reaches every instance within that time with no
restart; a file that stops parsing is logged and the last good policies stay in force.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from gateway.store.base import Store, StoreUnavailable
from policies import Policies, PolicyError, load_policies
from policies.loading import read_policy_document

log = logging.getLogger("tollgate.policy")

TEAM_PREFIX = "policy-team:"


class PolicySource:
    def __init__(self, store: Store, file: str | None, *, reload_interval_s: float) -> None:
        self._store = store
        self._file = Path(file) if file else None
        self._interval = reload_interval_s
        self._checked_at = float("-inf")
        self._file_stamp: tuple[float, int] | None = None
        self._file_data: dict[str, Any] = {}
        self._overrides: dict[str, Any] = {}
        self._policies = Policies()
        self._lock = asyncio.Lock()

    async def current(self) -> Policies:
        """The policies in force; re-read at most every reload interval."""
        if time.monotonic() - self._checked_at < self._interval:
            return self._policies
        async with self._lock:
            if time.monotonic() - self._checked_at >= self._interval:
                await self.reload()
        return self._policies

    async def reload(self) -> Policies:
        started = time.monotonic()
        changed = self._read_file()
        try:
            overrides = {
                key[len(TEAM_PREFIX) :]: orjson.loads(value)
                for key, value in await self._store.scan(TEAM_PREFIX, limit=100_000)
            }
        except StoreUnavailable as err:
            log.warning(
                "policies in the store could not be read; keeping the last ones", extra={"error": str(err)}
            )
            overrides = self._overrides
        if changed or overrides != self._overrides:
            data = {**self._file_data, "teams": {**(self._file_data.get("teams") or {}), **overrides}}
            try:
                self._policies = load_policies(data)
                self._overrides = overrides
                log.info("policies loaded", extra={"teams": sorted(self._policies.teams)})
            except PolicyError as err:
                log.error("policies do not load; keeping the last good ones", extra={"error": str(err)})
        # Stamped once loaded: until then, requests wait on the lock rather than pass unchecked.
        self._checked_at = started
        return self._policies

    def _read_file(self) -> bool:
        if self._file is None:
            return False
        try:
            stat = self._file.stat()
        except OSError as err:
            log.error(
                "policy file unreadable; keeping the last good policies",
                extra={"path": str(self._file), "error": err.strerror},
            )
            return False
        stamp = (stat.st_mtime, stat.st_size)
        if stamp == self._file_stamp:
            return False
        self._file_stamp = stamp
        try:
            self._file_data = read_policy_document(self._file)
        except PolicyError as err:
            log.error(
                "policy file does not parse; keeping the last good policies",
                extra={"path": str(self._file), "error": str(err)},
            )
            return False
        return True

    # --- the admin API's side ------------------------------------------------------------
    # What the last `reload` read, so a report needs no second read of the file or the store.

    @property
    def overrides(self) -> Mapping[str, Mapping[str, Any]]:
        """Team → policy document, for every team whose policy was set through the admin API."""
        return self._overrides

    @property
    def file_teams(self) -> Mapping[str, Mapping[str, Any]]:
        """Team → policy document as written in the policy file."""
        teams = self._file_data.get("teams")
        if not isinstance(teams, Mapping):
            return {}
        return {team: entry for team, entry in teams.items() if isinstance(entry, Mapping)}

    async def set_team(self, team: str, document: Mapping[str, Any]) -> None:
        """Validate and store a team's policy; raises PolicyError naming what is wrong."""
        load_policies({"teams": {team: document}})
        await self._store.set(TEAM_PREFIX + team, orjson.dumps(document))
        self._checked_at = float("-inf")

    async def delete_team(self, team: str) -> bool:
        removed = await self._store.delete(TEAM_PREFIX + team)
        self._checked_at = float("-inf")
        return removed


def file_from_env(configured: str | None) -> str | None:
    return configured or os.environ.get("TOLLGATE_POLICIES") or None
