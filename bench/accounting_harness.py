"""What accounting and tracing add to a serving gateway, end to end, beside the plain proxy.

The default mode measures the accounting and tracing path end to end, with the shared gateway overhead
harness (../shared/bench/gateway_overhead.py: wrk, the Go mock, the gateway pinned to CPU 0),
one harness run per configuration, back to back:

  plain-mem   the plain proxy before accounting and tracing (a worktree of commit e7f24d6,
              `--plain-tree`), bench/overhead.yaml as it is: memory store, auth off
  plain       the same, SQLite store and auth on (a virtual key)
  main-off    this tree, SQLite + auth, `telemetry: {enabled: false}`, `ledger: {spool: false}`
  main-full   this tree, SQLite + auth, ledger spool on, Prometheus metrics, and spans over
              OTLP/HTTP (BatchSpanProcessor) to bench/otlp_sink.py on the load-generator core
  main-metrics  main-full without spans (ledger spool and Prometheus metrics only)
  main-mem    this tree, memory store, auth off (no ledger row), Prometheus metrics, no spans
  main-full-stages  main-full with the context and compress stages on, as they are by default

Every main-* run but the last has the policy, context and compress stages off (as every
stage but auth is in bench/overhead.yaml): the plain proxy has none of them, and what they
cost is not accounting. `--main-tree` runs another
checkout's code (a worktree pinned to one commit) on this tree's bench/overhead.yaml.

    git worktree add /tmp/tg-plain e7f24d6
    .venv/bin/python bench/accounting_harness.py --plain-tree /tmp/tg-plain --repeat 2

It prints gw CPU-ms per request for each (the harness's `gw CPU-s/1k req`), and
main-full - plain, the added cost, at each concurrency; harness options after `--`. The
added cost is taken between the least of each configuration's rounds: on a shared VM,
interference (the host's steal, printed per run, and what it leaves in the caches) only
ever adds CPU time, so the least-disturbed round is the best estimate of the work itself.
The difference of the means is printed beside it.

`--split` serves each configuration (gateway on CPU 0; the mock, wrk and the receiver on
CPU 1) and reads every thread's CPU from /proc during a wrk run: what the event loop pays,
and what the span exporter's and the SQLite writer's threads pay, per request.

    .venv/bin/python bench/accounting_harness.py --split --plain-tree /tmp/tg-plain \
        --configs plain,main-off,main-metrics,main-full --repeat 3 --mode nonstream

The work in isolation, layer by layer: bench/accounting_overhead.py.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from bench.accounting_fixture import REQUEST_BODY, _sink_stats, _start_sink  # noqa: E402
from gateway.demo.processes import free_port, stop  # noqa: E402

HARNESS = ROOT.parent / "shared" / "bench" / "gateway_overhead.py"
HARNESS_PORT = 29300
MASTER_KEY = "tg-master-accounting-bench"
# name -> (tree: "plain" or "main", environment for bench/overhead.yaml and the gateway)
HARNESS_CONFIGS: dict[str, tuple[str, dict[str, str]]] = {
    "plain-mem": ("plain", {"TOLLGATE_BENCH_STORE": "memory", "TOLLGATE_BENCH_AUTH": "false"}),
    "plain": ("plain", {"TOLLGATE_BENCH_STORE": "sqlite", "TOLLGATE_BENCH_AUTH": "true"}),
    "main-off": ("main", {"TOLLGATE_BENCH_STORE": "sqlite", "TOLLGATE_BENCH_AUTH": "true",
                          "TOLLGATE_BENCH_POLICY": "false",
                          "TOLLGATE_BENCH_SPOOL": "false", "TOLLGATE_BENCH_TELEMETRY": "false"}),
    "main-full": ("main", {"TOLLGATE_BENCH_STORE": "sqlite", "TOLLGATE_BENCH_AUTH": "true",
                           "TOLLGATE_BENCH_POLICY": "false",
                           "TOLLGATE_BENCH_SPOOL": "true", "TOLLGATE_BENCH_TELEMETRY": "true",
                           "OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "none"}),
    "main-metrics": ("main", {"TOLLGATE_BENCH_STORE": "sqlite", "TOLLGATE_BENCH_AUTH": "true",
                              "TOLLGATE_BENCH_POLICY": "false",
                              "TOLLGATE_BENCH_SPOOL": "true", "TOLLGATE_BENCH_TELEMETRY": "true",
                              "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}),
    "main-full-stages": ("main", {"TOLLGATE_BENCH_STORE": "sqlite", "TOLLGATE_BENCH_AUTH": "true",
                                  "TOLLGATE_BENCH_POLICY": "false", "TOLLGATE_BENCH_CONTEXT": "true",
                                  "TOLLGATE_BENCH_COMPRESS": "true",
                                  "TOLLGATE_BENCH_SPOOL": "true", "TOLLGATE_BENCH_TELEMETRY": "true",
                                  "OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "none"}),
    "main-mem": ("main", {"TOLLGATE_BENCH_STORE": "memory", "TOLLGATE_BENCH_AUTH": "false",
                          "TOLLGATE_BENCH_POLICY": "false"}),
}  # fmt: skip


def _serve_command(tree: Path, config: Path, port: int) -> str:
    """Shell command that runs `tree`'s gateway on `config`."""
    python = ROOT / ".venv" / "bin" / "python"
    # `-m gateway` from inside the tree: its own package comes first on sys.path.
    return f"cd {tree} && exec {python} -m gateway serve --config {config} --port {port}"


