"""A real simulator server on a free loopback port, and official SDK clients pointed at it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import anthropic
import openai
import pytest

import gateway  # noqa: F401  (sets the offline environment before tiktoken loads)
from gateway.config import SimConfig
from gateway.sim.server import create_app
from tests.support.asgi_thread import serve_in_thread


@contextlib.contextmanager
def running_sim(
    settings: SimConfig | None = None, *, api_key: str | None = None, fault_seed: int = 0
) -> Iterator[str]:
    """Serve `create_app(...)` with uvicorn in a thread on a free port; yields the base URL."""
    with serve_in_thread(create_app(settings, api_key=api_key, fault_seed=fault_seed)) as url:
        yield url


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
