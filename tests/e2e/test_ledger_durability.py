"""A gateway killed with SIGKILL loses no ledger row: the next one on the same database
replays the dead process's spool, and every answered request is in the ledger exactly once.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from openai import OpenAI

from tests.support.procs import admin, run_gateway, team_key

pytestmark = pytest.mark.e2e

# A long flush interval, so the kill lands while the rows are still waiting for the timer.
CONFIG = """
store: {{backend: sqlite, path: "{db}"}}
ledger: {{flush_interval_s: 5}}
stages: {{auth: {{cache_ttl_s: 0}}}}
models:
  sim/*:
    deployments: [{{provider: sim, model: "*", timeout_s: 3}}]
"""
REQUESTS = 30


def _unstored_part(spool: Path) -> bytes:
    """The bytes of a spool after its header's stored offset: rows not yet in the store."""
    data = spool.read_bytes()
    header = data.split(b"\n", 1)[0]
    return data[int(header.rsplit(b"=", 1)[1]) :]


def test_rows_of_a_killed_gateway_are_replayed_by_the_next(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    config = CONFIG.format(db=db)
    sent: list[str] = []
    with run_gateway(tmp_path, config) as first:
        key = team_key(first, "durable")
        with OpenAI(base_url=first.v1, api_key=key, max_retries=0, timeout=30.0) as client:
            for n in range(REQUESTS):
                raw = client.chat.completions.with_raw_response.create(
                    model="sim/gpt-4o-mini", messages=[{"role": "user", "content": f"question {n}"}]
                )
                assert raw.parse().choices[0].message.content
                sent.append(raw.headers["x-request-id"])
        first.process.kill()
        first.process.wait()

    spools = sorted(Path(f"{db}-spool").glob("ledger-*.spool"))
    assert len(spools) == 1, spools
    # The last answer's row had not reached the database: only the spool can bring it back.
    assert sent[-1].encode() in _unstored_part(spools[0])

    with run_gateway(tmp_path, config) as second:
        rows = admin(second, "GET", "/admin/ledger")["data"]
    ids = [row["request_id"] for row in rows]
    assert sorted(ids) == sorted(sent)
    assert {row["team"] for row in rows} == {"durable"}
    # The orphan was replayed and deleted; the second gateway stopped cleanly and removed its own.
    assert list(Path(f"{db}-spool").iterdir()) == []
