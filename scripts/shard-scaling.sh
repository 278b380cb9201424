#!/usr/bin/env bash
# One shard vs two (issue 9, point 6).
#
# Part 1, peak throughput: for pair and server-id at 100 and 1,000 connections, a fresh
# release relay per run and the closed-loop load of scripts/bench-compare.sh
# (`--inflight 8` per stream, 64-byte messages), in three placements:
#   1      --shards 1, no taskset: the shard pins itself to CPU 0, the load generator's two
#          workers pin themselves to CPUs 0 and 1 (the shard shares its core with one);
#   1-own  --shards 1 moved to CPU 1 (`taskset -a -p`), the load generator on CPU 0 with
#          one worker (`taskset -c 0 … --workers 1`): the one shard has a core to itself;
#   2      --shards 2, no taskset: one shard and one load worker on each CPU.
# Figures come from a steady window inside the load's measured window, sampled by this
# script: forwarded messages from /stats (`messages_out`), the relay's CPU
# (utime+stime of /proc/PID/stat), the load generator's CPU, everyone else's (the
# machine's busy time less both) and the hypervisor's steal, all over the same interval;
# plus the load generator's own round trips/s over its window.
#
# Part 2, handoff cost: `shardrelay-load idle` opens HANDOFF_CONNS fresh connections (pair
# and server-id), once as fast as it can and once paced at HANDOFF_RATE/s, against
# --shards 1 (no handoffs: the reference) and --shards 2. Once all are up: the relay's
# `handoff` histogram (queued to the owner's inbox → picked up there), the handoffs /
# adopted / accepted counters, the `handshake` histogram and the client's connect
# latency (what a handoff adds end to end), and the relay's CPU per connection so far.
#
# Usage: scripts/shard-scaling.sh                         (or `make shard-scaling`)
# Env: STYLES ("pair server-id"), CONNS ("100 1000"), PLACEMENTS ("1 1-own 2"), DURATION
# (load window, s, default 5), HANDOFF_CONNS (10000), HANDOFF_RATE (2000), SHARDRELAY_BIN,
# LOAD_BIN (or SOAK_LOAD_BIN), OUT_DIR (default <target>/shard-scaling/<stamp>), WAIT_QUIET
# (seconds to wait for an idle machine before each run, default 0).
# Bounded: ~9 s per throughput run (12), ≤ 10 s per handoff run (8): about 2.5 minutes.
# This script starts processes and takes the window's edges (lib/bench.sh `sample`); the
# figures and the tables are computed by `shardrelay-load measure scaling-row`,
# `handoff-row` and `scaling-table` (loadtest/src/measure/scaling.rs).
# The load generator shares the machine's cores with the relay: on a 2-core machine there
# is no placement that gives two shards and the load generator cores of their own.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/relay.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/relay.sh"
# shellcheck source-path=SCRIPTDIR source=lib/bench.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench.sh"

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
LOAD_BIN=${LOAD_BIN:-${SOAK_LOAD_BIN:-$TARGET_DIR/release/shardrelay-load}}
DURATION=${DURATION:-5}
WARMUP=2
read -r -a STYLE_LIST <<<"${STYLES:-pair server-id}"
read -r -a CONN_LIST <<<"${CONNS:-100 1000}"
read -r -a PLACEMENT_LIST <<<"${PLACEMENTS:-1 1-own 2}"
HANDOFF_CONNS=${HANDOFF_CONNS:-10000}
HANDOFF_RATE=${HANDOFF_RATE:-2000}
case $DURATION in '' | *[!0-9]*) die "DURATION must be whole seconds, not '$DURATION'" ;; esac
if [ "$DURATION" -lt 3 ] || [ "$DURATION" -gt 60 ]; then die "DURATION must be 3..60"; fi
if [ ! -x "$RELAY_BIN" ] || [ ! -x "$LOAD_BIN" ]; then
    die "build first: cargo build --release -p shardrelay -p shardrelay-load"
