#!/usr/bin/env bash
# Relay CPU per forwarded message at fixed open-loop rates (#20 point 4): shardrelay, the
# tokio baseline and the raw-copy reference (benches/baseline --raw-copy: handshake, then
# copy_bidirectional between the two sides of a pair) in one run, each relay pinned to
# RELAY_CPU and the load generator to LOAD_CPU (taskset), so each relay runs on one core
# (shardrelay: one shard; the baseline: one tokio worker).
#
# For each case a fresh relay on 127.0.0.1:0 and `shardrelay-load <style> --rate R
# --size SIZE`; after the ramp and warm-up the relay's utime+stime is read at the start
# and end of a WINDOW-second window (a sampling window, not synchronisation), and
#   CPU-s per million forwarded messages = CPU delta ÷ (round trips/s × 2 × WINDOW) × 1e6
# (pair and server-id both forward 2 messages per round trip: A→B→A, phone→binary→phone).
# Round trips/s is the load generator's measured throughput over its own window. The
# window's CPU and the table are `shardrelay-load measure cpu-window` and `measure
# cpu-table` (loadtest/src/measure/cpu_per_message.rs).
# Optional: PERF=1 records `perf record -g` of shardrelay over the pair 20,000/s window
# and prints the top symbols (needs perf).
#
# ROUNDS=N repeats every case N times, round by round (each case's relays back to
# back), compares each run with the raw copy of its own round, and ends with each
# relay's median over the rounds: on a box whose absolute figures drift between hours
# that median of interleaved ratios is the figure to quote.
#
# Usage: scripts/cpu-per-message.sh          (or `make cpu-per-message`)
# Env: CASES (default "pair:20000 pair:50000 server-id:10000"), RELAYS (default
# "shardrelay baseline raw"; raw only runs pair cases), ROUNDS (1), WINDOW (default 6 s),
# SIZE (64), PAIRS (100), BINARIES (10), PHONES (10), RELAY_CPU (1), LOAD_CPU (0), OUT_DIR.
# Bounded: each case is ~3 s ramp/warm-up + WINDOW + 2 s; the default 8 runs ~1.5 min a
# round.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SHARDRELAY=${SHARDRELAY_BIN:-$TARGET_DIR/release/shardrelay}
LOAD=${LOAD_BIN:-$TARGET_DIR/release/shardrelay-load}
BASELINE=./benches/baseline/target/release/shardrelay-baseline
read -r -a CASE_LIST <<<"${CASES:-pair:20000 pair:50000 server-id:10000}"
read -r -a RELAY_LIST <<<"${RELAYS:-shardrelay baseline raw}"
ROUNDS=${ROUNDS:-1}
WINDOW=${WINDOW:-6}
SIZE=${SIZE:-64}
PAIRS=${PAIRS:-100}
BINARIES=${BINARIES:-10}
PHONES=${PHONES:-10}
RELAY_CPU=${RELAY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
WARMUP=3
OUT=${OUT_DIR:-$TARGET_DIR/cpu-per-message/$(date -u +%Y%m%dT%H%M%SZ)}
TAGS=()
RELAY_PID=""
LOAD_PID=""

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
stop() {
    local pid
    for pid in "$LOAD_PID" "$RELAY_PID"; do
        [ -n "$pid" ] || continue
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    LOAD_PID=""
    RELAY_PID=""
}
trap stop EXIT
trap 'exit 130' INT TERM

# start RELAY LOG: fresh relay pinned to RELAY_CPU; sets RELAY_PID and PUBLIC, ADMIN.
start() {
    local name=$1 log=$2
    case $name in
        shardrelay) taskset -c "$RELAY_CPU" "$SHARDRELAY" --listen 127.0.0.1:0 \
            --admin-listen 127.0.0.1:0 --log-level warn >"$log" 2>"$log.err" & ;;
        baseline) taskset -c "$RELAY_CPU" "$BASELINE" --listen 127.0.0.1:0 \
            --admin-listen 127.0.0.1:0 >"$log" 2>"$log.err" & ;;
        raw) taskset -c "$RELAY_CPU" "$BASELINE" --raw-copy --listen 127.0.0.1:0 \
            --admin-listen 127.0.0.1:0 >"$log" 2>"$log.err" & ;;
    esac
    RELAY_PID=$!
    local tries=200
    while ! grep -qs 'listening public=' "$log"; do
        tries=$((tries - 1))
        [ $tries -gt 0 ] && kill -0 "$RELAY_PID" 2>/dev/null || die "$name did not start ($log.err)"
        sleep 0.05
    done
    PUBLIC=$(grep -o 'public=[^ ]*' "$log" | head -n1 | cut -d= -f2)
    ADMIN=$(grep -o 'admin=[^ ]*' "$log" | head -n1 | cut -d= -f2)
}

