#!/usr/bin/env bash
# Throughput and latency of each WebSocket style at 100 and 10,000 connections, open
# loop at a fixed total rate, one fresh relay per run. Prints a markdown table built from
# shardrelay-load's --json reports (client round trip and relay `forward` histograms).
# Usage: scripts/bench-styles.sh [RATE] [DURATION]
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-10000}
DURATION=${2:-10s}
RELAY=./target/release/shardrelay
LOAD=./target/release/shardrelay-load
out=$(mktemp -d)
relay_pid=""
cleanup() { [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$out"; }
trap cleanup EXIT

start_relay() {
    "$RELAY" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --log-level warn >"$out/ready" 2>"$out/relay.log" &
    relay_pid=$!
    for _ in $(seq 1 100); do grep -q listening "$out/ready" 2>/dev/null && break; sleep 0.05; done
    public=$(grep -o 'public=[^ ]*' "$out/ready" | cut -d= -f2)
    admin=$(grep -o 'admin=[^ ]*' "$out/ready" | cut -d= -f2)
}
stop_relay() { kill "$relay_pid"; wait "$relay_pid" 2>/dev/null || true; relay_pid=""; }

run() {  # label connections subcommand args...
    local label=$1 conns=$2; shift 2
    start_relay
    "$LOAD" "$@" --target "$public" --admin "$admin" --rate "$RATE" --duration "$DURATION" \
        --warmup 3s --source-ips 127.0.0.1-127.0.0.4 --json "$out/r.json" >/dev/null 2>"$out/load.err" || true
    stop_relay
    "$LOAD" measure style-row --label "$label" --connections "$conns" --report "$out/r.json"
}

echo "| style | connections | msgs/s | client round trip p50 / p99 / p99.9 µs | relay forward p50 / p99 / p99.9 µs | lost+dup+reordered+corrupt | exit |"
echo "|---|---|---|---|---|---|---|"
run pair 100 pair --pairs 50
run pair 10000 pair --pairs 5000 --connect-rate 5000
run server-id 100 server-id --binaries 10 --phones 9
run server-id 10000 server-id --binaries 625 --phones 15 --connect-rate 5000
run session 100 session --sessions 50
run session 10000 session --sessions 5000 --connect-rate 5000
