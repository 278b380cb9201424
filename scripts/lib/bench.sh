# shellcheck shell=bash
# Shared by scripts/syscalls-per-message.sh and scripts/shard-scaling.sh (source it after
# lib/relay.sh, which provides `log` and RELAY_ADMIN).
#
# sample OUT ADMIN RELAY_PID LOAD_PID  one window edge: the relay's /stats (OUT.json, raw),
#                    then the wall clock, the relay's and the load generator's utime+stime,
#                    the machine's busy time and its steal time (CPU the hypervisor gave to
#                    other guests), into OUT — bash builtins only, no fork after curl, so
#                    it can also run inside a perf workload (`declare -f sample`), where a
#                    fork of shardrelay-load would be counted. It only copies counters; the
#                    figures are computed from its files by `shardrelay-load measure
#                    scaling-row` / `syscalls-row` (loadtest/src/measure/edges.rs).
# wait_quiet         with WAIT_QUIET=S, wait up to S s for the machine to be quiet (under a
#                    tenth of a core busy over one second), then run anyway with a warning
#                    (`$LOAD_BIN measure wait-quiet`)
# messages_out       the relay's /stats totals `messages_out` (through
#                    `$LOAD_BIN measure relay-figure`)

sample() {
    local out=$1 admin=$2 relay=$3 load=$4 f
    curl -fsS --max-time 5 -o "$out.json" "http://$admin/stats"
    local now=$EPOCHREALTIME
    read -r -a f <"/proc/$relay/stat"
    local relay_ticks=$((f[13] + f[14]))
    read -r -a f <"/proc/$load/stat"
    local load_ticks=$((f[13] + f[14]))
    read -r -a f </proc/stat
    echo "$now $relay_ticks $load_ticks $((f[1] + f[2] + f[3] + f[6] + f[7])) ${f[8]}" >"$out"
}

wait_quiet() {
    local limit=${WAIT_QUIET:-0}
    case $limit in '' | *[!0-9]*) die "WAIT_QUIET must be whole seconds, not '$limit'" ;; esac
    [ "$limit" -gt 0 ] || return 0
    local rc=0
    "$LOAD_BIN" measure wait-quiet --within "${limit}s" || rc=$?
    case $rc in
        0) ;;
        3) log "warning: the machine is still busy after ${limit}s; running anyway" ;;
        *) die "measure wait-quiet failed (exit $rc)" ;;
    esac
}

messages_out() {
    "$LOAD_BIN" measure relay-figure --admin "$RELAY_ADMIN" messages_out
}
