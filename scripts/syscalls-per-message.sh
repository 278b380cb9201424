#!/usr/bin/env bash
# Syscalls per relayed message (issue 9, point 5): start a release relay, drive one style
# at a fixed open-loop rate, and count the relay process's syscalls over a steady window
# with `perf stat` on the syscall tracepoints; divide by the messages the relay wrote in
# that window (`/stats` totals `messages_out`, sampled at the window's start and end).
#
# Usage: scripts/syscalls-per-message.sh [STYLE [RATE...]]
#   STYLE: pair | server-id (default: both); RATE: open-loop msgs/s (default: 2000 20000 100000)
# Env: SHARDRELAY_BIN, SOAK_LOAD_BIN (binaries; default target/release), SHARDRELAY_DRIVER
# (uring | epoll, reaches the relay), WINDOW (seconds counted, default 5).
# Needs `perf` with tracepoint access (root). Bounded: every run is warm-up + WINDOW + 3 s.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/relay.sh"

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
LOAD_BIN=${SOAK_LOAD_BIN:-$TARGET_DIR/release/shardrelay-load}
WINDOW=${WINDOW:-5}
WARMUP=3
styles=(pair server-id)
rates=(2000 20000 100000)
if [ $# -ge 1 ]; then styles=("$1"); shift; fi
if [ $# -ge 1 ]; then rates=("$@"); fi
command -v perf >/dev/null || die "perf is not installed (Debian: linux-perf)"
[ -x "$RELAY_BIN" ] && [ -x "$LOAD_BIN" ] || die "build first: cargo build --release -p shardrelay -p shardrelay-load"
OUT=$(mktemp -d "${TMPDIR:-/tmp}/shardrelay-syscalls.XXXXXX")
LOAD_PID=""
cleanup() {
    local rc=$?
    [ -n "$LOAD_PID" ] && kill "$LOAD_PID" 2>/dev/null || true
    relay_stop
    rm -rf "$OUT"
    return $rc
}
trap cleanup EXIT

EVENTS=(raw_syscalls:sys_enter syscalls:sys_enter_sendmsg syscalls:sys_enter_recvfrom
    syscalls:sys_enter_io_uring_enter syscalls:sys_enter_epoll_wait syscalls:sys_enter_epoll_pwait)
EVENT_ARGS=()
for event in "${EVENTS[@]}"; do EVENT_ARGS+=(-e "$event"); done
messages_out() {
    curl -fsS --max-time 5 "http://$RELAY_ADMIN/stats" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["totals"]["messages_out"])'
}

printf '%-10s %-7s %8s %10s | %7s %7s %7s %7s %7s %7s\n' style driver rate forwarded \
    "all/msg" "sendmsg" "recv" "uring" "epoll" "other"
for style in "${styles[@]}"; do
    for rate in "${rates[@]}"; do
        relay_start "$OUT/relay.log" --log-level warn
        case $style in
            pair) shape=(--pairs 100) ;;
            server-id) shape=(--binaries 10 --phones 10) ;;
            *) die "unknown style $style" ;;
        esac
        "$LOAD_BIN" "$style" --target "$RELAY_PUBLIC" --admin "$RELAY_ADMIN" "${shape[@]}" \
            --rate "$rate" --size 64 --warmup "${WARMUP}s" --duration "$((WINDOW + 2))s" \
            --no-relay-stats >"$OUT/load.txt" 2>&1 &
        LOAD_PID=$!
        # Wait until traffic flows (bounded), then let the warm-up pass.
        deadline=$((SECONDS + 20))
        until [ "$(messages_out)" -gt 0 ]; do
            [ $SECONDS -lt $deadline ] || die "no traffic through the relay ($style at $rate/s)"
            sleep 0.2
        done
        sleep "$WARMUP"
        before=$(messages_out)
        perf stat -x, -o "$OUT/perf.csv" "${EVENT_ARGS[@]}" -p "$RELAY_PID" -- sleep "$WINDOW" 2>/dev/null
        after=$(messages_out)
        wait "$LOAD_PID" || die "load run failed ($style at $rate/s): $(tail -n 3 "$OUT/load.txt")"
        LOAD_PID=""
        relay_stop
        python3 - "$OUT/perf.csv" "$style" "$RELAY_DRIVER" "$rate" "$before" "$after" <<'EOF'
import sys
path, style, driver, rate, before, after = sys.argv[1:]
counts = {}
for line in open(path):
    parts = line.strip().split(",")
    if len(parts) > 2 and parts[0].replace(".", "").isdigit():
        counts[parts[2]] = float(parts[0])
n = max(int(after) - int(before), 1)
total = counts.get("raw_syscalls:sys_enter", 0)
send = counts.get("syscalls:sys_enter_sendmsg", 0)
recv = counts.get("syscalls:sys_enter_recvfrom", 0)
uring = counts.get("syscalls:sys_enter_io_uring_enter", 0)
epoll = counts.get("syscalls:sys_enter_epoll_wait", 0) + counts.get("syscalls:sys_enter_epoll_pwait", 0)
other = total - send - recv - uring - epoll
print(f"{style:<10} {driver:<7} {rate:>8} {n:>10} | {total/n:7.3f} {send/n:7.3f} {recv/n:7.3f} "
      f"{uring/n:7.3f} {epoll/n:7.3f} {other/n:7.3f}")
EOF
    done
done