# run_case RELAY STYLE RATE [ROUND]: one run: its report (TAG.json) and CPU window
# (TAG.window.json); TAG is RELAY.STYLE.RATE, with .rROUND when in rounds.
run_case() {
    local relay=$1 style=$2 rate=$3 tag="$1.$2.$3${4:+.r$4}" shape extra=()
    case $style in
        pair) shape=(--pairs "$PAIRS") ;;
        server-id) shape=(--binaries "$BINARIES" --phones "$PHONES") ;;
    esac
    [ "$relay" = raw ] && extra=(--accept-masked)
    start "$relay" "$OUT/$tag.relay.log"
    taskset -c "$LOAD_CPU" "$LOAD" "$style" --target "$PUBLIC" --admin "$ADMIN" "${shape[@]}" \
        --rate "$rate" --size "$SIZE" --warmup "${WARMUP}s" --duration "$((WINDOW + 2))s" \
        --drain 2s --no-relay-stats --json "$OUT/$tag.json" "${extra[@]}" \
        >"$OUT/$tag.txt" 2>"$OUT/$tag.progress" &
    LOAD_PID=$!
    # Sampling window: the ramp of 100-200 connections takes well under a second here,
    # then WARMUP; the window ends before the load's measured window does.
    sleep $((WARMUP + 1))
    local perf_pid=""
    if [ -n "${PERF:-}" ] && [ "$relay" = shardrelay ] && [ "$style:$rate" = pair:20000 ] &&
        [ ! -e "$OUT/perf.data" ]; then
        perf record -g -o "$OUT/perf.data" -p "$RELAY_PID" -- sleep "$WINDOW" 2>/dev/null &
        perf_pid=$!
    fi
    "$LOAD" measure cpu-window --pid "$RELAY_PID" --window "${WINDOW}s" --json "$OUT/$tag.window.json"
    [ -n "$perf_pid" ] && wait "$perf_pid"
    local rc=0
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=""
    stop
    [ -s "$OUT/$tag.json" ] || die "$tag: no report (exit $rc; $OUT/$tag.txt)"
    TAGS+=("$tag")
}

main() {
    for bin in "$SHARDRELAY" "$LOAD" "$BASELINE"; do
        [ -x "$bin" ] || die "$bin missing: cargo build --release -p shardrelay -p shardrelay-load" \
            "and cargo build --release --manifest-path benches/baseline/Cargo.toml"
    done
    mkdir -p "$OUT"
    local c style rate relay round round_tag=""
    for round in $(seq 1 "$ROUNDS"); do
        [ "$ROUNDS" -gt 1 ] && round_tag=$round
        for c in "${CASE_LIST[@]}"; do
            style=${c%%:*}
            rate=${c##*:}
            for relay in "${RELAY_LIST[@]}"; do
                [ "$relay" = raw ] && [ "$style" != pair ] && continue
                log "${round_tag:+round $round: }$style $rate/s on $relay"
                run_case "$relay" "$style" "$rate" "$round_tag"
            done
        done
    done
    echo "cpu-per-message $(date -u +%Y-%m-%dT%H:%M:%SZ); relay on CPU $RELAY_CPU, load on CPU" \
        "$LOAD_CPU; $SIZE B messages; ${WINDOW}s window; $ROUNDS round(s);" \
        "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
    "$LOAD" measure cpu-table --dir "$OUT" "${TAGS[@]}" | tee "$OUT/table.txt"
    if [ -s "$OUT/perf.data" ]; then
        echo
        echo "perf: shardrelay, pair 20000/s, top symbols (self %):"
        perf report -i "$OUT/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null |
            grep -v '^#' | grep -v '^$' | grep '%' | head -40 | tee "$OUT/perf-top.txt"
    fi
    echo "reports: $OUT"
}

main "$@"
