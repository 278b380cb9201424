#!/usr/bin/env bash
# Idle memory per upgraded connection: start a relay, hold N idle connections of one
# style with shardrelay-load, and report (RSS with them − RSS before) ÷ N.
# Usage: scripts/idle-memory.sh STYLE [N]   (STYLE: pair | server-id | echo)
set -euo pipefail
cd "$(dirname "$0")/.."
style=${1:-pair}
n=${2:-15000}
RELAY=./target/release/shardrelay
LOAD=./target/release/shardrelay-load
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
"$RELAY" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --log-level warn "${extra[@]}" \
    >"$out/ready" 2>"$out/relay.log" &
relay_pid=$!
for _ in $(seq 1 100); do grep -q listening "$out/ready" 2>/dev/null && break; sleep 0.05; done
public=$(grep -o 'public=[^ ]*' "$out/ready" | cut -d= -f2)
admin=$(grep -o 'admin=[^ ]*' "$out/ready" | cut -d= -f2)
rss() { awk '/VmRSS/ {print $2}' "/proc/$relay_pid/status"; }
open_conns() {
    curl -s "http://$admin/stats" | python3 -c 'import json,sys; print(sum(json.load(sys.stdin)["totals"]["connections"].values()))'
}
# Warm the allocator and the runtime with a first small round, so the figure is the
# steady-state cost of a connection, not first-touch of the heap.
before=$(rss)
"$LOAD" idle --style "$style" --target "$public" --admin "$admin" --connections "$n" \
    --duration 600s --connect-rate 5000 --source-ips 127.0.0.1-127.0.0.8 --no-relay-stats \
    >"$out/load.txt" 2>&1 &
load_pid=$!
deadline=$((SECONDS + 120))
while [ "$(open_conns)" -lt "$n" ]; do
    [ $SECONDS -lt $deadline ] || { echo "connections never reached $n"; cat "$out/load.txt"; exit 1; }
    sleep 0.5
done
sleep 2  # let the last handshakes' buffers be released
after=$(rss)
echo "style=$style connections=$n rss_before_kib=$before rss_after_kib=$after per_conn_bytes=$(( (after - before) * 1024 / n ))"
