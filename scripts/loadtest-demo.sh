#!/usr/bin/env bash
# `make loadtest`: start a relay, drive a short mixed scenario against it (every style
# at once, about 20 s), and print each run's client-side and relay-side tables.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-15s}
WARMUP=${WARMUP:-3s}
RELAY=./target/release/shardrelay
LOAD=./target/release/shardrelay-load
out=$(mktemp -d)
relay_pid=""
cleanup() {
    [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null && wait "$relay_pid" 2>/dev/null
    rm -rf "$out"
}
trap cleanup EXIT

"$RELAY" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --log-level warn \
    >"$out/ready" 2>"$out/relay.log" &
relay_pid=$!
for _ in $(seq 1 100); do
    grep -q listening "$out/ready" 2>/dev/null && break
    sleep 0.05
done
public=$(grep -o 'public=[^ ]*' "$out/ready" | cut -d= -f2)
admin=$(grep -o 'admin=[^ ]*' "$out/ready" | cut -d= -f2)
[ -n "$public" ] || { echo "relay did not start"; cat "$out/relay.log"; exit 1; }
echo "relay up: public=$public admin=$admin"

common=(--target "$public" --admin "$admin" --duration "$DURATION" --warmup "$WARMUP" --workers 1)
pids=()
"$LOAD" pair "${common[@]}" --pairs 200 --rate 5000 --no-relay-stats >"$out/pair.txt" 2>/dev/null & pids+=($!)
"$LOAD" server-id "${common[@]}" --binaries 20 --phones 5 --rate 5000 --no-relay-stats >"$out/server-id.txt" 2>/dev/null & pids+=($!)
for style in session ticket; do
    if ! grep -qi placeholder "src/modes/$style.rs" 2>/dev/null; then
        case $style in
            session) "$LOAD" session "${common[@]}" --sessions 50 --rate 2000 --no-relay-stats >"$out/$style.txt" 2>/dev/null & pids+=($!) ;;
            ticket) "$LOAD" ticket "${common[@]}" --connections 2 --size 8MiB --no-relay-stats >"$out/$style.txt" 2>/dev/null & pids+=($!) ;;
        esac
    fi
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for report in "$out"/*.txt; do
    echo; cat "$report"
done
echo
echo "relay-side view (all styles together):"
"$RELAY" stats --admin "$admin" --count 1
exit $status
