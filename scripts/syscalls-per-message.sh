#!/usr/bin/env bash
# Syscalls per relayed message (issue 9, point 5). For each style, driver and open-loop
# rate: a fresh release relay on 127.0.0.1:0, `shardrelay-load <style> --rate R --size 64`
# over 100 connections, and `perf stat` on the relay's syscall and io_uring tracepoints
# over a steady window after the warm-up. The window's counts are divided by the messages
# the relay wrote in it (`/stats` totals `messages_out`, sampled at the window's start and
# end from inside the perf workload, so counters and samples cover the same interval).
#
# Usage: scripts/syscalls-per-message.sh [STYLE|all] [SECONDS]      (or `make syscalls`)
#   STYLE    pair | server-id | all (default all)
#   SECONDS  the counted window (default 5)
# Env: RATES (open-loop round trips/s, default "2000 10000 50000 100000"); DRIVERS
# (default: $SHARDRELAY_DRIVER if set, else "uring epoll"); SHARDRELAY_BIN, LOAD_BIN
# (or SOAK_LOAD_BIN) for other binaries; OUT_DIR (default <target>/syscalls/<stamp>);
# WAIT_QUIET (seconds to wait for an idle machine before each run, default 0).
# Needs perf with tracepoint access (root; Debian package linux-perf). Bounded: each run is
# ramp + 2 s warm-up + perf's set-up (2–3 s) + SECONDS, then the load is stopped; the
# default 16 runs take about 2.5 minutes.
#
# Columns, per forwarded message: all = raw_syscalls:sys_enter; sendmsg (+ sendto, writev);
# recv = recvfrom (libc recv); uring_enter = io_uring_enter; epoll_wait (+ epoll_pwait);
# poll (+ ppoll: monoio's legacy-driver readiness check); other = the rest. Then what the
# counts say about batching: frames/sendmsg = messages written ÷ sendmsg calls that wrote,
# msgs/read = messages read ÷ recv calls that returned data; EAGAIN reads, io_uring SQEs
# (io_uring_submit_req) and poll(2) calls that found nothing ready, per message; and the
# CPU of the relay, the load generator, everything else on the machine and the hypervisor's
# steal over the window (other work on the box changes how much batches: it is shown).
# This script starts processes and perf and takes the window's edges (lib/bench.sh
# `sample`); the figures and the table are computed by `shardrelay-load measure
# syscalls-row` and `syscalls-table` (loadtest/src/measure/syscalls.rs).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/relay.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/relay.sh"
# shellcheck source-path=SCRIPTDIR source=lib/bench.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench.sh"

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
LOAD_BIN=${LOAD_BIN:-${SOAK_LOAD_BIN:-$TARGET_DIR/release/shardrelay-load}}
STYLE=${1:-all}
WINDOW=${2:-5}
WARMUP=2
read -r -a RATE_LIST <<<"${RATES:-2000 10000 50000 100000}"
read -r -a DRIVER_LIST <<<"${DRIVERS:-${SHARDRELAY_DRIVER:-uring epoll}}"
case $STYLE in
    all) styles=(pair server-id) ;;
    pair | server-id) styles=("$STYLE") ;;
    *) die "unknown style $STYLE (pair | server-id | all)" ;;
esac
if ! [[ $WINDOW =~ ^[0-9]+$ ]] || [ "$WINDOW" -lt 1 ] || [ "$WINDOW" -gt 60 ]; then
    die "SECONDS must be 1..60, not $WINDOW"
fi
command -v perf >/dev/null || die "perf is not installed (Debian: apt-get install linux-perf)"
if [ ! -x "$RELAY_BIN" ] || [ ! -x "$LOAD_BIN" ]; then
    die "build first: cargo build --release -p shardrelay -p shardrelay-load"
fi
if [ ! -e /sys/kernel/tracing/events/syscalls ] && [ ! -e /sys/kernel/debug/tracing/events/syscalls ]; then
    die "no syscall tracepoints: mount -t tracefs nodev /sys/kernel/tracing (as root)"
