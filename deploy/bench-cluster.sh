#!/usr/bin/env bash
# Measures what one replicated stream takes on a 3-node NATS cluster run
# from deploy/nats (the deployment's own files, addresses moved to
# loopback ports 24222-24224, 26222-26224, 28222-28224): JetStream
# publishes to an R3 file stream with sync_interval always, as CHAT is,
# with dedupe ids as the gateway sends them. Each run is bounded by
# -msgs; the cluster is removed at the end.
#
#   bash deploy/bench-cluster.sh [runs (3)] [msgs per run (20000)] [size (512B)]
#
# On one machine the three nodes share its disk and cores: on real
# machines expect more. Needs `make build` (bin/nats-server).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
msgs=${2:-20000}
size=${3:-512B}
[ "$msgs" -le 200000 ] || { echo "at most 200000 messages per run"; exit 2; }
[ -x bin/nats-server ] || { echo "bin/nats-server missing: run make build"; exit 2; }

dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

export NATS_GATEWAY_PASSWORD=bench-gw NATS_AUTH_PASSWORD=bench-auth NATS_PRESENCE_PASSWORD=bench-pres \
  NATS_WATCH_PASSWORD=bench-watch NATS_ADMIN_PASSWORD=bench-admin NATS_SYS_PASSWORD=bench-sys
for i in 0 1 2; do
  mkdir -p "$dir/n$i"
  # The stores have no users (accounts.conf): the bench gets an account
  # of its own with JetStream, beside them.
  sed -e 's#^  CHAT_STORE: {#  BENCH: {jetstream: enabled, users: [{user: bench, password: bench-pw}]}\n  CHAT_STORE: {#' \
      deploy/nats/accounts.conf > "$dir/n$i/accounts.conf"
  sed -e "s#listen: 0.0.0.0:4222#listen: 127.0.0.1:2422$i#" \
      -e "s#http: 0.0.0.0:8222#http: 127.0.0.1:2822$i#" \
      -e "s#store_dir: /data/jetstream#store_dir: \"$dir/n$i/js\"#" \
      -e "s#listen: 0.0.0.0:6222#listen: 127.0.0.1:2622$i#" \
      -e "s#nats://nats-\([012]\).nats:6222#nats://127.0.0.1:2622\1#" \
      deploy/nats/nats.conf > "$dir/n$i/nats.conf"
  SERVER_NAME=nats-$i bin/nats-server -c "$dir/n$i/nats.conf" > "$dir/n$i/log" 2>&1 &
  pids+=($!)
done
for i in 0 1 2; do
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:2822$i/healthz" >/dev/null && break
    sleep 0.2
  done
  curl -fs "http://127.0.0.1:2822$i/healthz" >/dev/null || { echo "nats-$i not healthy:"; tail "$dir/n$i/log"; exit 1; }
done

nats() { (cd services && go tool nats -s nats://127.0.0.1:24220,nats://127.0.0.1:24221 --user bench --password bench-pw "$@"); }
nats stream add CHATBENCH --subjects 'bench.>' --storage file --replicas 3 --dupe-window 2m --defaults >/dev/null
for r in $(seq "$runs"); do
  echo "== run $r: async publish, $msgs x $size, R3, sync_interval always, dedupe ids"
  nats bench js pub async bench.x --stream CHATBENCH --msgs "$msgs" --size "$size" --dedup --batch 100 --no-progress 2>&1 | grep -E "stats:|msgs/sec" | head -3
  echo "== run $r: synchronous publish (one at a time: the ack latency), $((msgs / 10)) x $size"
  nats bench js pub sync bench.y --stream CHATBENCH --msgs $((msgs / 10)) --size "$size" --dedup --no-progress 2>&1 | grep -E "stats:|msgs/sec" | head -3
done
