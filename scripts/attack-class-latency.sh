#!/usr/bin/env bash
# attack-class-latency.sh [CLASS ...]: for each attack class (or `none`), a fresh relay at
# --memory-limit 128MiB, a 100-pair open-loop load at 1,000 msg/s for 15 s on 127.0.0.1,
# and `shardrelay-load attack --classes CLASS` (niced, from 127.0.0.66) beside it; prints
# the healthy clients' round-trip latency row. Loopback only, bounded in time.
# BIN_DIR (default target/debug) holds shardrelay and shardrelay-load.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN_DIR=${BIN_DIR:-target/debug}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
[ $# -gt 0 ] || set -- none ping-no-read lone-pair-flood phone-flood code-guess idle-heads health-flood
for class in "$@"; do
    "$BIN_DIR/shardrelay" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
        --memory-limit 128MiB --log-level warn >"$OUT/relay.out" 2>"$OUT/relay.err" &
    relay=$!
    for _ in $(seq 100); do grep -q listening "$OUT/relay.out" && break; sleep 0.1; done
    public=$(grep -o 'public=[^ ]*' "$OUT/relay.out" | cut -d= -f2)
    attack=""
    if [ "$class" != none ]; then
        nice -n 19 "$BIN_DIR/shardrelay-load" attack --target "$public" --duration 20s \
            --classes "$class" --source-ip 127.0.0.66 >"$OUT/attack.out" 2>&1 &
        attack=$!
    fi
    "$BIN_DIR/shardrelay-load" pair --target "$public" --pairs 100 --rate 1000 \
        --duration 15s --no-relay-stats >"$OUT/pair.out" 2>&1 || true
    printf '%-16s %s\n' "$class" "$(grep -A1 '^latency' "$OUT/pair.out" | tail -1)"
    [ -z "$attack" ] || kill "$attack" 2>/dev/null || true
    kill "$relay" 2>/dev/null || true
    wait 2>/dev/null || true
done