fi
command -v taskset >/dev/null || die "taskset is missing (util-linux)"
OUT=${OUT_DIR:-$TARGET_DIR/shard-scaling/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
RESULTS=$OUT/throughput.tsv
HANDOFFS=$OUT/handoff.tsv
: >"$RESULTS"
: >"$HANDOFFS"
LOAD_PID=""
cleanup() {
    local rc=$?
    if [ -n "$LOAD_PID" ]; then
        kill "$LOAD_PID" 2>/dev/null || true
        wait "$LOAD_PID" 2>/dev/null || true
    fi
    relay_stop
    return $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# throughput_run STYLE CONNS PLACEMENT
throughput_run() {
    local style=$1 conns=$2 placement=$3 shape tag shards pin=() workers=()
    tag=$style.$conns.$placement
    case $style in
        pair) shape=(--pairs $((conns / 2))) ;;
        server-id) shape=(--binaries $((conns / 10)) --phones 9) ;;
    esac
    case $placement in
        1) shards=1 ;;
        1-own) shards=1 pin=(taskset -c 0) workers=(--workers 1) ;;
        2) shards=2 ;;
        *) die "unknown placement $placement (1 | 1-own | 2)" ;;
    esac
    wait_quiet
    relay_start "$OUT/$tag.relay.log" --log-level warn --shards "$shards"
    if [ "$placement" = 1-own ]; then
        # Every thread of the relay (its shard included, already pinned to CPU 0) to CPU 1.
        taskset -a -p -c 1 "$RELAY_PID" >/dev/null || die "taskset failed"
    fi
    "${pin[@]}" "$LOAD_BIN" "$style" --target "$RELAY_PUBLIC" --admin "$RELAY_ADMIN" \
        "${shape[@]}" "${workers[@]}" --inflight 8 --size 64 --warmup "${WARMUP}s" \
        --duration "${DURATION}s" --drain 2s --source-ips 127.0.0.1-127.0.0.4 \
        --json "$OUT/$tag.json" >"$OUT/$tag.load.txt" 2>"$OUT/$tag.load.err" &
    LOAD_PID=$!
    local deadline=$((SECONDS + 60))
    until [ "$(messages_out 2>/dev/null || echo 0)" -gt 0 ]; do
        [ $SECONDS -lt $deadline ] || die "no traffic through the relay ($tag)"
        kill -0 "$LOAD_PID" 2>/dev/null || die "load exited early ($tag): $(tail -n 3 "$OUT/$tag.load.txt")"
        sleep 0.2
    done
    # Inside the load's measured window: past its warm-up, ending a second before its end.
    sleep "$((WARMUP + 1))"
    sample "$OUT/$tag.before" "$RELAY_ADMIN" "$RELAY_PID" "$LOAD_PID"
    sleep "$((DURATION - 2))"
    sample "$OUT/$tag.after" "$RELAY_ADMIN" "$RELAY_PID" "$LOAD_PID"
    local rc=0
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=""
    relay_alive
    curl -fsS --max-time 5 -o "$OUT/$tag.end.json" "http://$RELAY_ADMIN/stats"
    relay_stop
    [ "$rc" -eq 0 ] || die "load run failed ($tag, exit $rc): $(tail -n 3 "$OUT/$tag.load.txt")"
    "$LOAD_BIN" measure scaling-row --base "$OUT/$tag" --style "$style" --connections "$conns" \
        --placement "$placement" >>"$RESULTS" || die "no figures for $tag"
    log "$tag: $(tail -n 1 "$RESULTS")"
}

# handoff_run STYLE RATE SHARDS: HANDOFF_CONNS fresh connections (RATE 0: unpaced); once
# they are all up, /stats and the relay's CPU so far (the ramp: accepts, heads, upgrades,
# handoffs).
handoff_run() {
    local style=$1 rate=$2 shards=$3 tag extra=()
    tag=handoff.$style.$rate.$shards
    if [ "$style" = server-id ]; then extra=(--phones 9); fi
    wait_quiet
    relay_start "$OUT/$tag.relay.log" --log-level warn --shards "$shards"
    local start
    start=$("$LOAD_BIN" measure proc --pid "$RELAY_PID" cpu-ticks)
    timeout 60 "$LOAD_BIN" idle --style "$style" "${extra[@]}" --connections "$HANDOFF_CONNS" \
        --connect-rate "$rate" --duration 2s --setup-timeout 40s \
        --source-ips 127.0.0.1-127.0.0.4 --target "$RELAY_PUBLIC" --admin "$RELAY_ADMIN" \
        --no-relay-stats --json "$OUT/$tag.load.json" >"$OUT/$tag.load.txt" 2>"$OUT/$tag.load.err" &
    LOAD_PID=$!
    local deadline=$((SECONDS + 50))
    until grep -qs '^all connections up' "$OUT/$tag.load.txt"; do
        [ $SECONDS -lt $deadline ] || die "connections not up in time ($tag)"
        kill -0 "$LOAD_PID" 2>/dev/null || die "idle run ended early ($tag): $(tail -n 3 "$OUT/$tag.load.txt")"
        sleep 0.05
    done
    local up
    up=$("$LOAD_BIN" measure proc --pid "$RELAY_PID" cpu-ticks)
    curl -fsS --max-time 5 -o "$OUT/$tag.json" "http://$RELAY_ADMIN/stats"
    local rc=0
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=""
    relay_alive
    relay_stop
    [ "$rc" -eq 0 ] || die "idle run failed ($tag, exit $rc): $(tail -n 3 "$OUT/$tag.load.txt")"
    "$LOAD_BIN" measure handoff-row --stats "$OUT/$tag.json" --report "$OUT/$tag.load.json" \
        --style "$style" --rate "$rate" --shards "$shards" --cpu-ticks "$start" "$up" \
        >>"$HANDOFFS" || die "no figures for $tag"
    log "$tag: $(tail -n 1 "$HANDOFFS")"
}

for style in "${STYLE_LIST[@]}"; do
    for conns in "${CONN_LIST[@]}"; do
        for placement in "${PLACEMENT_LIST[@]}"; do
            throughput_run "$style" "$conns" "$placement"
        done
    done
done
for style in "${STYLE_LIST[@]}"; do
    for rate in 0 "$HANDOFF_RATE"; do
        for shards in 1 2; do
            handoff_run "$style" "$rate" "$shards"
        done
    done
done

echo
echo "shard scaling — $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, Linux $(uname -r)"
echo "closed loop, --inflight 8 per stream, 64 B; a $((DURATION - 2)) s window inside each load run's ${DURATION} s"
echo "CPU columns in cores (1.00 = one core busy); forwarded = relayed messages/s (two per round trip)"
"$LOAD_BIN" measure scaling-table --throughput "$RESULTS" --handoffs "$HANDOFFS" |
    tee "$OUT/table.md"
echo
echo "load reports, /stats samples and relay logs: $OUT"
