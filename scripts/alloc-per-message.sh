#!/usr/bin/env bash
# Allocations per relayed message in steady state (issue 9, point 4): a relay built with
# the counting allocator (`--features alloc-count`, its own target directory so the
# normal release binary is untouched) reports process-wide allocation counts in /stats.
# For each style, drive it at a fixed open-loop rate; after the warm-up read /stats twice
# back to back (the difference is what one /stats read itself allocates), let WINDOW
# seconds of traffic pass, read it again, and print
#   (Δ allocations over the window − one /stats read) ÷ messages written in the window.
#
# Usage: scripts/alloc-per-message.sh [STYLE...]   (pair server-id session; default all)
# Env: RATE (round trips/s, default 20000), WINDOW (s, default 5), SOAK_LOAD_BIN,
# CARGO, CARGO_TARGET_DIR. Bounded: each run is ramp + 3 s warm-up + WINDOW + 2 s.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/relay.sh"

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
LOAD_BIN=${SOAK_LOAD_BIN:-$TARGET_DIR/release/shardrelay-load}
RATE=${RATE:-20000}
WINDOW=${WINDOW:-5}
WARMUP=3
styles=("$@")
[ ${#styles[@]} -gt 0 ] || styles=(pair server-id session)

log "building the counting relay into $TARGET_DIR/alloc-count"
(cd "$ROOT" && "$CARGO" build --release --quiet -p shardrelay --features alloc-count \
    --target-dir "$TARGET_DIR/alloc-count") || die "build failed"
(cd "$ROOT" && "$CARGO" build --release --quiet -p shardrelay-load) || die "build failed"
RELAY_BIN=$TARGET_DIR/alloc-count/release/shardrelay
OUT=$(mktemp -d "${TMPDIR:-/tmp}/shardrelay-alloc.XXXXXX")
LOAD_PID=""
cleanup() {
    local rc=$?
    if [ -n "$LOAD_PID" ]; then kill "$LOAD_PID" 2>/dev/null || true; fi
    relay_stop
    rm -rf "$OUT"
    return $rc
}
trap cleanup EXIT

# "allocations bytes messages_out" from one /stats read.
sample() {
    curl -fsS --max-time 5 "http://$RELAY_ADMIN/stats" | python3 -c 'import json,sys
s = json.load(sys.stdin)
print(s["allocations"]["count"], s["allocations"]["bytes"], s["totals"]["messages_out"])'
}

printf '%-10s %8s %10s | %12s %12s\n' style rate forwarded "allocs/msg" "bytes/msg"
for style in "${styles[@]}"; do
    case $style in
        pair) shape=(--pairs 50) ;;
        server-id) shape=(--binaries 10 --phones 9) ;;
        session) shape=(--sessions 50) ;;
        *) die "unknown style $style" ;;
    esac
    relay_start "$OUT/relay.log" --log-level warn
    "$LOAD_BIN" "$style" --target "$RELAY_PUBLIC" --admin "$RELAY_ADMIN" "${shape[@]}" \
        --rate "$RATE" --size 64 --warmup "${WARMUP}s" --duration "$((WINDOW + 2))s" \
        --no-relay-stats >"$OUT/load.txt" 2>&1 &
    LOAD_PID=$!
    deadline=$((SECONDS + 20))
    until [ "$(sample | cut -d' ' -f3)" -gt 0 ]; do
        [ $SECONDS -lt $deadline ] || die "no traffic through the relay ($style)"
        sleep 0.2
    done
    sleep "$WARMUP"
    s0=$(sample)
    s1=$(sample)
    sleep "$WINDOW"
    s2=$(sample)
    wait "$LOAD_PID" || die "load run failed ($style): $(tail -n 3 "$OUT/load.txt")"
    LOAD_PID=""
    relay_stop
    python3 - "$style" "$RATE" "$s0" "$s1" "$s2" <<'EOF'
import sys
style, rate = sys.argv[1], sys.argv[2]
(c0, b0, _), (c1, b1, m1), (c2, b2, m2) = (map(int, s.split()) for s in sys.argv[3:6])
stats_read_c, stats_read_b = c1 - c0, b1 - b0
n = max(m2 - m1, 1)
per_c = (c2 - c1 - stats_read_c) / n
per_b = (b2 - b1 - stats_read_b) / n
print(f"{style:<10} {rate:>8} {n:>10} | {per_c:>12.4f} {per_b:>12.1f}"
      f"   (one /stats read: {stats_read_c} allocations)")
EOF
done
