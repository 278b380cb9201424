#!/usr/bin/env bash
# Idle memory per upgraded connection: start a relay, warm it up (WARM connections of the
# style opened and closed, and /stats read, so that code pages, the stats machinery and
# the runtime's fixed structures are in before the baseline), hold N idle connections of
# one style with shardrelay-load, and report (RSS with them − RSS before) ÷ N; then close
# them all and open N again, reporting any growth across the churn. RSS is split into
# RssAnon (heap) and RssFile (the binary's pages) to show the delta is all heap.
# Env: SHARDRELAY_BIN, SOAK_LOAD_BIN, IDLE_CONNECT_RATE (default 5000/s), IDLE_WARM
# (default 100; 0 measures from a relay that has served nothing), IDLE_TLS=1 (serve and
# connect over TLS: a throw-away P-256 pair minted with openssl into the temp dir).
# Usage: scripts/idle-memory.sh STYLE [N]   (STYLE: pair | server-id | echo)
set -euo pipefail
cd "$(dirname "$0")/.."
style=${1:-pair}
n=${2:-15000}
RELAY=${SHARDRELAY_BIN:-./target/release/shardrelay}
LOAD=${SOAK_LOAD_BIN:-./target/release/shardrelay-load}
out=$(mktemp -d)
relay_pid=""; load_pid=""
cleanup() {
    [ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null || true
    [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$out"
}
trap cleanup EXIT
extra=()
[ "$style" = echo ] && extra=(--enable-echo)
scheme=""; tls_load=()
if [ "${IDLE_TLS:-0}" = 1 ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -keyout "$out/key.pem" -out "$out/cert.pem" -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -addext "basicConstraints=critical,CA:FALSE" 2>/dev/null
    extra+=(--tls-cert "$out/cert.pem" --tls-key "$out/key.pem")
    scheme="wss://"; tls_load=(--tls-ca "$out/cert.pem")
fi
"$RELAY" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --log-level warn "${extra[@]}" \
    >"$out/ready" 2>"$out/relay.log" &
relay_pid=$!
for _ in $(seq 1 100); do grep -q listening "$out/ready" 2>/dev/null && break; sleep 0.05; done
public=$(grep -o 'public=[^ ]*' "$out/ready" | cut -d= -f2)
admin=$(grep -o 'admin=[^ ]*' "$out/ready" | cut -d= -f2)
rss() { awk '/VmRSS/ {print $2}' "/proc/$relay_pid/status"; }
rss_parts() { awk '/RssAnon|RssFile/ {printf "%s %s ", $1, $2}' "/proc/$relay_pid/status"; }
# Kernel side (machine-wide, so other work on the box shows up too): slab KiB, TCP
# sockets in use and TCP socket-buffer pages (sockstat "mem"), and the same sample's
# SUnreclaim. Loopback puts both ends of every connection on this host: 2 sockets each.
kmem() {
    local slab unrec inuse mem
    slab=$(awk '/^Slab:/ {print $2}' /proc/meminfo)
    unrec=$(awk '/^SUnreclaim:/ {print $2}' /proc/meminfo)
    inuse=$(awk '/^TCP:/ {print $3}' /proc/net/sockstat)
    mem=$(awk '/^TCP:/ {for (i = 1; i <= NF; i++) if ($i == "mem") print $(i + 1)}' /proc/net/sockstat)
    echo "$slab $unrec $inuse $mem"
}
open_conns() {
    curl -s "http://$admin/stats" | python3 -c 'import json,sys; print(sum(json.load(sys.stdin)["totals"]["connections"].values()))'
}
hold() {  # hold COUNT idle connections in the background; wait until all are up
    local count=$1
    "$LOAD" idle --style "$style" --target "$scheme$public" "${tls_load[@]}" --admin "$admin" --connections "$count" \
    --duration 600s --connect-rate "${IDLE_CONNECT_RATE:-5000}" --source-ips 127.0.0.1-127.0.0.8 --no-relay-stats \
    >"$out/load.txt" 2>&1 &
    load_pid=$!
    local deadline=$((SECONDS + 120))
    while [ "$(open_conns)" -lt "$count" ]; do
        [ $SECONDS -lt $deadline ] || { echo "connections never reached $count"; cat "$out/load.txt"; exit 1; }
        sleep 0.5
    done
    # A sampling window, not synchronisation: each shard's heartbeat frees the buffers
    # of connections quiet for a tick (500 ms with the defaults); 2 s is four ticks.
    sleep 2
}
release() {  # close them and wait until the relay has let every one go
    kill "$load_pid"; wait "$load_pid" 2>/dev/null || true; load_pid=""
    local deadline=$((SECONDS + 60))
    while [ "$(open_conns)" -gt 0 ]; do
        [ $SECONDS -lt $deadline ] || { echo "connections never closed"; exit 1; }
        sleep 0.5
    done
}
# Round 1: RSS delta ÷ N is the figure (heap pages first touched for N connections).
# Round 2, after all of round 1 closed: the same N again must fit in what round 1 left
# (the allocator keeps freed pages), i.e. no growth across connection churn.
warm=${IDLE_WARM:-100}
echo "fresh: $(rss_parts)"
if [ "$warm" -gt 0 ]; then hold "$warm"; release; fi
cold=$(rss); echo "warm ($warm opened and closed): $(rss_parts)"
read -r slab0 unrec0 tcp0 pages0 <<<"$(kmem)"
hold "$n"; first=$(rss); echo "with $n: $(rss_parts)"
read -r slab1 unrec1 tcp1 pages1 <<<"$(kmem)"
release
closed=$(rss)
hold "$n"; second=$(rss)
echo "style=$style tls=${IDLE_TLS:-0} connections=$n warm=$warm rss_cold_kib=$cold rss_with_n_kib=$first per_conn_bytes=$(( (first - cold) * 1024 / n ))"
echo "kernel (machine-wide deltas, both ends on loopback): slab_kib=$((slab1 - slab0))" \
    "sunreclaim_kib=$((unrec1 - unrec0)) tcp_sockets=$((tcp1 - tcp0))" \
    "tcp_buffer_pages=$((pages1 - pages0)) slab_bytes_per_conn=$(( (slab1 - slab0) * 1024 / n ))" \
    "slab_bytes_per_socket=$(( (slab1 - slab0) * 1024 / (tcp1 - tcp0 > 0 ? tcp1 - tcp0 : 1) ))"
echo "churn: rss_after_close_kib=$closed rss_with_n_again_kib=$second growth_kib=$(( second - first ))"
