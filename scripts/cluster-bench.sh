#!/usr/bin/env bash
# Several hosts (issue 19, point 5): the same load through HAProxy in front of three
# nodes, through HAProxy in front of one node, and straight at one node — what the
# balancer's hop costs and that a cluster serves the load correctly. On one small box
# this says nothing about how far a cluster scales (every process shares its cores);
# docs/benchmarks.md gives the per-node model.
#
# The nodes and HAProxy run on loopback with kernel-picked ports; HAProxy runs the
# configuration `shardrelay haproxy-config` generates. The load generator prints its own
# summary and writes a JSON report per run into target/cluster-bench/<stamp>/.
#
# Usage: scripts/cluster-bench.sh   (or `make cluster-bench`)
# Knobs: DURATION (10s) WARMUP (2s) PAIRS (100) RATE (10000 msg/s, open loop)
#        SHARDRELAY_BIN LOAD_BIN (default: this workspace's release builds, built first)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
PAIRS=${PAIRS:-100}
RATE=${RATE:-10000}
TARGET_DIR=${CARGO_TARGET_DIR:-./target}
if [ -z "${SHARDRELAY_BIN:-}" ]; then
    ${CARGO:-cargo} build --release -q -p shardrelay -p shardrelay-load
fi
RELAY=${SHARDRELAY_BIN:-$TARGET_DIR/release/shardrelay}
LOAD=${LOAD_BIN:-$TARGET_DIR/release/shardrelay-load}
command -v haproxy >/dev/null || { echo "haproxy is not installed (scripts/install-test-tools.sh)" >&2; exit 1; }
OUT="target/cluster-bench/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# A free loopback port (bound by the kernel, released for the process that needs it).
free_port() { "$LOAD" measure free-port; }

# start_node ID PORT NODES: a node in the background, its ready line awaited.
start_node() {
    local id=$1 port=$2 nodes=$3 fifo="$OUT/$1.ready"
    mkfifo "$fifo"
    "$RELAY" --listen "127.0.0.1:$port" --admin-listen 127.0.0.1:0 --log-level warn \
        --node-id "$id" --nodes "$nodes" --proxy-protocol --trusted-proxies 127.0.0.1 \
        >"$fifo" 2>"$OUT/$id.log" &
    PIDS+=($!)
    head -n1 "$fifo" >/dev/null
}

# start_haproxy NODES FRONT_PORT
start_haproxy() {
    "$RELAY" haproxy-config --nodes "$1" --listen "127.0.0.1:$2" >"$OUT/haproxy.$2.cfg"
    haproxy -db -f "$OUT/haproxy.$2.cfg" >/dev/null 2>"$OUT/haproxy.$2.log" &
    PIDS+=($!)
    "$LOAD" measure wait-port "127.0.0.1:$2"
}

# run NAME TARGET: the pair load, open loop, then the server-id load.
run() {
    local name=$1 target=$2
    log "$name: pair, $PAIRS pairs at $RATE msg/s"
    "$LOAD" pair --target "$target" --pairs "$PAIRS" --rate "$RATE" --size 64 \
        --duration "$DURATION" --warmup "$WARMUP" --no-relay-stats --json "$OUT/$name.pair.json" | tee "$OUT/$name.pair.txt"
    log "$name: server-id, 10 binaries x 10 phones at $RATE msg/s"
    "$LOAD" server-id --target "$target" --binaries 10 --phones 10 --rate "$RATE" --size 64 \
        --duration "$DURATION" --warmup "$WARMUP" --no-relay-stats --json "$OUT/$name.server-id.json" | tee "$OUT/$name.server-id.txt"
}

p1=$(free_port); p2=$(free_port); p3=$(free_port)
three="a=127.0.0.1:$p1,b=127.0.0.1:$p2,c=127.0.0.1:$p3"
start_node a "$p1" "$three"; start_node b "$p2" "$three"; start_node c "$p3" "$three"
front3=$(free_port); start_haproxy "$three" "$front3"
run three-nodes "ws://127.0.0.1:$front3"
cleanup; PIDS=()

q=$(free_port)
start_node solo "$q" "solo=127.0.0.1:$q"
front1=$(free_port); start_haproxy "solo=127.0.0.1:$q" "$front1"
run one-node-behind-haproxy "ws://127.0.0.1:$front1"
cleanup; PIDS=()

d=$(free_port)
"$RELAY" --listen "127.0.0.1:$d" --admin-listen 127.0.0.1:0 --log-level warn >"$OUT/direct.ready" 2>"$OUT/direct.log" &
PIDS+=($!)
"$LOAD" measure wait-port "127.0.0.1:$d"
run one-node-direct "ws://127.0.0.1:$d"
log "reports in $OUT"