def _http(url: str, body: dict[str, Any] | None = None, key: str | None = None) -> dict[str, Any]:
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    data = None if body is None else orjson.dumps(body)
    req = urllib.request.Request(
        url, data=data, headers=headers, method="POST" if body is not None else "GET"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return dict(orjson.loads(resp.read()))


def _wait_ready(proc: subprocess.Popen[bytes], command: str, port: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            _http(f"http://127.0.0.1:{port}/readyz")
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"gateway did not start: {command}") from None
            time.sleep(0.1)


def _make_key(command: str, env: dict[str, str], port: int) -> str:
    """Start the gateway once on its SQLite store, create a team and a virtual key, stop it."""
    proc = subprocess.Popen(["bash", "-c", command], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        _wait_ready(proc, command, port)
        _http(f"http://127.0.0.1:{port}/admin/teams", {"id": "bench"}, MASTER_KEY)
        return str(_http(f"http://127.0.0.1:{port}/admin/keys", {"team": "bench"}, MASTER_KEY)["key"])
    finally:
        stop(proc)


def _runs(args: argparse.Namespace) -> Iterator[tuple[int, str, Path, Path, dict[str, str]]]:
    """(round, configuration, code tree, overhead.yaml, its environment), round-robin."""
    names = [name.strip() for name in args.configs.split(",") if name.strip()]
    plain_tree = Path(args.plain_tree).resolve() if args.plain_tree else None
    main_tree = Path(args.main_tree).resolve() if args.main_tree else ROOT
    if plain_tree is None:
        names = [name for name in names if HARNESS_CONFIGS[name][0] != "plain"]
    elif not (plain_tree / "gateway").is_dir():
        raise SystemExit(f"--plain-tree {plain_tree}: no gateway package there")
    for rep in range(args.repeat):
        for name in names:
            tree_name, config_env = HARNESS_CONFIGS[name]
            tree = plain_tree if tree_name == "plain" else main_tree
            assert tree is not None
            # The plain tree reads its own copy (it knows fewer settings); the others this one.
            config = (tree if tree_name == "plain" else ROOT) / "bench" / "overhead.yaml"
            yield rep, name, tree, config, config_env


def _env(config_env: dict[str, str], db: Path, sink_port: int, **more: str) -> dict[str, str]:
    env = {**os.environ, **config_env, "TOLLGATE_BENCH_DB": str(db), "TOLLGATE_MASTER_KEY": MASTER_KEY,
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", **more}  # fmt: skip
    if config_env.get("OTEL_TRACES_EXPORTER") == "otlp":
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{sink_port}"
    return env


def _ledger_rows(db: Path) -> int:
    import sqlite3

    if not db.exists():
        return -1
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT count(*) FROM log WHERE log = 'ledger'").fetchone()[0])


def _harness(args: argparse.Namespace, extra: list[str]) -> int:
    if not HARNESS.exists():
        raise SystemExit(f"{HARNESS} missing")
    runs = list(_runs(args))
    names = list(dict.fromkeys(name for _, name, *_ in runs))
    tmp = Path(tempfile.mkdtemp(prefix="tollgate-acct-harness-"))
    sink_port = free_port()
    # The receiver stands for a collector on another machine: off the gateway's core.
    sink = _start_sink(sink_port)
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    notes: list[str] = []
    try:
        for rep, name, tree, config, config_env in runs:
            db = tmp / f"{name}-{rep}.db"
            env = _env(config_env, db, sink_port)
            key = "sk-unused"
            if config_env.get("TOLLGATE_BENCH_AUTH") == "true":
                key = _make_key(_serve_command(tree, config, HARNESS_PORT),
                                {**env, "MOCK_BASE_URL": "http://127.0.0.1:9/v1"}, HARNESS_PORT)  # fmt: skip
            out = tmp / f"{name}-{rep}.json"
            spans0, steal0 = _sink_stats(sink_port)["spans"], _steal_s()
            cmd = [sys.executable, str(HARNESS), "--name", name, "--url", f"http://127.0.0.1:{HARNESS_PORT}/v1",
                   "--start", _serve_command(tree, config, HARNESS_PORT), "--api-key", key, "--peers", "direct",
                   "--json", str(out), *extra]  # fmt: skip
            print(f"# [{rep + 1}/{args.repeat}] {name}: {' '.join(cmd[1:])}", flush=True)
            run = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if run.returncode != 0 or not out.exists():
                print(run.stdout[-3000:], run.stderr[-3000:], sep="\n")
                raise SystemExit(f"harness failed for {name}")
            data = orjson.loads(out.read_bytes())
            for row in data["results"]:
                if row["target"] == name:
                    results.setdefault((name, rep), []).append(row)
            spans, steal = _sink_stats(sink_port)["spans"] - spans0, _steal_s() - steal0
            stored = _ledger_rows(db)
            served = sum(row["requests"] for row in results.get((name, rep), []))
            notes.append(f"{name} run {rep + 1}: {served} requests measured, ledger rows in SQLite "
                         f"{stored if stored >= 0 else '-'}, spans received {spans}, "
                         f"CPU 0 stolen by the host {steal:.1f} s")  # fmt: skip
            print("  " + notes[-1], flush=True)
            for line in run.stdout.splitlines():
                if line.startswith("| ") and f" {name} " in line:
                    print("  " + line, flush=True)
    finally:
        sink.terminate()
        sink.wait(timeout=10)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    cells: dict[tuple[str, str, int], list[float]] = {}
    for (name, _), rows in results.items():
        for row in rows:
            if row["gw_cpu_ms_per_req"] is not None:
                cells.setdefault((name, row["mode"], row["conc"]), []).append(row["gw_cpu_ms_per_req"])
    keys = sorted({(mode, conc) for (_, mode, conc) in cells}, key=lambda k: (k[0] != "nonstream", k[1]))
    print("\n# gw CPU-ms per request (= harness gw CPU-s/1k req); each cell: runs, comma-separated.\n"
          "# added = main-full - base, from the least of each one's runs (interference from the host only\n"
          "# adds CPU time: the least-disturbed run is the best estimate) and, after /, from their means")  # fmt: skip
    print("| mode | conc | " + " | ".join(names) + " | added over plain | added over plain-mem |")
    print("|---|---:|" + "---|" * len(names) + "---:|---:|")
    deltas: dict[str, dict[str, list[float]]] = {"plain": {"least": [], "mean": []},
                                                  "plain-mem": {"least": [], "mean": []}}  # fmt: skip
    for mode, conc in keys:
        row = [mode, str(conc)]
        for name in names:
            values = cells.get((name, mode, conc), [])
            row.append(", ".join(f"{v:.3f}" for v in values) or "-")
        for base in ("plain", "plain-mem"):
            full, plain = cells.get(("main-full", mode, conc)), cells.get((base, mode, conc))
            if full and plain:
                least, mean = min(full) - min(plain), statistics.mean(full) - statistics.mean(plain)
                deltas[base]["least"].append(least)
                deltas[base]["mean"].append(mean)
                row.append(f"{least:+.3f} / {mean:+.3f}")
            else:
                row.append("-")
        print("| " + " | ".join(row) + " |")
    for note in notes:
        print(f"# {note}")
    parts = []
    for base, label in (
        ("plain", "harness_added_cpu_ms"),
        ("plain-mem", "harness_added_vs_plain_mem_cpu_ms"),
    ):
        by_least, by_mean = deltas[base]["least"], deltas[base]["mean"]
        if by_least:
            parts.append(f"{label}_max={max(by_least):.3f} {label}_mean={statistics.mean(by_least):.3f} "
                         f"{label}_max_of_means={max(by_mean):.3f}")  # fmt: skip
    if parts:
        worst = max(max(d["least"]) for d in deltas.values() if d["least"])
        print("\nRESULT " + " ".join(parts) + f" target_cpu_ms=0.3 meets_target={str(worst <= 0.3).lower()}")
    return 0


def _steal_s() -> float:
    """Seconds the host has taken CPU 0 (the gateway's) from this VM, from /proc/stat."""
    with open("/proc/stat") as stat:
        for line in stat:
            if line.startswith("cpu0 "):
                return int(line.split()[8]) / os.sysconf("SC_CLK_TCK")
    return 0.0


def _thread_ticks(pid: int) -> dict[int, int]:
    ticks = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            ticks[int(task.name)] = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks


def _wrk(url: str, key: str, body: Path, conc: int, seconds: int) -> int:
    lua = HARNESS.parent / "wrk_post.lua"
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{conc}", f"-d{seconds}s", "--timeout", "10s", "-s", str(lua),
         "-H", f"Authorization: Bearer {key}", url],
        env={**os.environ, "WRK_BODY_FILE": str(body)}, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return int(orjson.loads(out.split("WRK_JSON", 1)[1].strip().splitlines()[0])["requests"])


def _split(args: argparse.Namespace) -> int:
    """Per-thread CPU of the serving gateway: the event loop, the span exporter, the SQLite writer."""
    mock_bin = Path(os.environ.get("GWBENCH_WORK", "/tmp/gwbench")) / "bin" / "mock_upstream"
    if not mock_bin.exists() or not shutil.which("wrk"):
        raise SystemExit(f"needs wrk and {mock_bin}: python3 {HARNESS} --install")
    runs = list(_runs(args))
    modes = ("nonstream", "stream") if args.mode == "both" else (args.mode,)
    tmp = Path(tempfile.mkdtemp(prefix="tollgate-acct-split-"))
    bodies = {}
    for mode in modes:
        body = dict(
            REQUEST_BODY,
            **({"stream": True, "stream_options": {"include_usage": True}} if mode == "stream" else {}),
        )
        bodies[mode] = tmp / f"{mode}.json"
        bodies[mode].write_bytes(orjson.dumps(body))
    mock_port, sink_port = free_port(), free_port()
    mock = subprocess.Popen(["taskset", "-c", "1", str(mock_bin), "-addr", f"127.0.0.1:{mock_port}", "-chunks", "20"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    sink = _start_sink(sink_port)
    rows: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
    try:
        for rep, name, tree, config, config_env in runs:
            env = _env(
                config_env,
                tmp / f"{name}-{rep}.db",
                sink_port,
                MOCK_BASE_URL=f"http://127.0.0.1:{mock_port}/v1",
            )
            command = _serve_command(tree, config, HARNESS_PORT)
            key = (
                _make_key(command, env, HARNESS_PORT)
                if config_env.get("TOLLGATE_BENCH_AUTH") == "true"
                else "x"
            )
            gateway = subprocess.Popen(["taskset", "-c", "0", "bash", "-c", command], env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
            try:
                _wait_ready(gateway, command, HARNESS_PORT)
                url = f"http://127.0.0.1:{HARNESS_PORT}/v1/chat/completions"
                for mode in modes:
                    _wrk(url, key, bodies[mode], args.split_conc, 3)
                    t0 = _thread_ticks(gateway.pid)
                    n = _wrk(url, key, bodies[mode], args.split_conc, args.split_seconds)
                    t1 = _thread_ticks(gateway.pid)
                    per = {
                        tid: (t1[tid] - t0.get(tid, 0)) / os.sysconf("SC_CLK_TCK") * 1000 / n for tid in t1
                    }
                    loop = per.pop(gateway.pid, 0.0)
                    others = sorted(per.values(), reverse=True)
                    rows.setdefault((name, mode), []).append(
                        (loop + sum(others), loop, others[0] if others else 0.0, sum(others[1:]))
                    )
                    print(f"# [{rep + 1}/{args.repeat}] {name} {mode}: {n / args.split_seconds:.0f} req/s, "
                          f"{loop + sum(others):.3f} CPU-ms/req (loop {loop:.3f}, other threads "
                          f"{', '.join(f'{v:.3f}' for v in others if v)})", flush=True)  # fmt: skip
            finally:
                stop(gateway)
    finally:
        for proc in (sink, mock):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n# per-thread CPU-ms per request, c={args.split_conc}, {args.split_seconds} s per run; "
          "median (min-max) over runs; the busiest other thread is the span exporter's when there is one")  # fmt: skip
    print(
        "| config | mode | total | event loop | busiest other thread | the rest |\n|---|---|---:|---:|---:|---:|"
    )
    for (name, mode), values in rows.items():
        cells = []
        for i in range(4):
            column = [v[i] for v in values]
            cells.append(f"{statistics.median(column):.3f} ({min(column):.3f}-{max(column):.3f})")
        print(f"| {name} | {mode} | " + " | ".join(cells) + " |")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plain-tree", help="a worktree of the plain proxy (commit e7f24d6)")
    ap.add_argument("--main-tree", help="the code for the main-* runs (default: this tree)")
    ap.add_argument("--configs", default="plain-mem,plain,main-off,main-full,main-mem",
                    help=f"configurations, from {','.join(HARNESS_CONFIGS)}")  # fmt: skip
    ap.add_argument("--repeat", type=int, default=1, help="rounds over the configurations")
    ap.add_argument("--split", action="store_true", help="per-thread CPU of the serving gateway under wrk")
    ap.add_argument("--mode", choices=("both", "nonstream", "stream"), default="both", help="--split")
    ap.add_argument("--split-conc", type=int, default=16)
    ap.add_argument("--split-seconds", type=int, default=10)
    ap.add_argument("--keep", action="store_true", help="keep the JSON results and databases")
    argv = sys.argv[1:]
    extra: list[str] = []
    if "--" in argv:
        argv, extra = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    args = ap.parse_args(argv)
    return _split(args) if args.split else _harness(args, extra)


if __name__ == "__main__":
    sys.exit(main())
