"""Fixtures shared by every test package."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import gateway  # noqa: F401  (the offline environment, before any test module imports litellm)
from gateway.demo.processes import free_port

_REDIS_START_TIMEOUT_S = 10.0


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _alive(pid: int) -> bool:
    # The daemon is not our child, so once dead it stays a zombie until init reaps it
    # (seconds, on some machines); a zombie has already released its port.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _stop(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while _alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.02)


@contextlib.contextmanager
def running_redis(workdir: Path) -> Iterator[str]:
    """A throwaway redis-server on a free loopback port; yields its URL, stops it by pid."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run `make redis` (apt-get install -y redis-server)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    pidfile, logfile = workdir / "redis.pid", workdir / "redis.log"
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    command += ["--daemonize", "yes", "--pidfile", str(pidfile), "--logfile", str(logfile)]
    command += ["--dir", str(workdir)]
    subprocess.run(command, check=True, timeout=_REDIS_START_TIMEOUT_S)
    try:
        deadline = time.monotonic() + _REDIS_START_TIMEOUT_S
        while not (pidfile.exists() and _answers_ping(port)):
            if time.monotonic() > deadline:
                log = logfile.read_text()[-2000:] if logfile.exists() else "(no log)"
                pytest.fail(f"redis-server on port {port} did not answer PING:\n{log}")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        # The pidfile appears a moment after the daemon forks; wait for it so the server is stopped.
        deadline = time.monotonic() + _REDIS_START_TIMEOUT_S
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        if pidfile.exists():
            _stop(int(pidfile.read_text().strip()))


@pytest.fixture
def anyio_backend() -> str:
    """Every `@pytest.mark.anyio` test runs on asyncio."""
    return "asyncio"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real redis-server for the whole session; tests isolate themselves by key prefix."""
    with running_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url
