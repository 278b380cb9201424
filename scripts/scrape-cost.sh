#!/usr/bin/env bash
# Cost of `/stats` and `/metrics` (#20 point 2): relay CPU and wall time per read and the
# body size, on a fresh relay and after a pair load has recorded ~1M forward latencies;
# and the pair load's p99 without and with a scrape of both endpoints every second.
#
# Steps: a relay (SCRAPE_SHARDS shards, default 2) on 127.0.0.1:0; READS sequential reads
# of each endpoint (one connection per read, as scrapers do), the relay's utime+stime
# read before and after; `shardrelay-load pair --rate RATE` for WINDOW s with no scraper,
# then again with `curl /metrics` and `curl /stats` every second; READS reads again.
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

reads() {  # reads LABEL: READS reads of each endpoint; relay CPU µs/read, wall µs/read, bytes
    python3 - "$RELAY_PID" "$RELAY_ADMIN" "$READS" "$1" <<'PY'
import os, socket, sys, time
pid, admin, n, label = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
host, port = admin.rsplit(":", 1)
tick = os.sysconf("SC_CLK_TCK")
def cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick
def get(path):
    s = socket.create_connection((host, int(port)))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    return len(data)
for path in ["/stats", "/metrics"]:
    c0, t0 = cpu(), time.perf_counter()
    size = 0
    for _ in range(n):
        size = get(path)
    c1, t1 = cpu(), time.perf_counter()
    print(f"{label:6} {path:9} relay CPU {1e6 * (c1 - c0) / n:7.1f} us/read, "
          f"wall {1e6 * (t1 - t0) / n:7.1f} us/read, body+head {size} B")
PY
}

load() {  # load LABEL: a pair run; prints its p50/p99/p999, throughput, relay forward p99
    curl -fsS -o /dev/null "http://$RELAY_ADMIN/stats?reset=1"
    "$LOAD_BIN" pair --target "$RELAY_PUBLIC" --admin "$RELAY_ADMIN" --pairs 100 --rate "$RATE" \
        --size 64 --warmup 2s --duration "${WINDOW}s" --drain 2s --json "$OUT/$1.json" \
        >"$OUT/$1.txt" 2>&1 || true
    local fwd
    fwd=$(curl -fsS "http://$RELAY_ADMIN/stats" | jq -c '.totals.histograms.forward | {count, p50, p99, p999}')
    jq -r --arg l "$1" --arg f "$fwd" '"\($l): \(.throughput.messages_per_s | floor) rt/s, client p50 \(.latency_us.p50) p99 \(.latency_us.p99) p999 \(.latency_us.p999) us; relay forward (this run) \($f)"' "$OUT/$1.json"
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
curl -fsS "http://$RELAY_ADMIN/stats" | jq -r '"recorded: forward \(.totals.histograms.forward.count), handshake \(.totals.histograms.handshake.count)"'
reads busy
