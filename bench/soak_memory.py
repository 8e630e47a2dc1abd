"""Memory under sustained load: the gateway's RSS over time while it proxies non-stop.

Starts the benchmark's Go mock upstream and the gateway (SQLite store, auth on, a virtual
key: the default deployment), drives it with wrk in alternating non-stream / stream
phases, and samples the gateway's RSS. A server whose memory grows with requests served
leaks; the table shows RSS at each sample and the last line sums it up.

    python3 ../shared/bench/gateway_overhead.py --install     # once: wrk, go, the mock
    .venv/bin/python bench/soak_memory.py --minutes 3
    .venv/bin/python bench/soak_memory.py --minutes 3 --trace  # + spans over OTLP/HTTP

The ledger spool is on (the default with a SQLite store), and so are Prometheus metrics.
`--trace` also exports every request's spans (BatchSpanProcessor, OTLP/HTTP) to
bench/otlp_sink.py, a real receiver started beside the mock.

Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_BENCH = ROOT.parent / "shared" / "bench"
WORK = Path(os.environ.get("GWBENCH_WORK", "/tmp/gwbench"))
BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "system", "content": "You are a helpful assistant."},
                 {"role": "user", "content": "Explain in two sentences what an LLM gateway does."}],
    "max_tokens": 128,
}  # fmt: skip


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_kb(pid: int) -> tuple[int, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def _wait(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"not ready: {url}")


def _post(url: str, body: dict[str, object], key: str) -> dict[str, object]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"authorization": f"Bearer {key}", "content-type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as resp:
        return dict(json.loads(resp.read()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--conc", type=int, default=32)
    ap.add_argument("--phase-s", type=int, default=15, help="seconds per wrk phase (alternating modes)")
    ap.add_argument("--trace", action="store_true", help="export spans over OTLP/HTTP to bench/otlp_sink.py")
    args = ap.parse_args()
    mock_bin, lua = WORK / "bin" / "mock_upstream", SHARED_BENCH / "wrk_post.lua"
    if not mock_bin.exists():
        raise SystemExit(f"{mock_bin} missing: run python3 {SHARED_BENCH / 'gateway_overhead.py'} --install")
    tmp = Path(tempfile.mkdtemp(prefix="tollgate-soak-"))
    mock_port, gw_port = _port(), _port()
    master = "tg-master-soak"
    config = tmp / "soak.yaml"
    config.write_text(
        f"server: {{log_level: warning}}\nstore: {{backend: sqlite, path: {tmp / 'soak.db'}}}\n"
        f"models:\n  gpt-4o-mini:\n    deployments:\n      - {{provider: openai_compat, model: gpt-4o-mini, "
        f"api_base: 'http://127.0.0.1:{mock_port}/v1', api_key: sk-mock}}\n"
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(subprocess.Popen([str(mock_bin), "-addr", f"127.0.0.1:{mock_port}", "-chunks", "20"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))  # fmt: skip
        env = {**os.environ, "TOLLGATE_MASTER_KEY": master}
        sink_port = _port()
        if args.trace:
            procs.append(subprocess.Popen([sys.executable, str(ROOT / "bench" / "otlp_sink.py"), "--port", str(sink_port)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))  # fmt: skip
            _wait(f"http://127.0.0.1:{sink_port}/stats")
            env |= {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "none",
                    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}"}  # fmt: skip
        gateway = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "tollgate"), "serve", "--config", str(config), "--port", str(gw_port)],
            env=env, stdout=subprocess.DEVNULL,
            stderr=open(tmp / "gateway.log", "wb"), start_new_session=True,
        )  # fmt: skip
        procs.append(gateway)
        base = f"http://127.0.0.1:{gw_port}"
        _wait(f"{base}/readyz")
        _post(f"{base}/admin/teams", {"id": "soak"}, master)
        key = str(_post(f"{base}/admin/keys", {"team": "soak"}, master)["key"])
        bodies = {}
        for mode in ("nonstream", "stream"):
            body = dict(BODY, **({"stream": True, "stream_options": {"include_usage": True}} if mode == "stream" else {}))
            bodies[mode] = tmp / f"{mode}.json"
            bodies[mode].write_text(json.dumps(body))
        start_rss, _ = _rss_kb(gateway.pid)
        print(f"{'t (s)':>6} {'mode':<10} {'requests':>9} {'req/s':>7} {'RSS MB':>8} {'peak MB':>8}")
        started, total, samples = time.monotonic(), 0, []
        phase = 0
        while time.monotonic() - started < args.minutes * 60:
            mode = ("nonstream", "stream")[phase % 2]
            out = subprocess.run(
                ["wrk", "-t1", f"-c{args.conc}", f"-d{args.phase_s}s", "--timeout", "10s", "-s", str(lua),
                 "-H", f"Authorization: Bearer {key}", f"{base}/v1/chat/completions"],
                env={**os.environ, "WRK_BODY_FILE": str(bodies[mode])}, capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            stats = json.loads(out.split("WRK_JSON", 1)[1].strip().splitlines()[0])
            total += stats["requests"]
            rss, hwm = _rss_kb(gateway.pid)
            samples.append(rss)
            elapsed = time.monotonic() - started
            print(f"{elapsed:>6.0f} {mode:<10} {total:>9} {stats['requests'] / args.phase_s:>7.0f} "
                  f"{rss / 1024:>8.1f} {hwm / 1024:>8.1f}", flush=True)  # fmt: skip
            phase += 1
        # Growth between the first and last quarter of the run, after warm-up.
        quarter = max(1, len(samples) // 4)
        early, late = sum(samples[:quarter]) / quarter, sum(samples[-quarter:]) / quarter
        rss, hwm = _rss_kb(gateway.pid)
        spool = tmp / "soak.db-spool"
        extra = f" spool_kb={sum(f.stat().st_size for f in spool.glob('*')) / 1024:.0f}" if spool.is_dir() else ""
        if args.trace:
            with urllib.request.urlopen(f"http://127.0.0.1:{sink_port}/stats", timeout=5) as resp:
                extra += f" spans_received={json.loads(resp.read())['spans']}"
        print(f"\nRESULT requests={total} start_rss_mb={start_rss / 1024:.1f} end_rss_mb={rss / 1024:.1f} "
              f"peak_rss_mb={hwm / 1024:.1f} growth_first_to_last_quarter_mb={(late - early) / 1024:.1f}{extra}")  # fmt: skip
        return 0
    finally:
        # The gateway first (started last), so its last spans still reach the receiver.
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
