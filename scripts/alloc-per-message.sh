#!/usr/bin/env bash
# Allocations per relayed message in steady state (issue 9, point 4). A relay built with
# the counting allocator (`--features alloc-count`, into its own target directory so the
# ordinary release binary is never replaced by the counting one) reports its process-wide
# allocation count in /stats. For each style:
#   1. start the relay and drive the style at a fixed open-loop rate (100 connections,
#      SIZE-byte messages);
#   2. after the warm-up read /stats, let SECONDS of traffic pass, read it again;
#   3. once the load has ended, read /stats four times back to back: the smallest
#      difference is what serving one /stats read allocates (measured after the traffic,
#      so the per-mode histograms it copies exist, as they did in the window);
#   4. print (Δ allocations − one /stats read) ÷ Δ messages written (`messages_out`),
#      and the same for bytes requested.
# The window holds exactly one /stats read's worth of the relay's own work (the rest of
# the first response and the start of the second), which step 3 measured.
#
# Usage: scripts/alloc-per-message.sh [STYLE [SECONDS]]
#   STYLE: pair | server-id | session (default: all three) | session-ws (6 Macs × 16
#   browsers: per written message, a fan-out's one shared copy is 1/16 allocation) |
#   session-ws-1 (50 Macs × 1 browser); SECONDS: window (default 10)
# Env: RATE (round trips/s for the whole run, default 20000: 40,000 forwarded messages/s),
# SIZE (message payload, default 64; payloads over 512 B are allocated, see ws::payload),
# ALLOC_TLS=1 (the relay with a throw-away P-256 pair minted by openssl, the load over
# wss://), SOAK_LOAD_BIN (load generator; default the workspace's release build), CARGO,
# CARGO_TARGET_DIR, SHARDRELAY_DRIVER (reaches the relay).
# Bounded: per style, ramp (≤ 20 s) + 3 s warm-up + SECONDS + 3 s; the load generator's
# own --duration ends it even if this script is killed. What is read and computed is
# `shardrelay-load measure alloc-per-message`; this script builds and starts processes.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/relay.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/relay.sh"

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
LOAD_BIN=${SOAK_LOAD_BIN:-$TARGET_DIR/release/shardrelay-load}
RATE=${RATE:-20000}
SIZE=${SIZE:-64}
WARMUP=3
styles=(pair server-id session)
if [ $# -ge 1 ] && [ "$1" != all ]; then styles=("$1"); fi
WINDOW=${2:-10}
case $WINDOW in '' | *[!0-9]*) die "SECONDS must be a whole number, not '$WINDOW'" ;; esac
[ "$WINDOW" -ge 1 ] || die "SECONDS must be at least 1"

log "building the counting relay into $TARGET_DIR/alloc-count"
(cd "$ROOT" && "$CARGO" build --release --quiet -p shardrelay --features alloc-count \
    --target-dir "$TARGET_DIR/alloc-count") || die "cargo build --features alloc-count failed"
if [ -z "${SOAK_LOAD_BIN:-}" ]; then
    log "building the load generator"
    (cd "$ROOT" && "$CARGO" build --release --quiet -p shardrelay-load) ||
        die "cargo build -p shardrelay-load failed"
fi
[ -x "$LOAD_BIN" ] || die "no load generator at $LOAD_BIN"
# The counting build, not the ordinary one lib/relay.sh would start (relay_start reads it).
# shellcheck disable=SC2034
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

relay_tls=()
load_scheme=""
load_tls=()
if [ "${ALLOC_TLS:-0}" = 1 ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -keyout "$OUT/key.pem" -out "$OUT/cert.pem" -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -addext "basicConstraints=critical,CA:FALSE" 2>/dev/null || die "openssl could not mint a test pair"
    relay_tls=(--tls-cert "$OUT/cert.pem" --tls-key "$OUT/key.pem")
    load_scheme="wss://"
    load_tls=(--tls-ca "$OUT/cert.pem")
    log "over TLS (wss://)"
fi

printf '%-10s %7s %6s %6s %10s | %10s %10s | %s\n' style rate conns secs forwarded \
    "allocs/msg" "bytes/msg" "one /stats read"
for style in "${styles[@]}"; do
    case $style in
        pair) shape=(--pairs 50) ;;
        server-id) shape=(--binaries 10 --phones 9) ;;
        session) shape=(--sessions 50) ;;
        # `/ws` fan-out: RATE is Mac messages/s, each written once per browser.
        session-ws) shape=(--sessions 6 --browsers 16) ;;
        session-ws-1) shape=(--sessions 50 --browsers 1) ;;
        *) die "unknown style $style (pair, server-id, session, session-ws, session-ws-1)" ;;
    esac
    relay_start "$OUT/relay.log" --log-level warn "${relay_tls[@]}"
    "$LOAD_BIN" "${style%-1}" --target "$load_scheme$RELAY_PUBLIC" --admin "$RELAY_ADMIN" \
        "${load_tls[@]}" "${shape[@]}" \
        --rate "$RATE" --size "$SIZE" --warmup "${WARMUP}s" --duration "$((WINDOW + 3))s" \
        --no-relay-stats >"$OUT/load.txt" 2>&1 &
    LOAD_PID=$!
    # The measurement (loadtest/src/measure/alloc.rs): wait until traffic flows, the
    # warm-up, the window's two reads, then, once the load has ended, the idle reads.
    "$LOAD_BIN" measure alloc-per-message --admin "$RELAY_ADMIN" --pid "$RELAY_PID" \
        --load-pid "$LOAD_PID" --warmup "${WARMUP}s" --window "${WINDOW}s" \
        --style "$style" --rate "$RATE" || { relay_alive; die "measuring $style failed"; }
    wait "$LOAD_PID" || die "load run failed ($style): $(tail -n 3 "$OUT/load.txt")"
    LOAD_PID=""
    relay_stop
done
