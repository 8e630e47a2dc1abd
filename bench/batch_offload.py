"""The batch path under load: what accepting a deferred request costs the gateway, how long a
wave of them takes to come back from provider batches, what it saves, and whether the
gateway's memory stays flat across waves.

The simulated provider (its OpenAI Batches API ends each batch `--batch-delay-s` after it is
created) and the gateway (SQLite store, auth and policy on, as shipped) run as real
processes; waves of deferred chat requests (`x-tollgate-defer: 1h`) are sent concurrently
over aiohttp, then every answer is fetched from `GET /v1/deferred/{id}`.

    .venv/bin/python bench/batch_offload.py                      # 5 waves of 2,000
    .venv/bin/python bench/batch_offload.py --waves 2 --requests 500

Per wave: accept CPU-ms (the gateway's utime + stime while the wave was sent, per request:
it includes the worker's own ticks), accept latency p50 / p99, seconds from the first 202
until every answer is in, the gateway's RSS after the wave, and cost against baseline from
the ledger (`/v1/spend`). Ends with a RESULT line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from gateway.demo.processes import child_process, free_port, wait_ready

MASTER = "tg-master-batch-bench"
CONFIG = """
server: {{log_level: warning}}
store: {{backend: sqlite, path: "{db}"}}
stages:
  defer: {{window_s: 0.5, tick_s: 0.2, poll_interval_s: 0.5, poll_max_s: 1}}
models:
  gpt-4o-mini:
    deployments: [{{provider: openai_compat, model: gpt-4o-mini, api_base: "{sim}/v1", api_key: k}}]
"""


def _proc_stat(pid: int) -> tuple[float, float]:
    """(CPU seconds, RSS MB) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return cpu, rss


def _admin(base: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        base + path, data=None if body is None else orjson.dumps(body),
        headers={"authorization": f"Bearer {MASTER}", "content-type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=60) as resp:
        return orjson.loads(resp.read())


async def _wave(base: str, key: str, n: int, wave: int, concurrency: int) -> tuple[list[str], list[float]]:
    """Send n deferred requests; their job ids and accept latencies (s)."""
    headers = {"authorization": f"Bearer {key}", "x-tollgate-defer": "1h", "content-type": "application/json"}
    gate = asyncio.Semaphore(concurrency)
    ids: list[str] = []
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> None:
            body = {"model": "gpt-4o-mini", "max_tokens": 60,
                    "messages": [{"role": "user", "content": f"Nightly summary {wave}-{i}: what changed?"}]}  # fmt: skip
            async with gate:
                started = time.perf_counter()
                async with session.post(
                    f"{base}/v1/chat/completions", data=orjson.dumps(body), headers=headers
                ) as r:
                    payload = await r.read()
                    assert r.status == 202, (r.status, payload[:300])
                latencies.append(time.perf_counter() - started)
                ids.append(orjson.loads(payload)["id"])

        await asyncio.gather(*(one(i) for i in range(n)))
    return ids, latencies


async def _collect(base: str, key: str, ids: list[str], timeout_s: float) -> int:
    """Fetch every answer; how many came back 200."""
    headers = {"authorization": f"Bearer {key}"}
    pending = set(ids)
    ok = 0
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        gate = asyncio.Semaphore(32)

        async def check(job_id: str) -> None:
            nonlocal ok
            async with gate, session.get(f"{base}/v1/deferred/{job_id}", headers=headers) as r:
                await r.read()
                if r.status != 202:
                    pending.discard(job_id)
                    ok += r.status == 200

        while pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(pending)} deferred requests never answered")
            await asyncio.gather(*(check(job_id) for job_id in list(pending)))
            if pending:
                await asyncio.sleep(0.5)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--waves", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000, help="deferred requests per wave")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch-delay-s", type=float, default=2.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tollgate-batch-bench-") as tmp:
        work = Path(tmp)
        sim_port, gw_port = free_port(), free_port()
        sim, base = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{gw_port}"
        (work / "gw.yaml").write_text(CONFIG.format(db=work / "t.db", sim=sim))
        env = {**os.environ, "TOLLGATE_MASTER_KEY": MASTER}
        exe = [sys.executable, "-m", "gateway"]
        with (
            child_process([*exe, "sim", "--port", str(sim_port), "--batch-delay-s", str(args.batch_delay_s)],
                     env, work / "sim.log") as sim_proc,
            child_process([*exe, "serve", "--config", str(work / "gw.yaml"), "--port", str(gw_port)],
                     env, work / "gw.log") as gw_proc,
        ):  # fmt: skip
            wait_ready(f"{sim}/health", sim_proc, "simulated provider")
            wait_ready(f"{base}/readyz", gw_proc, "gateway")
            _admin(base, "/admin/teams", {"id": "nightly"})
            key = _admin(base, "/admin/keys", {"team": "nightly", "name": "bench"})["key"]
            rows = []
            for wave in range(args.waves):
                cpu0, _ = _proc_stat(gw_proc.pid)
                started = time.perf_counter()
                ids, latencies = asyncio.run(_wave(base, key, args.requests, wave, args.concurrency))
                cpu1, _ = _proc_stat(gw_proc.pid)
                ok = asyncio.run(_collect(base, key, ids, timeout_s=120 + 10 * args.batch_delay_s))
                done_s = time.perf_counter() - started
                _, rss = _proc_stat(gw_proc.pid)
                latencies.sort()
                rows.append({
                    "wave": wave + 1, "requests": len(ids), "answered": ok,
                    "accept_cpu_ms": (cpu1 - cpu0) * 1000 / len(ids),
                    "p50_ms": statistics.median(latencies) * 1000,
                    "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
                    "done_s": done_s, "rss_mb": rss,
                })  # fmt: skip
            time.sleep(0.5)  # the last ledger rows are written off the response path
            spend = _admin(base, "/v1/spend?group_by=team")["data"][0]
    cost, baseline = Decimal(spend["cost_usd"]), Decimal(spend["baseline_usd"])
    print(f"{'wave':>4} {'reqs':>6} {'answered':>8} {'accept CPU-ms':>13} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'all back s':>10} {'gw RSS MB':>9}")  # fmt: skip
    for r in rows:
        print(f"{r['wave']:>4} {r['requests']:>6} {r['answered']:>8} {r['accept_cpu_ms']:>13.3f} {r['p50_ms']:>7.2f} "
              f"{r['p99_ms']:>7.2f} {r['done_s']:>10.2f} {r['rss_mb']:>9.1f}")  # fmt: skip
    print(
        f"\nledger: {spend['requests']} requests, cost ${cost:.6f}, baseline ${baseline:.6f}, "
        f"saved {(baseline - cost) / baseline:.1%}"
    )
    accept = statistics.median(r["accept_cpu_ms"] for r in rows)
    growth = rows[-1]["rss_mb"] - rows[0]["rss_mb"]
    print(
        f"RESULT accept_cpu_ms={accept:.3f} accept_p99_ms={max(r['p99_ms'] for r in rows):.2f} "
        f"all_back_s={statistics.median(r['done_s'] for r in rows):.2f} saved_share={(baseline - cost) / baseline:.3f} "
        f"rss_first_mb={rows[0]['rss_mb']:.1f} rss_last_mb={rows[-1]['rss_mb']:.1f} rss_growth_mb={growth:.1f}"
    )
    return 0 if all(r["answered"] == r["requests"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
