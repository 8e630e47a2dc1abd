"""Starting and stopping the two servers the Phoenix check needs, each in its own process group."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from gateway.demo.processes import stop

ROOT = Path(__file__).resolve().parents[2]


class CheckFailed(Exception):
    """Something could not be started or read back: the check cannot go on."""


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without settings that would redirect either server."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "PHOENIX_", "TOLLGATE_")) and k != "VIRTUAL_ENV"
    }
    env.update(extra)
    return env


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"    {line}" for line in text[-lines:])

    def stop(self) -> None:
        """SIGTERM the process group (the gateway flushes its spans on the way out), then SIGKILL."""
        stop(self.popen)


def spawn(name: str, argv: list[str], env: dict[str, str], workdir: Path) -> Proc:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop() reaches every child
        )  # fmt: skip
    return Proc(name, popen, log)


def wait_http_ok(proc: Proc, url: str, timeout_s: float) -> float:
    """Seconds until `url` answers 200; fails early if the process dies."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if proc.popen.poll() is not None:
            raise CheckFailed(f"{proc.name} exited with status {proc.popen.returncode}:\n{proc.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise CheckFailed(f"{proc.name} was not ready at {url} after {timeout_s:.0f} s:\n{proc.tail()}")
