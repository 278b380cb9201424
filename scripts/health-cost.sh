#!/usr/bin/env bash
# Relay CPU per `/health` request against a `404`, and RSS under a health-probe flood
# (issue 15, acceptance point 8). Starts a relay on 127.0.0.1:0 and, for each request kind
# in turn, sends HEALTH_REQUESTS requests from HEALTH_CLIENTS loopback client threads
# (one connection per request, as probes do), reading the relay's utime+stime from
# /proc/<pid>/stat before and after, and its VmRSS after each phase.
#
# Environment: HEALTH_REQUESTS (default 20000), HEALTH_CLIENTS (default 8),
# SHARDRELAY_BIN (default: the release build; `SHARDRELAY_BIN=target/debug/shardrelay`
# skips the build), LOAD_BIN (shardrelay-load, which makes the requests and reads /proc:
# `measure request-cost`; default the release build), SHARDRELAY_DRIVER, HEALTH_SHARDS
# (default 2).
# Loopback only; bounded by the request count.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib/relay.sh"

REQUESTS="${HEALTH_REQUESTS:-20000}"
CLIENTS="${HEALTH_CLIENTS:-8}"
SHARDS="${HEALTH_SHARDS:-2}"
LOAD_BIN=${LOAD_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/shardrelay-load}
OUT="$(mktemp -d "${TMPDIR:-/tmp}/health-cost.XXXXXX")"
trap 'relay_cleanup; rm -rf "$OUT"' EXIT

relay_build
relay_start "$OUT/relay.log" --shards "$SHARDS" --log-level warn

# The requests and the figures: loadtest/src/measure/requests.rs.
curl -fsS -o /dev/null --max-time 5 "http://$RELAY_PUBLIC/health" || die "/health is not answering 200"
"$LOAD_BIN" measure request-cost --pid "$RELAY_PID" --addr "$RELAY_PUBLIC" \
    --requests "$REQUESTS" --clients "$CLIENTS" --ratio-to 404 \
    --phase 404=/no-such-path:404 --phase /health=/health:200 --phase /healthz=/healthz:200
