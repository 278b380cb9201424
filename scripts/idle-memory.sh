#!/usr/bin/env bash
# Idle memory per upgraded connection: start a relay, then `shardrelay-load measure
# idle-memory` warms it up (WARM connections of the style opened and closed, so that code
# pages, the stats machinery and the runtime's fixed structures are in before the
# baseline), holds N idle connections of one style, and reports (RSS with them − RSS
# before) ÷ N, the kernel's slab and TCP figures, and any growth across a close-and-reopen
# churn (loadtest/src/measure/idle_memory.rs). This script only starts the relay.
# Env: SHARDRELAY_BIN, SOAK_LOAD_BIN, IDLE_CONNECT_RATE (default 5000/s), IDLE_WARM
# (default 100; 0 measures from a relay that has served nothing), IDLE_TLS=1 (the relay
# with a throw-away P-256 pair minted by openssl, connections over wss://),
# IDLE_UP_TIMEOUT (seconds the N connections may take to come up, default 120),
# IDLE_VIA=nginx (the same throw-away pair on nginx, one worker, terminating TLS in front
# of the plain relay: nginx's RSS per connection is reported beside the relay's; nginx
# holds two descriptors per client, so N ≤ 9000 under a 20,000 limit); IDLE_VIA=haproxy
# (HAProxy in `mode http` running `shardrelay haproxy-config` for this one relay, PROXY
# v2 to it, plain: its RSS per connection beside the relay's, as for nginx).
# Usage: scripts/idle-memory.sh STYLE [N]   (STYLE: pair | server-id | echo)
set -euo pipefail
cd "$(dirname "$0")/.."
style=${1:-pair}
n=${2:-15000}
SHARDRELAY_BIN=${SHARDRELAY_BIN:-./target/release/shardrelay}
LOAD=${SOAK_LOAD_BIN:-./target/release/shardrelay-load}
source scripts/lib/relay.sh
source scripts/lib/nginx.sh
trap relay_cleanup EXIT
out=$(mktemp -d)
extra=()
[ "$style" = echo ] && extra=(--enable-echo)
tls=()
front=()
if [ "${IDLE_TLS:-0}" = 1 ] || [ "${IDLE_VIA:-}" = nginx ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -keyout "$out/key.pem" -out "$out/cert.pem" -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -addext "basicConstraints=critical,CA:FALSE" 2>/dev/null || die "openssl could not mint a test pair"
    [ "${IDLE_VIA:-}" = nginx ] || extra+=(--tls-cert "$out/cert.pem" --tls-key "$out/key.pem")
    tls=(--tls-ca "$out/cert.pem")
fi
[ "${IDLE_VIA:-}" = haproxy ] && extra+=(--proxy-protocol --trusted-proxies 127.0.0.1)
relay_start "$out/relay.log" --log-level warn "${extra[@]}"
target=$RELAY_PUBLIC
if [ "${IDLE_VIA:-}" = haproxy ]; then
    command -v haproxy >/dev/null || die "haproxy missing (scripts/install-test-tools.sh)"
    port=$("$LOAD" measure free-port)
    "$SHARDRELAY_BIN" haproxy-config --nodes "solo=$RELAY_PUBLIC" --listen "127.0.0.1:$port" \
        >"$out/haproxy.cfg"
    haproxy -db -f "$out/haproxy.cfg" >/dev/null 2>"$out/haproxy.log" &
    HAPROXY_PID=$!
    trap 'kill "$HAPROXY_PID" 2>/dev/null; relay_cleanup' EXIT
    "$LOAD" measure wait-port "127.0.0.1:$port" || die "haproxy did not listen"
    target=127.0.0.1:$port
    front=(--front-pid "$HAPROXY_PID")
fi
if [ "${IDLE_VIA:-}" = nginx ]; then
    command -v nginx >/dev/null || die "nginx missing (apt-get install nginx)"
    PKI=$out PUBLIC=$RELAY_PUBLIC
    start_nginx "$out/nginx"
    target=$PUBLIC
    front=(--front-pid "$FRONT_PID")
    for pid in $(pgrep -P "$FRONT_PID"); do front+=(--front-pid "$pid"); done
    trap 'kill "$FRONT_PID" 2>/dev/null; relay_cleanup' EXIT
fi
"$LOAD" measure idle-memory --pid "$RELAY_PID" --target "$target" --admin "$RELAY_ADMIN" \
    --style "$style" --connections "$n" --warm "${IDLE_WARM:-100}" \
    --connect-rate "${IDLE_CONNECT_RATE:-5000}" --up-timeout "${IDLE_UP_TIMEOUT:-120}" "${tls[@]}" "${front[@]}"
rm -rf "$out"
