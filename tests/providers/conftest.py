"""The simulated provider's HTTP server on a loopback port: a real upstream for provider tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.sim.server import create_app
from tests.support.asgi_thread import serve_in_thread


@pytest.fixture(scope="session")
def sim_url() -> Iterator[str]:
    """Base URL (no `/v1`) of one simulator for the session, served by uvicorn in a thread."""
    # A paced stream whose client left ends at its next write (seconds); shutdown waits for it.
    with serve_in_thread(create_app(), graceful_shutdown_s=5) as url:
        yield url
