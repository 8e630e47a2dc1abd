"""Real processes for end-to-end tests: the simulated provider and the gateway.

Each runs as `python -m gateway ...` in its own session so it can be stopped as a group;
its output goes to a log file that a failing test prints.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import orjson

from gateway.demo.processes import free_port, stop, wait_ready

# The databases of the session's Redis server that end-to-end modules keep to themselves, one
# each, so that nothing another module wrote is seen or counted (database 0 is shared by the
# suites that keep apart by key prefix). A module takes its number with `redis_db(__name__)`.
REDIS_DBS = {
    "test_many_instances": 7,
    "test_exact_cache": 9,
    "test_semantic_cache": 10,
    "test_policy_limits": 11,
    "test_policy_race": 12,
    "test_deferred_durability": 13,
}
assert len(set(REDIS_DBS.values())) == len(REDIS_DBS), "two modules share a Redis database"


@dataclass
class Proc:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    master_key: str = ""

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.contextmanager
def run_sim(workdir: Path, *args: str) -> Iterator[Proc]:
    port = free_port()
    log = workdir / f"sim-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "sim", "--port", str(port), *args],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{port}/health", proc, "simulated provider", log=log)
        yield Proc(f"http://127.0.0.1:{port}", proc, log)
    finally:
        stop(proc)


@contextlib.contextmanager
def run_gateway(workdir: Path, config: str, *, master_key: str = "tg-master-test", port: int | None = None,
                env: dict[str, str] | None = None) -> Iterator[Proc]:  # fmt: skip
    port = port or free_port()
    path = workdir / f"gateway-{port}.yaml"
    path.write_text(config)
    log = workdir / f"gateway-{port}.log"
    environ = {**os.environ, "TOLLGATE_MASTER_KEY": master_key, **(env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(path), "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=environ, start_new_session=True,
        )  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", proc, "gateway", log=log)
        yield Proc(f"http://127.0.0.1:{port}", proc, log, master_key)
    finally:
        stop(proc)


def redis_db(module: str) -> int:
    """The Redis database of the test module named `module` (its `__name__`)."""
    return REDIS_DBS[module.rsplit(".", 1)[-1]]


def redis_db_url(redis_url: str, db: int) -> str:
    """The URL of database `db` on the server at `redis_url`."""
    return f"{redis_url.rsplit('/', 1)[0]}/{db}"


@contextlib.contextmanager
def gateways_on_redis(
    workdir: Path, redis_url: str, db: int, config: Callable[[str, Path], str]
) -> Iterator[tuple[Proc, Proc]]:
    """Two gateway processes sharing one Redis database; `config(store, spool_dir)` gives each
    its YAML (each keeps its own ledger spool)."""
    store = f'{{backend: redis, url: "{redis_db_url(redis_url, db)}"}}'
    with (
        run_gateway(workdir, config(store, workdir / "spool-a")) as first,
        run_gateway(workdir, config(store, workdir / "spool-b")) as second,
    ):
        yield first, second


def http(method: str, url: str, *, body: Any = None, raw: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:  # fmt: skip
    """A plain HTTP call, for what an SDK would hide: exact status, headers and body."""
    data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
    request = urllib.request.Request(
        url, data=data, method=method, headers={"content-type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            payload = resp.read()
            status, hdrs = resp.status, {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as err:
        payload, status, hdrs = err.read(), err.code, {k.lower(): v for k, v in err.headers.items()}
    try:
        parsed = orjson.loads(payload)
    except orjson.JSONDecodeError:
        parsed = payload
    return status, hdrs, parsed


def admin(gw: Proc, method: str, path: str, body: Any = None) -> Any:
    status, _, parsed = http(
        method, gw.url + path, body=body, headers={"authorization": f"Bearer {gw.master_key}"}
    )
    assert status < 300, (status, parsed)
    return parsed


def team_key_with_id(gw: Proc, team: str) -> tuple[str, str]:
    """A new key of `team` (created if missing): (plaintext key, key id)."""
    teams = {t["id"] for t in admin(gw, "GET", "/admin/teams")["data"]}
    if team not in teams:
        admin(gw, "POST", "/admin/teams", {"id": team})
    made = admin(gw, "POST", "/admin/keys", {"team": team, "name": "test"})
    return str(made["key"]), str(made["id"])


def team_key(gw: Proc, team: str) -> str:
    """A new key of `team` (created if missing), in plaintext."""
    return team_key_with_id(gw, team)[0]


def sdk_client(gw: Proc, team: str | None = None) -> openai.OpenAI:
    """An openai client of `gw` with a new key of `team` (by default a team of its own), never retrying."""
    key = team_key(gw, team or f"team-{uuid.uuid4().hex[:8]}")
    return openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0, timeout=30)


def money(raw: Any) -> tuple[Decimal, Decimal, Decimal]:
    """A response's (cost, baseline, saved), in USD, from its `x-tollgate-*-usd` headers."""
    h = raw.headers
    return (
        Decimal(h["x-tollgate-cost-usd"]),
        Decimal(h["x-tollgate-baseline-usd"]),
        Decimal(h["x-tollgate-saved-usd"]),
    )


def ledger(gw: Proc) -> dict[str, dict[str, Any]]:
    """Every ledger row, by request id (paged, however long the ledger)."""
    rows: dict[str, dict[str, Any]] = {}
    after = 0
    while True:
        page = admin(gw, "GET", f"/admin/ledger?after={after}&limit=5000")["data"]
        rows.update({row["request_id"]: row for row in page})
        if len(page) < 5000:
            return rows
        after = page[-1]["seq"]


def ledger_with(gw: Proc, request_ids: list[str], timeout_s: float = 10.0) -> dict[str, dict[str, Any]]:
    """The ledger once it holds every one of `request_ids` (rows are written off the response path)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = ledger(gw)
        missing = set(request_ids) - set(rows)
        if not missing:
            return rows
        assert time.monotonic() < deadline, f"the ledger never got {len(missing)} rows: {sorted(missing)[:5]}"
        time.sleep(0.05)


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A request handler served on a loopback port from a thread; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, name="serving", daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
