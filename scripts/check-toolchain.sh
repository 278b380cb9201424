#!/usr/bin/env bash
# Fail early and clearly when the Rust toolchain is older than Cargo.toml's
# `rust-version` (Debian's packaged rustc is far older; an old cargo would otherwise stop
# on the lock file format with a confusing message).
set -euo pipefail
cd "$(dirname "$0")/.."
need=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -n1)
rustc_bin=${RUSTC:-rustc}
if ! have=$("$rustc_bin" --version 2>/dev/null | awk '{print $2}'); then
    echo "shardrelay needs Rust >= $need, and no rustc was found." >&2
    echo "Install it with rustup: rustup toolchain install stable" >&2
    exit 1
fi
older=$(printf '%s\n%s\n' "$need" "${have%%-*}" | sort -V | head -n1)
if [ "$older" != "$need" ]; then
    echo "shardrelay needs Rust >= $need; this rustc is $have ($(command -v "$rustc_bin"))." >&2
    echo "Debian's packaged rustc is too old: install a current toolchain with rustup" >&2
    echo "(rustup toolchain install stable)." >&2
    exit 1
fi
