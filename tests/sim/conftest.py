"""A real simulator server on a free loopback port, and official SDK clients pointed at it."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import anthropic
import openai
import pytest
import uvicorn

import gateway  # noqa: F401  (sets the offline environment before tiktoken loads)
from gateway.config import SimConfig
from gateway.sim.server import create_app

_START_TIMEOUT_S = 10.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@contextlib.contextmanager
def running_sim(
    settings: SimConfig | None = None, *, api_key: str | None = None, fault_seed: int = 0
) -> Iterator[str]:
    """Serve `create_app(...)` with uvicorn in a thread on a free port; yields the base URL."""
    app = create_app(settings, api_key=api_key, fault_seed=fault_seed)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="sim-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the simulator server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


StartSim = Callable[..., contextlib.AbstractContextManager[str]]


@pytest.fixture
def start_sim() -> StartSim:
    """For tests that need their own server (other settings): `with start_sim(SimConfig(...)) as url:`."""
    return running_sim


@pytest.fixture(scope="session")
def sim_url() -> Iterator[str]:
    with running_sim() as url:
        yield url


@pytest.fixture
def client(sim_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{sim_url}/v1", api_key="sk-test", max_retries=0, timeout=10) as sdk:
        yield sdk


@pytest.fixture
def claude(sim_url: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=sim_url, api_key="sk-ant-test", max_retries=0, timeout=10) as sdk:
        yield sdk
