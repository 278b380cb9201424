# shellcheck shell=bash
# Three relay nodes behind HAProxy on loopback (PROTOCOL §9), for the real-client checks
# of scripts/interop.sh run through a balancer (source after lib/relay.sh; needs RELAY_BIN,
# LOAD_BIN for kernel-picked ports, and haproxy).
#
# cluster_start DIR [node flags...]  nodes a, b, c (each `--node-id X --nodes …
#                    --proxy-protocol --trusted-proxies 127.0.0.1` plus the flags) and
#                    HAProxy running `shardrelay haproxy-config` for them; sets
#                    RELAY_PUBLIC to HAProxy's address, RELAY_ADMIN to node a's admin
#                    listener, RELAY_PID to node a and RELAY_LOG to its log, so the
#                    single-relay checks run unchanged against the cluster
# cluster_stop       kill every process cluster_start started
# cluster_alive      fail loudly if a node or HAProxy died under a check

CLUSTER_PIDS=()
CLUSTER_DIR=""

cluster_start() {
    CLUSTER_DIR=$1
    shift
    cluster_stop
    command -v haproxy >/dev/null || die "haproxy missing (scripts/install-test-tools.sh)"
    mkdir -p "$CLUSTER_DIR"
    local ids=(a b c) ports=() list="" i tries
    for i in 0 1 2; do ports+=("$("$LOAD_BIN" measure free-port)"); done
    for i in 0 1 2; do list+="${list:+,}${ids[$i]}=127.0.0.1:${ports[$i]}"; done
    for i in 0 1 2; do
        "$RELAY_BIN" --listen "127.0.0.1:${ports[$i]}" --admin-listen 127.0.0.1:0 \
            --node-id "${ids[$i]}" --nodes "$list" --proxy-protocol --trusted-proxies 127.0.0.1 \
            "$@" >"$CLUSTER_DIR/${ids[$i]}.out" 2>"$CLUSTER_DIR/${ids[$i]}.log" &
        CLUSTER_PIDS+=($!)
    done
    for i in 0 1 2; do
        "$LOAD_BIN" measure wait-port "127.0.0.1:${ports[$i]}" ||
            die "node ${ids[$i]} did not listen (see $CLUSTER_DIR/${ids[$i]}.log)"
    done
    # Node a's ready line names its admin listener (read as lib/relay.sh reads it).
    tries=100
    until grep -q ' admin=' "$CLUSTER_DIR/a.out" 2>/dev/null; do
        tries=$((tries - 1))
        [ $tries -gt 0 ] || die "node a printed no ready line"
        sleep 0.05
    done
    local word
    for word in $(head -n 1 "$CLUSTER_DIR/a.out"); do
        case "$word" in admin=*) RELAY_ADMIN="${word#admin=}" ;; esac
    done
    local front
    front=$("$LOAD_BIN" measure free-port)
    "$RELAY_BIN" haproxy-config --nodes "$list" --listen "127.0.0.1:$front" >"$CLUSTER_DIR/haproxy.cfg"
    haproxy -db -f "$CLUSTER_DIR/haproxy.cfg" >/dev/null 2>"$CLUSTER_DIR/haproxy.log" &
    CLUSTER_PIDS+=($!)
    "$LOAD_BIN" measure wait-port "127.0.0.1:$front" ||
        die "haproxy did not listen (see $CLUSTER_DIR/haproxy.log)"
    RELAY_PUBLIC="127.0.0.1:$front"
    RELAY_PID=${CLUSTER_PIDS[0]}
    RELAY_LOG="$CLUSTER_DIR/a.log"
    log "cluster: nodes $list behind haproxy at $RELAY_PUBLIC (node a admin $RELAY_ADMIN)"
}

cluster_alive() {
    local pid
    for pid in "${CLUSTER_PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || die "a cluster process (pid $pid) died; see $CLUSTER_DIR"
    done
}

cluster_stop() {
    local pid
    for pid in "${CLUSTER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${CLUSTER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    CLUSTER_PIDS=()
    RELAY_PID=""
}
