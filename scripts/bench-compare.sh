#!/usr/bin/env bash
# shardrelay beside an ordinary relay (benches/baseline: tokio + tokio-tungstenite +
# one Arc<Mutex<HashMap>>), same load generator, same machine, one run.
#
# For each scenario (pair, server-id) and pace (closed-loop peak, open-loop fixed
# rate) it starts each relay fresh on 127.0.0.1:0, points shardrelay-load at it
# through `shardrelay-load measure cpu-during` (the relay's utime+stime from /proc
# before and after, the load's own CPU, the rest of the machine's), and prints one
# table with `measure bench-table` (loadtest/src/measure/bench.rs). JSON reports and
# logs stay in target/bench-compare/<stamp>/.
#
# Usage: scripts/bench-compare.sh        (or `make bench-compare`)
# Knobs (environment): DURATION WARMUP DRAIN PAIRS BINARIES PHONES INFLIGHT RATE SIZE;
# NO_BUILD=1 reuses the release binaries already built; SHARDRELAY_BIN / LOAD_BIN name
# other shardrelay / shardrelay-load binaries (e.g. built from a clean checkout).
# SHARDRELAY_ARGS: extra shardrelay flags (e.g. "--flush-after-reads 4096").
# Placement: RELAY_CPUS and LOAD_CPUS (taskset lists, e.g. RELAY_CPUS=1 LOAD_CPUS=0) run
# each relay and the load generator on CPUs of their own. Both relays size themselves to
# the CPUs they are given (shardrelay: one shard per CPU; the baseline: one tokio worker
# per CPU), so each relay gets the same cores and the load generator never steals them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CARGO="${CARGO:-cargo}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
DRAIN="${DRAIN:-2s}"
PAIRS="${PAIRS:-100}"
BINARIES="${BINARIES:-10}"
PHONES="${PHONES:-10}"
INFLIGHT="${INFLIGHT:-8}"
RATE="${RATE:-10000}"
SIZE="${SIZE:-64}"
RELAY_CPUS="${RELAY_CPUS:-}"
LOAD_CPUS="${LOAD_CPUS:-}"
read -r -a SHARDRELAY_EXTRA <<<"${SHARDRELAY_ARGS:-}"
READY_TIMEOUT_S=20
STOP_TIMEOUT_S=10

WORKSPACE_TARGET="${CARGO_TARGET_DIR:-./target}"
SHARDRELAY="${SHARDRELAY_BIN:-$WORKSPACE_TARGET/release/shardrelay}"
LOAD="${LOAD_BIN:-$WORKSPACE_TARGET/release/shardrelay-load}"
BASELINE=./benches/baseline/target/release/shardrelay-baseline
OUT="$ROOT/target/bench-compare/$(date -u +%Y%m%dT%H%M%SZ)"
TAGS=()
RELAY_PID=""
LOAD_PID=""

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

# Stops the relay of the current run: SIGTERM, a bounded wait, then SIGKILL.
stop_relay() {
    [ -n "$RELAY_PID" ] || return 0
    kill -TERM "$RELAY_PID" 2>/dev/null || true
    local tries=$((STOP_TIMEOUT_S * 10))
    while [ "$tries" -gt 0 ] && kill -0 "$RELAY_PID" 2>/dev/null; do
        sleep 0.1
        tries=$((tries - 1))
    done
    kill -KILL "$RELAY_PID" 2>/dev/null || true
    wait "$RELAY_PID" 2>/dev/null || true
    RELAY_PID=""
}
stop_all() {
    if [ -n "$LOAD_PID" ]; then
        kill -TERM "$LOAD_PID" 2>/dev/null || true
        wait "$LOAD_PID" 2>/dev/null || true
        LOAD_PID=""
    fi
    stop_relay
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# on_cpus LIST CMD...: becomes CMD restricted to the CPUs in LIST (all of them if LIST
# is empty). Only for `on_cpus … &`: it execs, so `$!` is CMD's own pid.
on_cpus() {
    local cpus=$1
    shift
    if [ -n "$cpus" ]; then
        exec taskset -c "$cpus" "$@"
    fi
    exec "$@"
}

# start_relay NAME LOG: starts it on port 0, waits for its ready line, sets RELAY_PID,
# PUBLIC and ADMIN.
start_relay() {
    local name=$1 log=$2
    case "$name" in
        shardrelay)
            on_cpus "$RELAY_CPUS" "$SHARDRELAY" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
                --log-level warn "${SHARDRELAY_EXTRA[@]}" >"$log" 2>"$log.err" &
            ;;
        baseline)
            on_cpus "$RELAY_CPUS" "$BASELINE" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
                >"$log" 2>"$log.err" &
            ;;
        *) die "unknown relay $name" ;;
    esac
    RELAY_PID=$!
    local tries=$((READY_TIMEOUT_S * 20))
    while [ "$tries" -gt 0 ] && ! grep -qs 'listening public=' "$log"; do
        kill -0 "$RELAY_PID" 2>/dev/null || die "$name exited before its ready line (see $log.err)"
        sleep 0.05
        tries=$((tries - 1))
    done
    grep -q 'listening public=' "$log" || die "$name: no ready line in ${READY_TIMEOUT_S}s"
    PUBLIC="$(grep -o 'public=[^ ]*' "$log" | head -n1 | cut -d= -f2)"
    ADMIN="$(grep -o 'admin=[^ ]*' "$log" | head -n1 | cut -d= -f2)"
}