fi
OUT=${OUT_DIR:-$TARGET_DIR/syscalls/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
RESULTS=$OUT/results.tsv
: >"$RESULTS"
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

# Counted in this order; perf prints one CSV line per event, in the same order (the
# filtered sys_exit events share their name with nothing else counted here).
EVENTS=(
    raw_syscalls:sys_enter
    syscalls:sys_enter_sendmsg syscalls:sys_enter_sendto syscalls:sys_enter_writev
    syscalls:sys_enter_write syscalls:sys_enter_recvfrom syscalls:sys_enter_recvmsg
    syscalls:sys_enter_read syscalls:sys_enter_io_uring_enter syscalls:sys_enter_epoll_wait
    syscalls:sys_enter_epoll_pwait syscalls:sys_enter_epoll_ctl syscalls:sys_enter_poll
    syscalls:sys_enter_ppoll syscalls:sys_enter_futex
    syscalls:sys_exit_recvfrom syscalls:sys_exit_sendmsg syscalls:sys_exit_poll
    io_uring:io_uring_submit_req io_uring:io_uring_complete
)
EVENT_ARGS=()
for event in "${EVENTS[@]}"; do
    EVENT_ARGS+=(-e "$event")
    case $event in
        syscalls:sys_exit_poll) EVENT_ARGS+=(--filter 'ret == 0') ;;  # nothing ready
        syscalls:sys_exit_*) EVENT_ARGS+=(--filter 'ret == -11') ;;   # EAGAIN only
    esac
done

# The window's edges are taken with lib/bench.sh `sample` (inside the perf workload,
# a child bash given it with `declare -f`, so counters and samples cover one interval).

run_one() {
    local style=$1 driver=$2 rate=$3 shape tag
    tag=$style.$driver.$rate
    case $style in
        pair) shape=(--pairs 50) ;;                     # 100 connections
        server-id) shape=(--binaries 10 --phones 9) ;;  # 100 connections
    esac
    wait_quiet
    SHARDRELAY_DRIVER=$driver relay_start "$OUT/$tag.relay.log" --log-level warn
    # The load outlasts the window (perf needs a few seconds to attach its tracepoints
    # before the window starts) and is stopped once the window has been counted.
    "$LOAD_BIN" "$style" --target "$RELAY_PUBLIC" --admin "$RELAY_ADMIN" "${shape[@]}" \
        --rate "$rate" --size 64 --warmup "${WARMUP}s" --duration "$((WINDOW + 10))s" \
        --drain 2s --no-relay-stats >"$OUT/$tag.load.txt" 2>"$OUT/$tag.load.err" &
    LOAD_PID=$!
    # Wait until traffic flows (bounded), then let the warm-up pass.
    local deadline=$((SECONDS + 30))
    until [ "$(messages_out 2>/dev/null || echo 0)" -gt 0 ]; do
        [ $SECONDS -lt $deadline ] || die "no traffic through the relay ($tag)"
        kill -0 "$LOAD_PID" 2>/dev/null || die "load exited early ($tag): $(tail -n 3 "$OUT/$tag.load.txt")"
        sleep 0.2
    done
    sleep "$WARMUP"
    perf stat -x, -o "$OUT/$tag.perf.csv" "${EVENT_ARGS[@]}" -p "$RELAY_PID" -- \
        bash -c "$(declare -f sample)
            sample '$OUT/$tag.before' $RELAY_ADMIN $RELAY_PID $LOAD_PID && sleep $WINDOW &&
            sample '$OUT/$tag.after' $RELAY_ADMIN $RELAY_PID $LOAD_PID" ||
        die "perf stat failed ($tag)"
    kill -0 "$LOAD_PID" 2>/dev/null ||
        die "the load ended before the window did ($tag): $(tail -n 3 "$OUT/$tag.load.txt")"
    relay_alive
    kill "$LOAD_PID" 2>/dev/null || true
    wait "$LOAD_PID" 2>/dev/null || true
    LOAD_PID=""
    relay_stop
    if grep -q 'corrupt+misrouted [1-9]\|errors [1-9]' "$OUT/$tag.load.err"; then
        die "the load saw errors or integrity failures ($tag): $(tail -n 2 "$OUT/$tag.load.err")"
    fi
    "$LOAD_BIN" measure syscalls-row --perf "$OUT/$tag.perf.csv" --before "$OUT/$tag.before" \
        --after "$OUT/$tag.after" --style "$style" --driver "$RELAY_DRIVER" --rate "$rate" \
        -- "${EVENTS[@]}" >>"$RESULTS" || die "no figures for $tag"
    log "$tag: $(tail -n 1 "$RESULTS")"
}

for driver in "${DRIVER_LIST[@]}"; do
    for style in "${styles[@]}"; do
        for rate in "${RATE_LIST[@]}"; do
            run_one "$style" "$driver" "$rate"
        done
    done
done

echo
echo "syscalls per forwarded message — $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, Linux $(uname -r)"
echo "relay: $RELAY_BIN (default shards); load: 100 connections, 64 B, open loop; rate = round trips/s"
echo "(each round trip is two relayed messages); window ${WINDOW}s after a ${WARMUP}s warm-up; CPU in % of one core"
"$LOAD_BIN" measure syscalls-table --results "$RESULTS" | tee "$OUT/table.md"
echo
echo "raw counts, load reports and relay logs: $OUT"
