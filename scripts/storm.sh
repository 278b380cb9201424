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
# TLS=1 (or `make storm-tls`): the handshake storm of #16 point 4 instead — full TLS 1.3
# handshakes (the client never resumes; X25519, P-256 ECDSA leaf minted with openssl at
# run time, nothing kept) plus the upgrade, per case: shardrelay with --tls-cert/--tls-key
# ("shardrelay-tls"), nginx (Debian package, installed here if missing; one worker)
# terminating TLS in front of a plain shardrelay ("nginx-tls", both pinned to RELAY_CPU,
# CPU = nginx master + worker + relay), the tokio baseline with tokio-rustls
# ("baseline-tls"), HAProxy in TCP mode with send-proxy-v2 in front of shardrelay
# --tls-cert --proxy-protocol ("haproxy-tls", if haproxy is installed; CPU = HAProxy +
# relay), and plain shardrelay as the reference ("shardrelay"). N defaults to
# 4000 there (nginx holds 2 descriptors per client) and STYLES to "pair".
#
# Usage: scripts/storm.sh               (or `make storm`; TLS=1 / `make storm-tls`)
# Env: N (default 19000; the per-process descriptor limit here is 20,000 and the relay
# and the load each hold N), STYLES (shardrelay: "server-id pair session echo"; the
# baseline only has server-id and pair), SOURCES (default 127.0.0.1-127.0.0.16),
# PER_IP_RATE (default 200/s per source; 0 skips the shaped run), RELAY_CPU (1),
# LOAD_CPU (0), OUT_DIR, BASELINE_BIN (another baseline build, e.g. `--features
# aws-lc`). Bounded: each case is the ramp (seconds) + 1 s hold + close;
# loopback only.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/nginx.sh"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SHARDRELAY=${SHARDRELAY_BIN:-$TARGET_DIR/release/shardrelay}
LOAD=${LOAD_BIN:-$TARGET_DIR/release/shardrelay-load}
BASELINE=${BASELINE_BIN:-./benches/baseline/target/release/shardrelay-baseline}
TLS=${TLS:-0}
if [ "$TLS" = 1 ]; then
    N=${N:-4000}
    read -r -a STYLE_LIST <<<"${STYLES:-pair}"
else
    N=${N:-19000}
    read -r -a STYLE_LIST <<<"${STYLES:-server-id pair session echo}"
fi
SOURCES=${SOURCES:-127.0.0.1-127.0.0.16}
PER_IP_RATE=${PER_IP_RATE:-200}
RELAY_CPU=${RELAY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
OUT=${OUT_DIR:-$TARGET_DIR/storm/$(date -u +%Y%m%dT%H%M%SZ)}
TAGS=()
RELAY_PID=""
LOAD_PID=""
FRONT_PID=""
# TLS runs: the load's target scheme and trust flags, set per case.
SCHEME=ws
TRUST=()

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
stop() {
    local pid
    for pid in "$LOAD_PID" "$FRONT_PID" "$RELAY_PID"; do
        [ -n "$pid" ] || continue
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    LOAD_PID=""
    FRONT_PID=""
    RELAY_PID=""
}
trap stop EXIT
trap 'exit 130' INT TERM

ticks() { "$LOAD" measure proc --pid "$1" cpu-ticks; }

# server_ticks: CPU ticks of the server side of a case — the relay, plus nginx's master
# and its worker when nginx is in front.
server_ticks() {
    local pid sum
    sum=$(ticks "$RELAY_PID")
    if [ -n "$FRONT_PID" ]; then
        for pid in "$FRONT_PID" $(pgrep -P "$FRONT_PID"); do
            sum=$((sum + $(ticks "$pid")))
        done
    fi
    echo "$sum"
}

# start NAME LOG EXTRA...: a fresh relay pinned to RELAY_CPU; sets RELAY_PID, PUBLIC, ADMIN.
start() {
    local name=$1 log=$2
    shift 2
    # A log left in a reused OUT_DIR must not pass the ready wait below before the new
    # process has truncated it.
    rm -f "$log" "$log.err"
    case $name in
        baseline) taskset -c "$RELAY_CPU" "$BASELINE" --listen 127.0.0.1:0 \
            --admin-listen 127.0.0.1:0 "$@" >"$log" 2>"$log.err" & ;;
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
    local kind=$relay
    [ "$relay" = nginx ] || [ "$relay" = haproxy ] && kind=shardrelay
    start "$kind" "$OUT/$tag.relay.log" "$@"
    local t0 t1=""
    # Likewise a report: it would end the poll below at once.
    rm -f "$OUT/$tag.txt" "$OUT/$tag.json"
    [ "$relay" = nginx ] && start_nginx "$OUT/$tag.nginx"
    [ "$relay" = haproxy ] && start_haproxy "$OUT/$tag.haproxy"
    t0=$(server_ticks)
    taskset -c "$LOAD_CPU" "$LOAD" idle --style "$style" --target "$SCHEME://$PUBLIC" \
        --admin "$ADMIN" "${TRUST[@]}" \
        --connections "$N" --phones 4 --connect-rate 0 --source-ips "$SOURCES" --warmup 0s \
        --duration 1s --drain 0s --setup-timeout 120s --connect-timeout 30s --no-relay-stats \
        --json "$OUT/$tag.json" "${retry[@]}" >"$OUT/$tag.txt" 2>"$OUT/$tag.progress" &
    LOAD_PID=$!
    # Poll (20 ms) for the ramp's end; bounded by the load's own --setup-timeout.
    while kill -0 "$LOAD_PID" 2>/dev/null; do
        if grep -qs 'all connections up' "$OUT/$tag.txt"; then
            t1=$(server_ticks)
            break
        fi
        sleep 0.02
    done
    local rc=0
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=""
    [ -n "$t1" ] || t1=$(server_ticks)
    stop
    [ -s "$OUT/$tag.json" ] || die "$tag: no report (exit $rc; $OUT/$tag.txt)"
    echo "$t0 $t1" >"$OUT/$tag.ticks"
    TAGS+=("$tag")
}

