"""A gateway killed with SIGKILL in any phase of the batch path resumes on restart: every
deferred request gets its answer, none is sent to the provider twice, each has one ledger row.

Phases: accepted (202s given, nothing batched yet: killed from outside), and from inside,
through the worker's crash points (`TOLLGATE_BATCH_CRASH_AT`), accumulated (jobs claimed by a
batch, nothing sent), submitted (the provider batch created, its id not yet written down),
polling (the batch seen running) and downloaded (results fetched, one job finished).
Two gateways on one Redis, all sending at once, never submit a request twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.deferred import defer, submissions, wait_answer
from tests.support.procs import Proc, gateways_on_redis, ledger_with, redis_db, run_gateway, run_sim, team_key

CONFIG = """
store: {store}
ledger: {{spool_dir: "{spool}"}}
stages:
  auth: {{cache_ttl_s: 0}}
  defer: {{window_s: {window}, tick_s: 0.1, poll_interval_s: 0.2, poll_max_s: 0.4, online_margin_s: 1, lease_ttl_s: 1}}
models:
  gpt-4o-mini:
    deployments: [{{provider: openai_compat, model: gpt-4o-mini, api_base: "{sim}/v1", api_key: k}}]
"""


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with run_sim(tmp_path_factory.mktemp("sim"), "--batch-delay-s", "1.0") as proc:
        yield proc


def _config(tmp_path: Path, sim: Proc, window: float = 0.3) -> str:
    store = f'{{backend: sqlite, path: "{tmp_path / "t.db"}"}}'
    return CONFIG.format(store=store, spool=tmp_path / "spool", sim=sim.url, window=window)


def _bodies(tag: str, n: int) -> list[dict[str, object]]:
    return [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{tag} report {i}"}]} for i in range(n)]


def _died(gw: Proc, timeout_s: float = 30.0) -> None:
    try:
        gw.process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the gateway never reached its crash point:\n{gw.logs()[-3000:]}")
    assert gw.process.returncode == -signal.SIGKILL


def _resume_and_check(tmp_path: Path, sim: Proc, key_team: str, job_ids: list[str]) -> None:
    """Restart on the same store and spool; every job answers once, sent once, one ledger row."""
    with run_gateway(tmp_path, _config(tmp_path, sim)) as again:
        key = team_key(again, key_team)
        for job_id in job_ids:
            status, headers, answer = wait_answer(again, key, job_id)
            assert status == 200, answer
            assert answer["object"] == "chat.completion"
            assert headers["x-tollgate-deferred"] == "batch"
        sent = submissions(sim)
        assert [sent.get(job_id) for job_id in job_ids] == [1] * len(job_ids)
        rows = ledger_with(again, job_ids)
        assert all(rows[job_id]["status"] == 200 and rows[job_id]["cost_usd"] != "0" for job_id in job_ids)


def test_killed_after_accepting_loses_nothing(tmp_path: Path, sim: Proc) -> None:
    with run_gateway(tmp_path, _config(tmp_path, sim, window=30)) as gw:
        key = team_key(gw, "nightly")
        job_ids = [defer(gw, key, body) for body in _bodies("accepted", 3)]
        os.killpg(gw.process.pid, signal.SIGKILL)
        _died(gw)
    assert not set(job_ids) & set(submissions(sim))
    _resume_and_check(tmp_path, sim, "nightly", job_ids)


@pytest.mark.parametrize("phase", ["accumulated", "submitted", "polling", "downloaded"])
def test_killed_in_a_phase_resumes_without_loss_or_repeat(tmp_path: Path, sim: Proc, phase: str) -> None:
    env = {"TOLLGATE_BATCH_CRASH_AT": phase}
    # The window outlasts the sending: the crash comes once all three are accepted.
    with run_gateway(tmp_path, _config(tmp_path, sim, window=1.5), env=env) as gw:
        key = team_key(gw, "nightly")
        job_ids = [defer(gw, key, body) for body in _bodies(phase, 3)]
        _died(gw)
    _resume_and_check(tmp_path, sim, "nightly", job_ids)


def test_two_gateways_on_one_redis_never_submit_a_request_twice(
    tmp_path: Path, sim: Proc, redis_url: str
) -> None:
    def config(store: str, spool: Path) -> str:
        return CONFIG.format(store=store, spool=spool, sim=sim.url, window=0.3)

    with gateways_on_redis(tmp_path, redis_url, redis_db(__name__), config) as (first, second):
        key = team_key(first, "shared")
        bodies = _bodies("pair", 40)
        with ThreadPoolExecutor(8) as pool:
            job_ids = list(pool.map(lambda i: defer((first, second)[i % 2], key, bodies[i]), range(len(bodies))))
        for i, job_id in enumerate(job_ids):
            # Either instance answers for any job: the state is in the shared store.
            status, _, answer = wait_answer((second, first)[i % 2], key, job_id)
            assert status == 200, answer
        sent = submissions(sim)
        assert {job_id: sent.get(job_id) for job_id in job_ids} == dict.fromkeys(job_ids, 1)
        rows = ledger_with(first, job_ids)
        assert len({rows[job_id]["request_id"] for job_id in job_ids}) == len(job_ids)
