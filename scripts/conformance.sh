#!/usr/bin/env bash
# `make conformance`: the Autobahn|Testsuite fuzzing client against the relay's diagnostic
# echo route (`GET /v1/echo`, only served with --enable-echo).
#
# * installs autobahntestsuite (Python 2.7 only) into target/conformance/venv, once;
#   later runs reuse it (the stamp file records the pinned requirements);
# * starts the relay on 127.0.0.1:0 with --enable-echo --max-message 16MiB --max-queue
#   64MiB (cases 9.* send messages up to 16 MiB; the defaults would close them 1009);
# * runs `wstest -m fuzzingclient` over every case except 12.* and 13.* (compression:
#   the relay negotiates no extensions);
# * fails unless every case run is OK, NON-STRICT or INFORMATIONAL (or 2.10 answered for
#   its latest ping only, PROTOCOL §2.1), and rewrites docs/conformance.md with the counts
#   (CONFORMANCE_DOC=0 leaves the doc alone). The judgement is `shardrelay-load measure
#   autobahn-report` (loadtest/src/measure/autobahn.rs); Python (2.7) only runs the suite.
#
# The relay picks its driver as usual; `SHARDRELAY_DRIVER=epoll CONFORMANCE_DOC=0 make
# conformance` runs the suite over the epoll driver without touching the doc.
#
# CONFORMANCE_TLS=1 runs the same cases over wss:// (PROTOCOL §1.1): a throw-away P-256
# pair minted with openssl, the relay with --tls-cert/--tls-key (wstest does not verify
# the certificate); implies CONFORMANCE_DOC=0 unless it is set.
#
# Python 2.7 comes from pyenv (~/.pyenv/versions/2.7.18) unless PYTHON27 names another.
set -euo pipefail
# shellcheck source=scripts/lib/relay.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/relay.sh"

OUT="$ROOT/target/conformance"
VENV="$OUT/venv"
REQS="$ROOT/scripts/conformance/requirements.txt"
REPORTS="$OUT/reports"
START=$SECONDS
trap relay_cleanup EXIT
trap 'exit 130' INT TERM

find_python27() {
    local candidate
    for candidate in "${PYTHON27:-}" "$HOME/.pyenv/versions/2.7.18/bin/python" \
        "$(command -v pyenv >/dev/null 2>&1 && pyenv prefix 2.7.18 2>/dev/null)/bin/python" \
        "$(command -v python2.7 || true)"; do
        [ -n "$candidate" ] && [ -x "$candidate" ] || continue
        if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (2, 7) else 1)' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

install_wstest() {
    local stamp="$VENV/.shardrelay-stamp"
    local want
    want="$(sha256sum "$REQS" | cut -d' ' -f1)"
    if [ -x "$VENV/bin/wstest" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        log "autobahntestsuite: cached in $VENV"
        return 0
    fi
    local py
    py="$(find_python27)" || die "Python 2.7 not found (autobahntestsuite needs it): install it with pyenv (pyenv install 2.7.18) or set PYTHON27"
    log "autobahntestsuite: installing into $VENV with $py (first run only: a few minutes)"
    rm -rf "$VENV" "$OUT/bootstrap"
    mkdir -p "$OUT"
    # virtualenv itself goes to a private directory, not the user's site-packages.
    if ! "$py" -m virtualenv --version >/dev/null 2>&1; then
        "$py" -m pip install --quiet --disable-pip-version-check --target "$OUT/bootstrap" 'virtualenv<20.22' \
            2> >(grep -v DEPRECATION >&2) || die "pip install virtualenv failed"
    fi
    PYTHONPATH="$OUT/bootstrap" "$py" -m virtualenv --quiet "$VENV" || die "virtualenv failed"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQS" \
        2> >(grep -v DEPRECATION >&2) || die "pip install autobahntestsuite failed"
    "$VENV/bin/wstest" --autobahnversion >/dev/null || die "wstest does not run"
    echo "$want" >"$stamp"
}

install_wstest
relay_build
load_build

LIMITS=(--max-message 16MiB --max-queue 64MiB)
SCHEME=ws
TLS_FLAGS=()
if [ "${CONFORMANCE_TLS:-0}" = 1 ]; then
    SCHEME=wss
    CONFORMANCE_DOC="${CONFORMANCE_DOC:-0}"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -keyout "$OUT/tls-key.pem" -out "$OUT/tls-cert.pem" -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -addext "basicConstraints=critical,CA:FALSE" 2>/dev/null || die "openssl could not mint a test pair"
    TLS_FLAGS=(--tls-cert "$OUT/tls-cert.pem" --tls-key "$OUT/tls-key.pem")
fi
relay_start "$OUT/relay.log" --enable-echo "${LIMITS[@]}" "${TLS_FLAGS[@]}"

rm -rf "$REPORTS"
mkdir -p "$REPORTS"
SPEC="$OUT/fuzzingclient.json"
cat >"$SPEC" <<EOF
{
  "outdir": "$REPORTS",
  "servers": [{"agent": "shardrelay", "url": "$SCHEME://$RELAY_PUBLIC/v1/echo"}],
  "cases": ["*"],
  "exclude-cases": ["12.*", "13.*"],
  "exclude-agent-cases": {}
}
EOF

log "wstest -m fuzzingclient against $SCHEME://$RELAY_PUBLIC/v1/echo (log: $OUT/wstest.log)"
T0=$SECONDS
(cd "$OUT" && "$VENV/bin/wstest" -m fuzzingclient -s "$SPEC") >"$OUT/wstest.log" 2>&1 || {
    tail -n 30 "$OUT/wstest.log" >&2
    die "wstest exited non-zero"
}
WSTEST_SECONDS=$((SECONDS - T0))
relay_alive
relay_stop

DOC_ARGS=()
if [ "${CONFORMANCE_DOC:-1}" != "0" ]; then
    DOC_ARGS=(--doc "$ROOT/docs/conformance.md")
fi
"$LOAD_BIN" measure autobahn-report \
    --index "$REPORTS/index.json" \
    --agent shardrelay \
    --version "$RELAY_VERSION" \
    --driver "$RELAY_DRIVER" \
    --relay-flags="--enable-echo ${LIMITS[*]}${TLS_FLAGS:+ (over TLS)}" \
    --wstest "$("$VENV/bin/pip" show autobahntestsuite 2>/dev/null | sed -n 's/^Version: //p')" \
    --seconds "$WSTEST_SECONDS" \
    "${DOC_ARGS[@]}"
log "conformance passed in $((SECONDS - START))s"
