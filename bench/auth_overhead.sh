#!/usr/bin/env bash
# Auth overhead on the cached path: throughput of `task-proxy serve` with auth on (decision
# cached) against auth off, same job, same machine, interleaved rounds; prints the median ratio.
#
#   cargo build --release -p task-proxy -p yt-devcluster -p demo-services --bins
#   bench/auth_overhead.sh [rounds=5] [seconds=10] [connections=50] [workers=1]
#
# Needs wrk (Debian `wrk`) and the yt CLI in .venv (scripts/install-test-deps).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}; seconds=${2:-10}; conns=${3:-50}; workers=${4:-1}
bin=target/release
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

yt_port=$(free_port)
"$bin/yt-devcluster" --listen "127.0.0.1:$yt_port" >"$work/yt.log" 2>&1 & pids+=($!)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$yt_port/api" >/dev/null && break; sleep 0.1; done
op=$(YT_PROXY="http://127.0.0.1:$yt_port" YT_TOKEN=alice-token .venv/bin/yt vanilla \
  --tasks '{main={command="sleep 100000";job_count=1}}' --spec '{}' --async | tail -1)

job_port=$(free_port)
"$bin/demo-services" http --host 127.0.0.1 --port "$job_port" --name job >"$work/job.log" 2>&1 & pids+=($!)
cat >"$work/services.json" <<JSON
{"services": [{"operation_id": "$op", "task_name": "main", "service": "web", "protocol": "http",
  "endpoints": ["127.0.0.1:$job_port"]}]}
JSON
hash=$(printf '%s' "${op}mainweb" | sha256sum | cut -c57-64)
domain="$hash.tp.test"

start_proxy() { # $1: extra flags
  local port admin; port=$(free_port); admin=$(free_port)
  # shellcheck disable=SC2086
  RUST_LOG=warn "$bin/task-proxy" serve --base-domain tp.test --services-file "$work/services.json" \
    --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" --worker-threads "$workers" \
    --yt-proxy "http://127.0.0.1:$yt_port" --yt-token robot-token $1 >"$work/proxy.log" 2>&1 &
  proxy_pid=$!
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  proxy_port=$port
}

measure() { # $1: extra flags -> requests/s
  start_proxy "$1"
  local url="http://127.0.0.1:$proxy_port/"
  local code; code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $domain" -H 'Authorization: OAuth alice-token' "$url")
  [ "$code" = 200 ] || { echo "proxy answered $code" >&2; kill $proxy_pid; exit 1; }
  wrk -t1 -c"$conns" -d2s -H "Host: $domain" -H 'Authorization: OAuth alice-token' "$url" >/dev/null
  wrk -t1 -c"$conns" -d"${seconds}s" -H "Host: $domain" -H 'Authorization: OAuth alice-token' "$url" \
    | awk '/Requests\/sec/ {print $2}'
  kill $proxy_pid; wait $proxy_pid 2>/dev/null || true
}

ratios=()
for r in $(seq "$rounds"); do
  off=$(measure "--auth-enabled=false")
  on=$(measure "")
  ratio=$(python3 -c "print(f'{$on/$off:.3f}')")
  ratios+=("$ratio")
  echo "round $r: auth off $off req/s, auth on $on req/s, on/off $ratio"
done
python3 -c "import statistics,sys; print('median on/off ratio:', statistics.median(map(float, sys.argv[1:])))" "${ratios[@]}"
