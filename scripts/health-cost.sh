#!/usr/bin/env bash
# Relay CPU per `/health` request against a `404`, and RSS under a health-probe flood
# (issue 15, acceptance point 8). Starts a relay on 127.0.0.1:0 and, for each request kind
# in turn, sends HEALTH_REQUESTS requests from HEALTH_CLIENTS loopback client threads
# (one connection per request, as probes do), reading the relay's utime+stime from
# /proc/<pid>/stat before and after, and its VmRSS after each phase.
#
# Environment: HEALTH_REQUESTS (default 20000), HEALTH_CLIENTS (default 8),
# SHARDRELAY_BIN (default: the release build; `SHARDRELAY_BIN=target/debug/shardrelay`
# skips the build), SHARDRELAY_DRIVER, HEALTH_SHARDS (default 2).
# Loopback only; bounded by the request count.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib/relay.sh"

REQUESTS="${HEALTH_REQUESTS:-20000}"
CLIENTS="${HEALTH_CLIENTS:-8}"
SHARDS="${HEALTH_SHARDS:-2}"
OUT="$(mktemp -d "${TMPDIR:-/tmp}/health-cost.XXXXXX")"
trap 'relay_cleanup; rm -rf "$OUT"' EXIT

relay_build
relay_start "$OUT/relay.log" --shards "$SHARDS" --log-level warn

python3 - "$RELAY_PID" "$RELAY_PUBLIC" "$REQUESTS" "$CLIENTS" <<'PY'
import os, socket, sys, threading, time

pid, public, total, clients = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
host, port = public.rsplit(":", 1)
tick = os.sysconf("SC_CLK_TCK")

def cpu_seconds():
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick

def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

def one(path, want):
    s = socket.create_connection((host, int(port)))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    status = int(data.split(b" ", 2)[1])
    if status != want:
        raise SystemExit(f"{path}: status {status}, expected {want}")

def phase(name, path, want):
    per = total // clients
    before_cpu, before_rss, t0 = cpu_seconds(), rss_kib(), time.time()
    peak = [before_rss]
    def worker():
        for i in range(per):
            one(path, want)
            if i % 500 == 0:
                peak[0] = max(peak[0], rss_kib())
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads: t.start()
    for t in threads: t.join()
    n = per * clients
    cpu = cpu_seconds() - before_cpu
    print(f"{name:8} {n} requests in {time.time()-t0:.1f} s: relay CPU {cpu:.2f} s = "
          f"{cpu/n*1e6:.0f} us/request; RSS {before_rss} -> peak {peak[0]} -> {rss_kib()} KiB",
          flush=True)
    return cpu / n

one("/health", 200)
base = phase("404", "/no-such-path", 404)
health = phase("/health", "/health", 200)
healthz = phase("/healthz", "/healthz", 200)
print(f"ratio /health : 404 = {health/base:.2f}, /healthz : 404 = {healthz/base:.2f}")
PY
