#!/usr/bin/env bash
# Tools the operator tests use, from Debian's packages: promtool and the prometheus
# server (package `prometheus`) for `promtool check metrics` / `check rules` and for
# evaluating every dashboard query against a scraped relay, tmux for the `shardrelay stats` screen
# test, systemd's `systemd-analyze` for the unit file check, and HAProxy (package
# `haproxy`) in front of the relay with `send-proxy-v2` for tests/proxy_protocol.rs. Idempotent: installs
# only what is missing; needs root for apt-get (without it, says what is missing and
# exits 0, and the tests that need a tool print a loud SKIPPED line).
set -euo pipefail

need=()
{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || need+=(prometheus)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
[ ${#need[@]} -eq 0 ] && { echo "test tools: all present"; exit 0; }

if [ "$(id -u)" != 0 ]; then
    echo "test tools: missing ${need[*]}; run as root: apt-get install -y ${need[*]}" >&2
    exit 0
fi
echo "test tools: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 &&
      apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null; }
echo "test tools: installed ${need[*]}"
