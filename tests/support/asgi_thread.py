"""An ASGI app served by uvicorn in a thread on a free loopback port: a real HTTP server in-process."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

_START_TIMEOUT_S = 10.0


@contextlib.contextmanager
def serve_in_thread(app: Any, *, graceful_shutdown_s: int = 1) -> Iterator[str]:
    """Yields the base URL (no `/v1`); stops the server on exit."""
    # Port 0: the kernel picks a free port, read back once the socket is bound (no race).
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=graceful_shutdown_s,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="asgi-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the in-process HTTP server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=_START_TIMEOUT_S)
