#!/usr/bin/env bash
# Connection storm (#20 point 3): N connections opened as fast as the relay accepts them,
# every style's upgrade, spread over several 127.0.0.x source addresses, against
# shardrelay and the tokio baseline (benches/baseline) in one run; then shardrelay again
# with --per-ip-rate, where clients that get a 429 back off and retry
# (`shardrelay-load --retry-rate-limited`), so the storm is shaped, not failed.
#
# Each case: a fresh relay pinned to RELAY_CPU (one shard / one tokio worker), and
# `shardrelay-load idle --style S --connections N --connect-rate 0` pinned to LOAD_CPU.
# The relay's utime+stime is read before the load starts and when the load prints "all
# connections up" (the ramp's end), so "CPU-s" is the relay's CPU for N accepts and
# upgrades and "upg/CPU-s" is upgrades per second of one core fully busy. conn/s is the
# wall-clock rate over the ramp; connect p50/p99/max are TCP connect plus upgrade as the
# client saw it (with retries: from the first attempt).
#
# Usage: scripts/storm.sh               (or `make storm`)
# Env: N (default 19000; the per-process descriptor limit here is 20,000 and the relay
# and the load each hold N), STYLES (shardrelay: "server-id pair session echo"; the
# baseline only has server-id and pair), SOURCES (default 127.0.0.1-127.0.0.16),
# PER_IP_RATE (default 200/s per source; 0 skips the shaped run), RELAY_CPU (1),
# LOAD_CPU (0), OUT_DIR. Bounded: each case is the ramp (seconds) + 1 s hold + close;
# loopback only.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SHARDRELAY=${SHARDRELAY_BIN:-$TARGET_DIR/release/shardrelay}
LOAD=${LOAD_BIN:-$TARGET_DIR/release/shardrelay-load}
BASELINE=./benches/baseline/target/release/shardrelay-baseline
N=${N:-19000}
read -r -a STYLE_LIST <<<"${STYLES:-server-id pair session echo}"
SOURCES=${SOURCES:-127.0.0.1-127.0.0.16}
PER_IP_RATE=${PER_IP_RATE:-200}
RELAY_CPU=${RELAY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
OUT=${OUT_DIR:-$TARGET_DIR/storm/$(date -u +%Y%m%dT%H%M%SZ)}
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

ticks() { "$LOAD" measure proc --pid "$1" cpu-ticks; }

# start NAME LOG EXTRA...: a fresh relay pinned to RELAY_CPU; sets RELAY_PID, PUBLIC, ADMIN.
start() {
    local name=$1 log=$2
    shift 2
    case $name in
        baseline) taskset -c "$RELAY_CPU" "$BASELINE" --listen 127.0.0.1:0 \
            --admin-listen 127.0.0.1:0 >"$log" 2>"$log.err" & ;;
        *) taskset -c "$RELAY_CPU" "$SHARDRELAY" --listen 127.0.0.1:0 \
            --admin-listen 127.0.0.1:0 --log-level warn --enable-echo "$@" >"$log" 2>"$log.err" & ;;
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

# run_case LABEL RELAY STYLE [RELAY FLAGS...]: one run (TAG.json, TAG.ticks); the table is
# `shardrelay-load measure storm-table` (loadtest/src/measure/storm.rs).
run_case() {
    local label=$1 relay=$2 style=$3 tag="$1.$3"
    shift 3
    local retry=()
    [ "$label" = shaped ] && retry=(--retry-rate-limited)
    start "$relay" "$OUT/$tag.relay.log" "$@"
    local t0 t1=""
    t0=$(ticks "$RELAY_PID")
    taskset -c "$LOAD_CPU" "$LOAD" idle --style "$style" --target "$PUBLIC" --admin "$ADMIN" \
        --connections "$N" --phones 4 --connect-rate 0 --source-ips "$SOURCES" --warmup 0s \
        --duration 1s --drain 0s --setup-timeout 120s --connect-timeout 30s --no-relay-stats \
        --json "$OUT/$tag.json" "${retry[@]}" >"$OUT/$tag.txt" 2>"$OUT/$tag.progress" &
    LOAD_PID=$!
    # Poll (20 ms) for the ramp's end; bounded by the load's own --setup-timeout.
    while kill -0 "$LOAD_PID" 2>/dev/null; do
        if grep -qs 'all connections up' "$OUT/$tag.txt"; then
            t1=$(ticks "$RELAY_PID")
            break
        fi
        sleep 0.02
    done
    local rc=0
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=""
    [ -n "$t1" ] || t1=$(ticks "$RELAY_PID")
    stop
    [ -s "$OUT/$tag.json" ] || die "$tag: no report (exit $rc; $OUT/$tag.txt)"
    echo "$t0 $t1" >"$OUT/$tag.ticks"
    TAGS+=("$tag")
}

main() {
    for bin in "$SHARDRELAY" "$LOAD" "$BASELINE"; do
        [ -x "$bin" ] || die "$bin missing (cargo build --release; baseline: make bench-compare builds it)"
    done
    [ "$N" -le 19500 ] || die "N=$N: the relay and the load each hold N descriptors (limit $(ulimit -n))"
    mkdir -p "$OUT"
    local style
    for style in "${STYLE_LIST[@]}"; do
        log "storm: $N × $style on shardrelay"
        run_case shardrelay shardrelay "$style"
        if [ "$style" = server-id ] || [ "$style" = pair ]; then
            log "storm: $N × $style on the baseline"
            run_case baseline baseline "$style"
        fi
    done
    if [ "$PER_IP_RATE" != 0 ]; then
        log "storm: $N × pair on shardrelay --per-ip-rate $PER_IP_RATE (clients retry 429)"
        run_case shaped shardrelay pair --per-ip-rate "$PER_IP_RATE"
    fi
    echo "storm $(date -u +%Y-%m-%dT%H:%M:%SZ): $N connections per case from $SOURCES;" \
        "relay on CPU $RELAY_CPU, load on CPU $LOAD_CPU; shaped: --per-ip-rate $PER_IP_RATE;" \
        "load average $(cut -d' ' -f1-3 /proc/loadavg)"
    "$LOAD" measure storm-table --dir "$OUT" "${TAGS[@]}" | tee "$OUT/table.txt"
    echo "reports: $OUT"
}

main "$@"
