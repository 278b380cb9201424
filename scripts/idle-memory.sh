#!/usr/bin/env bash
# Idle memory per upgraded connection: start a relay, then `shardrelay-load measure
# idle-memory` warms it up (WARM connections of the style opened and closed, so that code
# pages, the stats machinery and the runtime's fixed structures are in before the
# baseline), holds N idle connections of one style, and reports (RSS with them − RSS
# before) ÷ N, the kernel's slab and TCP figures, and any growth across a close-and-reopen
# churn (loadtest/src/measure/idle_memory.rs). This script only starts the relay.
# Env: SHARDRELAY_BIN, SOAK_LOAD_BIN, IDLE_CONNECT_RATE (default 5000/s), IDLE_WARM
# (default 100; 0 measures from a relay that has served nothing).
# Usage: scripts/idle-memory.sh STYLE [N]   (STYLE: pair | server-id | echo)
set -euo pipefail
cd "$(dirname "$0")/.."
style=${1:-pair}
n=${2:-15000}
SHARDRELAY_BIN=${SHARDRELAY_BIN:-./target/release/shardrelay}
LOAD=${SOAK_LOAD_BIN:-./target/release/shardrelay-load}
source scripts/lib/relay.sh
trap relay_cleanup EXIT
out=$(mktemp -d)
extra=()
[ "$style" = echo ] && extra=(--enable-echo)
relay_start "$out/relay.log" --log-level warn "${extra[@]}"
"$LOAD" measure idle-memory --pid "$RELAY_PID" --target "$RELAY_PUBLIC" --admin "$RELAY_ADMIN" \
    --style "$style" --connections "$n" --warm "${IDLE_WARM:-100}" \
    --connect-rate "${IDLE_CONNECT_RATE:-5000}"
rm -rf "$out"