# mint_pki DIR: a throw-away P-256 CA and a P-256 leaf for localhost/127.0.0.1 signed by
# it (ca.pem, cert.pem, key.pem), as scripts/interop.sh mints its own.
mint_pki() {
    local dir=$1
    mkdir -p "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -keyout "$dir/ca.key" -out "$dir/ca.pem" -subj "/CN=shardrelay storm CA" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$dir/key.pem" -out "$dir/leaf.csr" -subj /CN=localhost 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n' \
        >"$dir/leaf.ext"
    openssl x509 -req -in "$dir/leaf.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 1 -extfile "$dir/leaf.ext" -out "$dir/cert.pem" 2>/dev/null
    rm -f "$dir/ca.key" "$dir/leaf.csr"
}

# start_haproxy DIR: HAProxy (TCP mode, one thread, pinned to RELAY_CPU) in front of the
# relay at PUBLIC, writing `send-proxy-v2` headers; the TLS stream passes through to the
# relay. Sets FRONT_PID and points PUBLIC at it.
start_haproxy() {
    local dir=$1 port tries=200
    rm -rf "$dir"    # a stale pid file from a reused OUT_DIR would pass the wait below
    mkdir -p "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    cat >"$dir/haproxy.cfg" <<HAPROXY
global
    maxconn 9900
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend fe
    bind 127.0.0.1:$port backlog 4096
    default_backend relay
backend relay
    server relay $PUBLIC send-proxy-v2
HAPROXY
    taskset -c "$RELAY_CPU" haproxy -db -f "$dir/haproxy.cfg" >"$dir/stdout" 2>&1 &
    FRONT_PID=$!
    until ss -Hltn "sport = :$port" | grep -q .; do
        tries=$((tries - 1))
        [ $tries -gt 0 ] && kill -0 "$FRONT_PID" 2>/dev/null || die "haproxy did not start ($dir)"
        sleep 0.05
    done
    PUBLIC=127.0.0.1:$port
}

# main_tls: the handshake storm (TLS=1).
main_tls() {
    command -v nginx >/dev/null || {
        [ "$(id -u)" = 0 ] || die "nginx missing; as root: apt-get install -y nginx"
        log "installing nginx (Debian package)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx \
            >/dev/null || die "apt-get install nginx failed"
    }
    PKI="$OUT/pki"
    mint_pki "$PKI"
    local tls=(--tls-cert "$PKI/cert.pem" --tls-key "$PKI/key.pem") style
    for style in "${STYLE_LIST[@]}"; do
        SCHEME=wss TRUST=(--tls-ca "$PKI/ca.pem")
        log "storm: $N × $style, TLS 1.3, on shardrelay --tls-cert"
        run_case shardrelay-tls shardrelay "$style" "${tls[@]}"
        log "storm: $N × $style, TLS 1.3, on nginx in front of shardrelay"
        run_case nginx-tls nginx "$style"
        if command -v haproxy >/dev/null; then
            log "storm: $N × $style, TLS 1.3, through HAProxy send-proxy-v2 to shardrelay --tls-cert"
            run_case haproxy-tls haproxy "$style" "${tls[@]}" --proxy-protocol \
                --trusted-proxies 127.0.0.1
        fi
        if [ "$style" = server-id ] || [ "$style" = pair ]; then
            log "storm: $N × $style, TLS 1.3, on the baseline (tokio-rustls)"
            run_case baseline-tls baseline "$style" "${tls[@]}"
        fi
        SCHEME=ws TRUST=()
        log "storm: $N × $style, plain, on shardrelay (reference)"
        run_case shardrelay shardrelay "$style"
    done
    rm -rf "$PKI"
    echo "storm-tls $(date -u +%Y-%m-%dT%H:%M:%SZ): $N full TLS 1.3 handshakes + upgrades" \
        "per case from $SOURCES; servers on CPU $RELAY_CPU, load on CPU $LOAD_CPU;" \
        "load average $(cut -d' ' -f1-3 /proc/loadavg)"
    "$LOAD" measure storm-table --dir "$OUT" "${TAGS[@]}" | tee "$OUT/table.txt"
    echo "reports: $OUT"
}

main() {
    for bin in "$SHARDRELAY" "$LOAD" "$BASELINE"; do
        [ -x "$bin" ] || die "$bin missing (cargo build --release; baseline: make bench-compare builds it)"
    done
    [ "$N" -le 19500 ] || die "N=$N: the relay and the load each hold N descriptors (limit $(ulimit -n))"
    mkdir -p "$OUT"
    if [ "$TLS" = 1 ]; then
        [ "$N" -le 9000 ] || die "N=$N: nginx holds 2 descriptors per client (limit $(ulimit -n))"
        main_tls
        return
    fi
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
