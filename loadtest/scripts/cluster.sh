#!/usr/bin/env bash
# One command for a cluster benchmark on this machine: starts a redis-server and NODES hub
# processes joined by it (release builds), runs a loadtest scenario against all of them, and
# stops everything.
#
#   loadtest/scripts/cluster.sh [NODES] [SCENARIO] [loadtest args...]
#
#   loadtest/scripts/cluster.sh 6 fanout --subscribers 100000 --rate 1 --duration 20s
#   loadtest/scripts/cluster.sh 3 fanout --subscribers 45000 --rate 10 --duration 20s
#   loadtest/scripts/cluster.sh 3 idle --connections 54000 --hold 5s
#
# It adds --url (every node), --api-url (node 1), --secret, --api-key and --pid (every node).
# Environment: CARGO_TARGET_DIR (default ~/.cache/hub/target), REDIS_PORT (default 6391),
# BASE_PORT (default 8000: nodes listen on 8001, 8002, ...).
set -euo pipefail

NODES=${1:-3}
SCENARIO=${2:-fanout}
shift $(( $# >= 2 ? 2 : $# ))
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$HOME/.cache/hub/target}
REDIS_PORT=${REDIS_PORT:-6391}
BASE_PORT=${BASE_PORT:-8000}
WORK=$(mktemp -d /tmp/hub-cluster-bench.XXXXXX)

(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release -q -p hub-server -p loadtest)
command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install redis-server)" >&2; exit 1; }

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$WORK" --daemonize yes --logfile "$WORK/redis.log"
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

URLS=""
for i in $(seq 1 "$NODES"); do
  port=$((BASE_PORT + i))
  cat > "$WORK/node$i.json" <<JSON
{
  "http_server": {"address": "127.0.0.1", "port": $port},
  "client": {"token": {"hmac_secret_key": "bench-secret"}, "ping_interval": "25s"},
  "http_api": {"key": "bench-api-key"},
  "channel": {"without_namespace": {"allow_subscribe_for_client": true}},
  "engine": {"type": "redis", "redis": {"address": ["redis://127.0.0.1:$REDIS_PORT"], "prefix": "bench"}},
  "node": {"name": "node$i"},
  "log": {"level": "warn"}
}
JSON
  "$TARGET/release/hub-server" -c "$WORK/node$i.json" >"$WORK/node$i.log" 2>&1 &
  PIDS+=($!)
  URLS="$URLS${URLS:+,}ws://127.0.0.1:$port/connection/websocket"
done
for i in $(seq 1 "$NODES"); do
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$((BASE_PORT + i))/ready" >/dev/null && break
    sleep 0.1
  done
done

redis_cpu() { redis-cli -p "$REDIS_PORT" info cpu | awk -F: '/used_cpu_(sys|user):/ {s += $2} END {printf "%.2f", s}'; }
before=$(redis_cpu)
start=$(date +%s.%N)
API_ARGS=()
[ "$SCENARIO" != idle ] && API_ARGS=(--api-url "http://127.0.0.1:$((BASE_PORT + 1))" --api-key bench-api-key)
"$TARGET/release/loadtest" "$SCENARIO" --url "$URLS" --secret bench-secret \
  "${API_ARGS[@]}" --pid "$(IFS=,; echo "${PIDS[*]}")" "$@"
echo "redis CPU: $(echo "$(redis_cpu) - $before" | bc) s over $(echo "$(date +%s.%N) - $start" | bc | cut -c1-6) s (connecting included)"
