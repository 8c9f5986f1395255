#!/usr/bin/env bash
# The standard load profile of `make bench`: a fresh stack on its own
# loopback ports (not the dev ones), then natter-bench's scenarios, each the
# median of 3 runs. Limits that would throttle a load tool are raised and
# password hashing is made cheap: users are created before anything is
# timed, so neither changes a figure. Bounded: each scenario runs seconds.
#
# Memory per idle socket is only measurable on a gateway that has held no
# sockets before (a process keeps memory it has used), so each idle run
# gets a stack of its own; the other scenarios share one.
set -euo pipefail
bin="$(cd "$(dirname "$0")/.." && pwd)/bin"
work="$(mktemp -d)"
export ARGON2_MEMORY_KIB=64 ARGON2_ITERATIONS=1 HASH_WORKERS=4 \
  SEND_RATE=1000000 SEND_BURST=1000000 FLOOD_STRIKES=1000000 SOCKETS_PER_USER=100000 \
  USER_SENDS_PER_MINUTE=1000000000 USER_BYTES_PER_HOUR=1000000000000 \
  REGISTRATIONS_PER_ADDRESS=1000000 LOGIN_FAILURES_PER_ADDRESS=1000000 LOG_LEVEL=warn
unset NATS_URL MONGO_URI
devrun=""
data=""

start_stack() {
  data="$(mktemp -d -p "$work")"
  "$bin/devrun" -data "$data" -gateway-addr 127.0.0.1:18080 -auth-addr 127.0.0.1:18081 \
    -presence-addr 127.0.0.1:18082 -nats-addr 127.0.0.1:14222 -monitor-addr 127.0.0.1:18222 \
    -mongo-addr 127.0.0.1:27018 > "$data/devrun.log" 2>&1 &
  devrun=$!
  for _ in $(seq 1 120); do
    curl -fs http://127.0.0.1:18080/readyz >/dev/null 2>&1 && break
    sleep 0.5
  done
  curl -fs http://127.0.0.1:18080/readyz >/dev/null || { cat "$data/devrun.log"; echo "bench stack not ready"; exit 1; }
  gwpid=$(grep -o 'started gateway (pid [0-9]*' "$data/devrun.log" | grep -o '[0-9]*$')
  common=(-gateway http://127.0.0.1:18080 -gateway-pid "$gwpid" -token-cache "$data/tokens.json")
}

stop_stack() {
  [ -n "$devrun" ] || return 0
  kill -INT "$devrun" 2>/dev/null || true
  wait "$devrun" 2>/dev/null || true
  devrun=""
}

cleanup() {
  status=$?
  # On failure, the stack's errors say why.
  [ "$status" -eq 0 ] || { [ -n "$data" ] && grep -E 'level=(ERROR|WARN)' "$data/devrun.log" | tail -20; } || true
  stop_stack
  rm -rf "$work"
}
trap cleanup EXIT

nb=("$bin/natter-bench")
# scenario NAME ARGS...: runs natter-bench and keeps its key figures for
# the summary at the end.
scenario() {
  local name=$1 out
  shift
  out=$("${nb[@]}" "$@")
  echo "$out"
  echo "$out" | awk -v n="$name" '$1 ~ /^(deliveries_per_s|latency_p50_ms|latency_p99_ms|loss|handshakes_per_s|stored_and_delivered_per_s|send_to_receipt_p99_ms|presence_first_kib_max|presence_frames_per_sock_s)$/ {printf "| %s | %s | %s |\n", n, $1, $2}' >> "$work/summary"
}
echo "== natter-bench idle: 15,000 sockets, each run on a fresh stack"
kib=()
for run in 1 2 3; do
  start_stack
  out=$("${nb[@]}" idle "${common[@]}" -sockets 15000 -hold 5s 2>/dev/null)
  echo "$out" | sed "s/^/run $run: /"
  kib+=("$(echo "$out" | awk '$1 == "kib_per_socket" {print $2}')")
  stop_stack
done
echo "idle: median KiB of gateway RSS per socket: $(printf '%s\n' "${kib[@]}" | sort -n | sed -n 2p)"

start_stack
echo "== natter-bench, gateway pid $gwpid (medians of 3 runs)"
scenario "connect 2000, 64 in flight" connect -runs 3 "${common[@]}" -sockets 2000
scenario "connect 2000, 256 in flight" connect -runs 3 "${common[@]}" -sockets 2000 -in-flight 256
scenario "connect 2000 with resume" connect -runs 3 "${common[@]}" -sockets 2000 -resume
# A storm past PRESENCE_LIST_MAX: 15,000 sockets of 2,000 users, with the
# presence each socket gets (issue 17: first list < 32 KiB, < 1 frame/s).
scenario "storm 15000 sockets, 2000 users" connect -runs 3 "${common[@]}" -sockets 15000 -users 2000 -in-flight 256
# Latency at 100,000 deliveries/s, then throughput with more offered.
scenario "fanout 1000 x 100/s" fanout -runs 3 "${common[@]}" -sockets 1000 -rate 100 -duration 5s
scenario "fanout 1000 x 400/s" fanout -runs 3 "${common[@]}" -sockets 1000 -rate 400 -duration 5s
# Latency at half the 10,000/s target, then capacity with more than the
# target offered (12,000/s): what gets stored and delivered per second.
scenario "direct 500 x 10/s" direct -runs 3 "${common[@]}" -pairs 500 -rate 10 -duration 5s
scenario "direct 1000 x 12/s" direct -runs 3 "${common[@]}" -pairs 1000 -rate 12 -duration 5s

echo "== summary (medians of 3 runs)"
echo "| scenario | figure | value |"
echo "| --- | --- | --- |"
echo "| idle 15000 | kib_per_socket | $(printf '%s\n' "${kib[@]}" | sort -n | sed -n 2p) |"
cat "$work/summary"
