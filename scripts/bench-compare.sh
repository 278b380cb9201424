#!/usr/bin/env bash
# shardrelay beside an ordinary relay (benches/baseline: tokio + tokio-tungstenite +
# one Arc<Mutex<HashMap>>), same load generator, same machine, one run.
#
# For each scenario (pair, server-id) and pace (closed-loop peak, open-loop fixed
# rate) it starts each relay fresh on 127.0.0.1:0, points shardrelay-load at it,
# reads the relay's CPU time (utime+stime from /proc/<pid>/stat) before and after,
# and prints one table. JSON reports and logs stay in target/bench-compare/<stamp>/.
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
RESULTS="$OUT/results.tsv"
TICKS_PER_S="$(getconf CLK_TCK)"
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

# utime+stime of a process, in clock ticks (the comm field may hold spaces: cut it off).
cpu_ticks() {
    local stat
    stat="$(cat "/proc/$1/stat")"
    stat="${stat##*) }"
    # shellcheck disable=SC2086 # word splitting into fields is the point
    set -- $stat
    echo $((${12} + ${13}))
}

# Busy time of the whole machine (every CPU, all but idle and iowait), in clock ticks.
busy_ticks() {
    local _cpu user nice system _idle _iowait irq softirq steal _rest
    read -r _cpu user nice system _idle _iowait irq softirq steal _rest </proc/stat
    echo $((user + nice + system + irq + softirq + steal))
}

# CPU seconds (user+sys) of this shell's finished children, i.e. the load runs waited
# for so far. `times` must run in this shell, not in a `$(…)` subshell (whose children
# are not ours), so it writes a file and a subshell only reads that.
children_seconds() {
    awk 'NR == 2 {
        total = 0
        for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); total += t[1] * 60 + t[2] }
        print total
    }' "$OUT/.times"
}

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
    local before after busy_before busy_after load_before load_after rc=0
    before="$(cpu_ticks "$RELAY_PID")"
    busy_before="$(busy_ticks)"
    times >"$OUT/.times"
    load_before="$(children_seconds)"
    on_cpus "$LOAD_CPUS" "$LOAD" "$scenario" --target "$PUBLIC" --admin "$ADMIN" "${shape[@]}" "${pacing[@]}" \
        --size "$SIZE" --duration "$DURATION" --warmup "$WARMUP" --drain "$DRAIN" \
        --json "$OUT/$tag.json" >"$OUT/$tag.txt" 2>"$OUT/$tag.progress" &
    LOAD_PID=$!
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=""
    kill -0 "$RELAY_PID" 2>/dev/null || die "$tag: $relay died during the run"
    after="$(cpu_ticks "$RELAY_PID")"
    busy_after="$(busy_ticks)"
    times >"$OUT/.times"
    load_after="$(children_seconds)"
    stop_relay
    # CPU the machine spent on anything but this relay and this load generator: other
    # work on the box skews every figure, so the table shows how much there was.
    local relay_s other_s
    relay_s="$(awk -v t=$((after - before)) -v hz="$TICKS_PER_S" 'BEGIN { print t / hz }')"
    other_s="$(awk -v b=$((busy_after - busy_before)) -v hz="$TICKS_PER_S" -v r="$relay_s" \
        -v l0="$load_before" -v l1="$load_after" 'BEGIN { printf "%.2f", b / hz - r - (l1 - l0) }')"
    [ -s "$OUT/$tag.json" ] || die "$tag: no JSON report (load exit $rc, see $OUT/$tag.txt)"
    [ "$rc" -eq 0 ] || log "$tag: load generator exit $rc (see $OUT/$tag.txt)"
    jq -r --arg s "$scenario/$pace" --arg r "$relay" --arg rc "$rc" --arg other "$other_s" \
        --argjson cpu "$relay_s" \
        '[$s, $r, .throughput.messages_per_s, .latency_us.p50, .latency_us.p99,
          .latency_us.p999, $cpu, .throughput.received, $rc, $other] | @tsv' \
        "$OUT/$tag.json" >>"$RESULTS"
}

# The table: one row per run, then shardrelay ÷ baseline per scenario.
print_table() {
    awk -F'\t' '
        function row(s, r, m, p50, p99, p999, cpu, eff, rc, other) {
            printf "%-16s %-11s %10s %7s %7s %8s %9s %10s %5s %8s\n", s, r, m, p50, p99, p999, cpu, eff, rc, other
        }
        function ratio(a, b) { return b > 0 ? sprintf("%.2fx", a / b) : "-" }
        BEGIN {
            row("scenario", "relay", "msgs/s", "p50 us", "p99 us", "p99.9 us", "relay CPU", "msgs/CPU-s", "exit", "other CPU")
        }
        {
            eff = $7 > 0 ? $8 / $7 : 0
            row($1, $2, sprintf("%.0f", $3), $4, $5, $6, sprintf("%.2f s", $7), sprintf("%.0f", eff), $9, $10 " s")
            m[$1, $2] = $3; p50[$1, $2] = $4; p99[$1, $2] = $5; p999[$1, $2] = $6
            cpu[$1, $2] = $7; e[$1, $2] = eff
            if ($2 == "baseline") {
                s = $1; a = "shardrelay"; b = "baseline"
                row(s, "ratio s/b", ratio(m[s, a], m[s, b]), ratio(p50[s, a], p50[s, b]),
                    ratio(p99[s, a], p99[s, b]), ratio(p999[s, a], p999[s, b]),
                    ratio(cpu[s, a], cpu[s, b]), ratio(e[s, a], e[s, b]), "", "")
            }
        }' "$RESULTS"
}

main() {
    command -v jq >/dev/null || die "jq is required"
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
    : >"$RESULTS"
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
    print_table | tee "$OUT/table.txt"
    echo
    echo "reports: $OUT"
    if awk -F'\t' '$9 != 0 { bad = 1 } END { exit !bad }' "$RESULTS"; then
        die "some load runs did not exit 0 (column 'exit'; see the reports)"
    fi
}

main "$@"
