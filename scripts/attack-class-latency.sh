#!/usr/bin/env bash
# attack-class-latency.sh [CLASS ...]: for each attack class (or `none`), a fresh relay at
# --memory-limit 128MiB, a 100-pair open-loop load at 1,000 msg/s for 15 s on 127.0.0.1,
# and `shardrelay-load attack --classes CLASS` (niced, from 127.0.0.66) beside it; prints
# the healthy clients' round-trip latency row (as the load's own report prints it: the
# figures are the load generator's; this script only starts processes). Loopback only,
# bounded in time. BIN_DIR (default target/debug) holds shardrelay and shardrelay-load;
# ATTACK_SCHED (default `nice -n 19`) is the command the attack client runs under.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN_DIR=${BIN_DIR:-target/debug}
SHARDRELAY_BIN=$BIN_DIR/shardrelay
# shellcheck source-path=SCRIPTDIR source=lib/relay.sh
source scripts/lib/relay.sh
OUT=$(mktemp -d)
attack=""
trap '[ -z "$attack" ] || kill "$attack" 2>/dev/null || true; relay_stop; rm -rf "$OUT"' EXIT
[ $# -gt 0 ] || set -- none ping-no-read lone-pair-flood phone-flood code-guess idle-heads health-flood
for class in "$@"; do
    relay_start "$OUT/relay.log" --memory-limit 128MiB --log-level warn
    attack=""
    if [ "$class" != none ]; then
        ${ATTACK_SCHED:-nice -n 19} "$BIN_DIR/shardrelay-load" attack --target "$RELAY_PUBLIC" --duration 20s \
            --classes "$class" --source-ip 127.0.0.66 >"$OUT/attack.out" 2>&1 &
        attack=$!
    fi
    "$BIN_DIR/shardrelay-load" pair --target "$RELAY_PUBLIC" --pairs 100 --rate 1000 \
        --duration 15s --no-relay-stats >"$OUT/pair.out" 2>&1 || true
    printf '%-16s %s\n' "$class" "$(grep -A1 '^latency' "$OUT/pair.out" | tail -1)"
    if [ -n "$attack" ]; then
        kill "$attack" 2>/dev/null || true
        wait "$attack" 2>/dev/null || true
        attack=""
    fi
    relay_stop
done