# run_one SCENARIO PACE RELAY: one fresh relay, one load run, one line in $RESULTS.
run_one() {
    local scenario=$1 pace=$2 relay=$3
    local tag="$scenario.$pace.$relay"
    local shape pacing
    case "$scenario" in
        pair) shape=(--pairs "$PAIRS") ;;
        server-id) shape=(--binaries "$BINARIES" --phones "$PHONES") ;;
    esac
    case "$pace" in
        peak) pacing=(--inflight "$INFLIGHT") ;;
        rate) pacing=(--rate "$RATE") ;;
    esac
    start_relay "$relay" "$OUT/$tag.relay.log"
    log "$tag: $relay on $PUBLIC (admin $ADMIN), pid $RELAY_PID"
    local rc=0
    on_cpus "$LOAD_CPUS" "$LOAD" measure cpu-during --pid "$RELAY_PID" --json "$OUT/$tag.cpu.json" -- \
        "$LOAD" "$scenario" --target "$PUBLIC" --admin "$ADMIN" "${shape[@]}" "${pacing[@]}" \
        --size "$SIZE" --duration "$DURATION" --warmup "$WARMUP" --drain "$DRAIN" \
        --json "$OUT/$tag.json" >"$OUT/$tag.txt" 2>"$OUT/$tag.progress" &
    LOAD_PID=$!
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=""
    kill -0 "$RELAY_PID" 2>/dev/null || die "$tag: $relay died during the run"
    stop_relay
    [ -s "$OUT/$tag.json" ] && [ -s "$OUT/$tag.cpu.json" ] ||
        die "$tag: no JSON report (load exit $rc, see $OUT/$tag.txt)"
    [ "$rc" -eq 0 ] || log "$tag: load generator exit $rc (see $OUT/$tag.txt)"
    TAGS+=("$tag")
}

main() {
    if [ -z "${NO_BUILD:-}" ]; then
        log "building shardrelay, shardrelay-load and the baseline (release)"
        if [ -z "${SHARDRELAY_BIN:-}${LOAD_BIN:-}" ]; then
            "$CARGO" build --release -p shardrelay -p shardrelay-load
        fi
        # Its own target dir even under CARGO_TARGET_DIR: it is its own workspace.
        "$CARGO" build --release --manifest-path benches/baseline/Cargo.toml \
            --target-dir benches/baseline/target
    fi
    local bin
    for bin in "$SHARDRELAY" "$LOAD" "$BASELINE"; do
        [ -x "$bin" ] || die "$bin is missing (run without NO_BUILD)"
    done
    mkdir -p "$OUT"
    local scenario pace relay
    for scenario in pair server-id; do
        for pace in peak rate; do
            for relay in shardrelay baseline; do
                run_one "$scenario" "$pace" "$relay"
            done
        done
    done
    echo
    echo "bench-compare $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores ($(uname -r))"
    echo "relays: $SHARDRELAY vs $BASELINE; load: $LOAD"
    echo "pair: $PAIRS pairs, A->B->A echo; server-id: $BINARIES binaries x $PHONES phones," \
        "phone->binary->phone echo; $SIZE B messages"
    echo "peak: --inflight $INFLIGHT per stream (closed loop); rate: --rate $RATE msg/s (open loop)"
    echo "CPUs: relays ${RELAY_CPUS:-any}, load generator ${LOAD_CPUS:-any};" \
        "shardrelay flags: ${SHARDRELAY_ARGS:-(defaults)}"
    echo "$DURATION measured after $WARMUP warm-up; relay CPU = utime+stime over the whole" \
        "load run (ramp, warm-up, window, drain); msgs/CPU-s = round trips received ÷ relay CPU;"
    echo "other CPU = machine busy time during the run less relay and load generator (0 on a quiet box)"
    echo "ratio s/b = shardrelay / baseline: above 1 is better for msgs/s and msgs/CPU-s," \
        "below 1 is better for latency and relay CPU"
    echo
    local table_rc=0
    "$LOAD" measure bench-table --dir "$OUT" "${TAGS[@]}" | tee "$OUT/table.txt" || table_rc=$?
    echo
    echo "reports: $OUT"
    [ "$table_rc" -eq 0 ] || die "some load runs did not exit 0 (column 'exit'; see the reports)"
}

main "$@"
