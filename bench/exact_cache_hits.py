"""What an exact-cache hit costs the gateway: CPU-ms per hit, through the whole gateway.

A gateway process (pinned to CPU 0) serves `sim/gpt-4o` in process; wrk (on CPU 1) repeats
one deterministic request, so after the first every request is a hit. The gateway's own CPU
time (utime + stime from /proc) over a run, divided by the requests wrk completed, is the
figure; the answer is ~600 characters, as a short chat answer is.

    .venv/bin/python bench/exact_cache_hits.py                 # sqlite + auth + policy, as shipped
    .venv/bin/python bench/exact_cache_hits.py --store memory --no-auth

Prints one table row per (mode, concurrency).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WRK_SCRIPT = ROOT.parent / "shared" / "bench" / "wrk_post.lua"
MASTER = "tg-master-cache-bench"
CONFIG = """
server: {{log_level: warning}}
store: {{backend: {store}, path: "{db}"}}
stages:
  auth: {{enabled: {auth}}}
  policy: {{enabled: {auth}}}
models:
  sim/*:
    deployments: [{{provider: sim, model: "*"}}]
"""
BODY = (
    '{"model":"sim/gpt-4o","temperature":0,"max_tokens":150,"messages":['
    '{"role":"system","content":"You are a helpful assistant."},'
    '{"role":"user","content":"Explain in a few sentences what an exact cache in an LLM gateway does."}]%s}'
)


def _cpu_s(pid: int) -> float:
    """The gateway's CPU time, every thread's (the SQLite writer's included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"content-type": "application/json", **headers}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}


@contextlib.contextmanager
def _gateway(work: Path, store: str, auth: bool, port: int) -> Iterator[int]:
    config = work / "gateway.yaml"
    config.write_text(CONFIG.format(store=store, db=work / "bench.db", auth=str(auth).lower()))
    env = {**os.environ, "TOLLGATE_MASTER_KEY": MASTER}
    proc = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                    break
            assert time.monotonic() < deadline and proc.poll() is None, "the gateway did not start"
            time.sleep(0.1)
        yield proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)


def _key(base: str) -> str:
    import orjson

    admin = {"authorization": f"Bearer {MASTER}", "content-type": "application/json"}
    for path, body in (
        ("/admin/teams", {"id": "bench"}),
        ("/admin/keys", {"team": "bench", "name": "bench"}),
    ):
        request = urllib.request.Request(base + path, data=orjson.dumps(body), method="POST", headers=admin)
        with urllib.request.urlopen(request, timeout=10) as resp:
            reply = orjson.loads(resp.read())
    return str(reply["key"])


def _wrk(url: str, body_file: Path, headers: dict[str, str], concurrency: int, seconds: int) -> int:
    command = [
        "taskset",
        "-c",
        "1",
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{seconds}s",
        "-s",
        str(WRK_SCRIPT),
        url,
    ]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "WRK_BODY_FILE": str(body_file)},
                         check=True).stdout  # fmt: skip
    match = re.search(r'"requests":(\d+).*"err_status":(\d+)', out)
    assert match is not None, out
    assert match.group(2) == "0", f"wrk saw error statuses:\n{out}"
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", choices=["sqlite", "memory"], default="sqlite")
    parser.add_argument("--no-auth", action="store_true", help="auth and policy off")
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--port", type=int, default=29400)
    args = parser.parse_args()
    auth = not args.no_auth
    with tempfile.TemporaryDirectory() as tmp, _gateway(Path(tmp), args.store, auth, args.port) as pid:
        base = f"http://127.0.0.1:{args.port}"
        headers = {"authorization": f"Bearer {_key(base)}"} if auth else {}
        url = base + "/v1/chat/completions"
        print(f"store={args.store} auth+policy={'on' if auth else 'off'}")
        print("| mode | conc | hits | hits/s | gw CPU-ms per hit |")
        print("|---|---|---|---|---|")
        for mode, extra in (
            ("json", ""),
            ("stream", ',"stream":true,"stream_options":{"include_usage":true}'),
        ):
            body = (BODY % extra).encode()
            body_file = Path(tmp) / f"{mode}.json"
            body_file.write_bytes(body)
            _post(url, body, headers)  # the miss that stores the answer
            deadline = time.monotonic() + 10
            while True:  # the entry is written after the answer: wait for it without calling the model
                try:
                    _post(url, body, {**headers, "x-tollgate-cache": "only-if-cached"})
                    break
                except urllib.error.HTTPError as err:
                    assert err.code == 504 and time.monotonic() < deadline, err
                    time.sleep(0.02)
            _, got = _post(url, body, headers)
            assert got.get("x-tollgate-cache") == "hit", got
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                _wrk(url, body_file, headers, concurrency, 2)  # warm-up
                before = _cpu_s(pid)
                requests = _wrk(url, body_file, headers, concurrency, args.seconds)
                used = _cpu_s(pid) - before
                print(
                    f"| {mode} | {concurrency} | {requests} | {requests / args.seconds:.0f} | {used / requests * 1000:.3f} |"
                )


if __name__ == "__main__":
    main()
