"""A simulated provider and a gateway in front of it, shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.procs import Proc, run_gateway, run_sim, team_key
from tests.support.recorder import Recorder, recording

# Every kind of upstream the gateway speaks: the OpenAI wire over HTTP (the fast path),
# the Anthropic wire through the litellm adapter, and the in-process simulator.
STANDARD_CONFIG = """
store: {{backend: sqlite, path: "{db}"}}
router: {{retries: 1, backoff_base_s: 0.01, backoff_max_s: 0.05}}
stages: {{auth: {{cache_ttl_s: 0}}}}
models:
  gpt-4o:
    deployments: [{{provider: openai_compat, model: gpt-4o, api_base: "{sim}/v1", api_key: k, timeout_s: 3}}]
  gpt-4o-mini:
    deployments: [{{provider: openai_compat, model: gpt-4o-mini, api_base: "{sim}/v1", api_key: k, timeout_s: 3}}]
  text-embedding-3-small:
    deployments: [{{provider: openai_compat, model: text-embedding-3-small, api_base: "{sim}/v1", api_key: k}}]
  claude-3-5-haiku:
    deployments: [{{provider: anthropic, model: claude-3-5-haiku-latest, api_base: "{sim}", api_key: k, timeout_s: 3}}]
  sim/*:
    deployments: [{{provider: sim, model: "*", timeout_s: 3}}]
"""


@pytest.fixture(scope="session")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with run_sim(tmp_path_factory.mktemp("sim")) as proc:
        yield proc


@pytest.fixture(scope="session")
def gateway(sim: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    work = tmp_path_factory.mktemp("gateway")
    with run_gateway(work, STANDARD_CONFIG.format(db=work / "t.db", sim=sim.url)) as proc:
        yield proc


@pytest.fixture(scope="session")
def api_key(gateway: Proc) -> str:
    return team_key(gateway, "e2e")


# A simulator recorded on its way (what really reached it), and one that always answers 500.

@pytest.fixture(scope="module")
def good(sim: Proc) -> Iterator[Recorder]:
    with recording(sim.url) as recorder:
        yield recorder


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorder]:
    with run_sim(tmp_path_factory.mktemp("sim-500"), "--fault", "500", "--fault-rate", "1") as failing:
        with recording(failing.url) as recorder:
            yield recorder
