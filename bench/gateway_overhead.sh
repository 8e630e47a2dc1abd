#!/usr/bin/env bash
# Gateway overhead: Tollgate (every stage off) beside direct, nginx, LiteLLM and Portkey,
# against one mock upstream, with the shared harness (../shared/bench/gateway_overhead.py).
#   bench/gateway_overhead.sh                       # all peers, non-stream + bursty streams
#   bench/gateway_overhead.sh --chunk-delay-ms 5    # spaced streams, like real tokens
# Extra arguments go to the harness. Install its tools once with:
#   python3 ../shared/bench/gateway_overhead.py --install
set -euo pipefail
cd "$(dirname "$0")/.."
HARNESS=${HARNESS:-../shared/bench/gateway_overhead.py}
PORT=${TOLLGATE_BENCH_PORT:-29000}
exec python3 "$HARNESS" --name tollgate --url "http://127.0.0.1:$PORT/v1" \
  --start "exec $PWD/.venv/bin/tollgate serve --config $PWD/bench/overhead.yaml --port $PORT" \
  --api-key "${TOLLGATE_BENCH_KEY:-sk-unused}" "$@"
