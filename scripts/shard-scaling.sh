#!/usr/bin/env bash
# One shard vs two (issue 9, point 6): peak throughput (closed loop, --inflight 8 per
# stream, 64-byte messages) of pair and server-id at 100 and 1,000 connections with
# `--shards 1` and `--shards 2`, the relay's CPU over the run (utime+stime from
# /proc/PID/stat), and the handoff histogram of each two-shard run (connections that
# landed on the wrong shard and were moved to their owner; `/stats` `handoff`).
#
# Usage: scripts/shard-scaling.sh      Env: SHARDRELAY_BIN, SOAK_LOAD_BIN, DURATION (s, default 8)
# The load generator shares the machine's cores with the relay: on a 2-core box the
# two-shard relay competes with it for the second core (see docs/benchmarks.md).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/relay.sh"

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
LOAD_BIN=${SOAK_LOAD_BIN:-$TARGET_DIR/release/shardrelay-load}
DURATION=${DURATION:-8}
TICKS=$(getconf CLK_TCK)
[ -x "$RELAY_BIN" ] && [ -x "$LOAD_BIN" ] || die "build first: cargo build --release -p shardrelay -p shardrelay-load"
OUT=$(mktemp -d "${TMPDIR:-/tmp}/shardrelay-scaling.XXXXXX")
trap 'relay_stop; rm -rf "$OUT"' EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$RELAY_PID/stat"; }

printf '%-10s %6s %6s %12s %10s %12s | %s\n' style conns shards "msgs/s" "relay CPU" "msgs/CPU-s" \
    "handoff p50/p99 µs (count)"
for style in pair server-id; do
    for conns in 100 1000; do
        case $style in
            pair) shape=(--pairs $((conns / 2))) ;;
            server-id) shape=(--binaries $((conns / 10)) --phones 9) ;;
        esac
        for shards in 1 2; do
            relay_start "$OUT/relay.log" --log-level warn --shards "$shards"
            start=$(cpu_ticks)
            "$LOAD_BIN" "$style" --target "$RELAY_PUBLIC" --admin "$RELAY_ADMIN" "${shape[@]}" \
                --inflight 8 --size 64 --warmup 2s --duration "${DURATION}s" \
                --source-ips 127.0.0.1-127.0.0.4 --json "$OUT/load.json" >"$OUT/load.txt" 2>&1 ||
                die "load failed: $(tail -n 3 "$OUT/load.txt")"
            end=$(cpu_ticks)
            relay_stop
            python3 - "$OUT/load.json" "$style" "$conns" "$shards" "$start" "$end" "$TICKS" <<'EOF'
import json, sys
path, style, conns, shards, start, end, ticks = sys.argv[1:]
r = json.load(open(path))
rate = r["throughput"]["messages_per_s"]
cpu = (int(end) - int(start)) / int(ticks)
received = r["throughput"]["received"]
stats = (r.get("relay") or {}).get("stats") or {}
h = stats.get("totals", {}).get("histograms", {}).get("handoff") or {}
handoff = f"{h.get('p50', '-')}/{h.get('p99', '-')} ({h.get('count', 0)})" if h else "-"
print(f"{style:<10} {conns:>6} {shards:>6} {rate:>12.0f} {cpu:>9.2f}s {received / cpu:>12.0f} | {handoff}")
EOF
        done
    done
done
