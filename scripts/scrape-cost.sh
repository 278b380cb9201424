#!/usr/bin/env bash
# Cost of `/stats` and `/metrics` (#20 point 2): relay CPU and wall time per read and the
# body size, on a fresh relay and after a pair load has recorded ~1M forward latencies;
# and the pair load's p99 without and with a scrape of both endpoints every second.
#
# Steps: a relay (SCRAPE_SHARDS shards, default 2) on 127.0.0.1:0; READS sequential reads
# of each endpoint (one connection per read, as scrapers do), the relay's utime+stime
# read before and after; `shardrelay-load pair --rate RATE` for WINDOW s with no scraper,
# then again with `curl /metrics` and `curl /stats` every second; READS reads again.
# The reads, the CPU figures and the summaries are `shardrelay-load measure`
# (request-cost, run-summary, relay-figure).
# Env: READS (default 1000), RATE (20000), WINDOW (10), SHARDRELAY_BIN, LOAD_BIN.
# Loopback only; bounded: 4 × READS reads and two WINDOW-second loads.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/relay.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/relay.sh"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
LOAD_BIN=${LOAD_BIN:-$TARGET_DIR/release/shardrelay-load}
READS=${READS:-1000}
RATE=${RATE:-20000}
WINDOW=${WINDOW:-10}
OUT="$(mktemp -d "${TMPDIR:-/tmp}/scrape-cost.XXXXXX")"
SCRAPER=""
trap '[ -n "$SCRAPER" ] && kill "$SCRAPER" 2>/dev/null; relay_cleanup; rm -rf "$OUT"' EXIT

relay_build
relay_start "$OUT/relay.log" --shards "${SCRAPE_SHARDS:-2}" --log-level warn

measure() { "$LOAD_BIN" measure "$@"; }

reads() {  # reads LABEL: READS reads of each endpoint; relay CPU µs/read, wall µs/read, bytes
    measure request-cost --pid "$RELAY_PID" --addr "$RELAY_ADMIN" --requests "$READS" \
        --phase "$1 /stats=/stats:200" --phase "$1 /metrics=/metrics:200"
}

load() {  # load LABEL: a pair run; prints its p50/p99/p999, throughput, relay forward p99
    curl -fsS -o /dev/null "http://$RELAY_ADMIN/stats?reset=1"
    "$LOAD_BIN" pair --target "$RELAY_PUBLIC" --admin "$RELAY_ADMIN" --pairs 100 --rate "$RATE" \
        --size 64 --warmup 2s --duration "${WINDOW}s" --drain 2s --json "$OUT/$1.json" \
        >"$OUT/$1.txt" 2>&1 || true
    measure run-summary --label "$1" --report "$OUT/$1.json" --admin "$RELAY_ADMIN"
}

reads fresh
load quiet
( while :; do
    curl -fsS -o /dev/null "http://$RELAY_ADMIN/metrics" || true
    curl -fsS -o /dev/null "http://$RELAY_ADMIN/stats" || true
    sleep 1
  done ) &
SCRAPER=$!
load scraped
kill "$SCRAPER" 2>/dev/null || true
SCRAPER=""
echo "recorded: forward $(measure relay-figure --admin "$RELAY_ADMIN" histograms.forward.count)," \
    "handshake $(measure relay-figure --admin "$RELAY_ADMIN" histograms.handshake.count)"
reads busy
