#!/usr/bin/env bash
# Tick spikes under idle connections (#20 point 1): one shard holding IDLE idle
# connections (two `shardrelay-load idle` processes, each under the 20,000-descriptor
# limit, over several 127.0.0.x source addresses) while a third process relays moderate
# pair traffic (`shardrelay-load pair`, open loop); the relay's `forward` histogram
# (read → written, /stats) then shows whether the per-tick housekeeping stalls relayed
# messages. Run it against two binaries to compare (SHARDRELAY_BIN, LOAD_BIN).
#
# Usage: scripts/tick-spikes.sh
# Env: SHARDRELAY_BIN, LOAD_BIN (default target/release/…), IDLE (19000), PAIRS (50),
# RATE (2000 round trips/s), DURATION (20s), TICK_FLAGS (extra relay flags), OUT_DIR.
# Bounded: the ramp (--setup-timeout 60s) + DURATION; loopback only.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
export SHARDRELAY_BIN=${SHARDRELAY_BIN:-$TARGET_DIR/release/shardrelay}
LOAD=${LOAD_BIN:-$TARGET_DIR/release/shardrelay-load}
IDLE=${IDLE:-19000}
PAIRS=${PAIRS:-50}
RATE=${RATE:-2000}
DURATION=${DURATION:-20s}
OUT=${OUT_DIR:-$TARGET_DIR/tick-spikes/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
source scripts/lib/relay.sh
IDLE_PIDS=()
cleanup() {
    local pid
    for pid in "${IDLE_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    relay_cleanup
}
trap cleanup EXIT

# shellcheck disable=SC2086
relay_start "$OUT/relay.log" --shards 1 --log-level warn ${TICK_FLAGS:-}
half=$((IDLE / 2))
for part in 1 2; do
    n=$half
    [ "$part" = 2 ] && n=$((IDLE - half))
    lo=$(((part - 1) * 8 + 1))
    "$LOAD" idle --style pair --connections "$n" --connect-rate 4000 \
        --target "$RELAY_PUBLIC" --admin "$RELAY_ADMIN" --no-relay-stats \
        --source-ips "127.0.0.$lo-127.0.0.$((lo + 7))" --setup-timeout 60s \
        --duration 600s >"$OUT/idle$part.txt" 2>&1 &
    IDLE_PIDS+=($!)
done
# Poll (50 ms) for both ramps' end; bounded by the loads' --setup-timeout.
for part in 1 2; do
    while ! grep -qs 'all connections up' "$OUT/idle$part.txt"; do
        kill -0 "${IDLE_PIDS[$((part - 1))]}" 2>/dev/null || die "idle load $part ended: $OUT/idle$part.txt"
        sleep 0.05
    done
done
log "$IDLE idle connections up; pair traffic: $PAIRS pairs at $RATE/s for $DURATION"
"$LOAD" pair --pairs "$PAIRS" --rate "$RATE" --size 64 --duration "$DURATION" \
    --target "$RELAY_PUBLIC" --admin "$RELAY_ADMIN" --source-ips 127.0.0.17-127.0.0.18 \
    --json "$OUT/pair.json" | tee "$OUT/pair.txt"
log "reports in $OUT"
