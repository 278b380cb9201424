#!/usr/bin/env bash
# `make interop`: real clients against the real relay over loopback. Each check starts its
# own relay on 127.0.0.1:0 (trap-killed), and each exits non-zero on any mismatch:
#
#   pyrycode  Python `websockets` as a pyrycode binary and its phones (server-id, §3),
#             relay with --grace 2s                          scripts/interop/pyrycode.py
#   pair      Node `ws` as two arc-relay peers on /?pair= (§4) scripts/interop/pair.js
#   session   headless Chromium (playwright-core) joins a session as the browser, Node
#             `ws` is the host (§5); screenshot target/interop/session.png
#                                                            scripts/interop/session.js
#   session-ws headless Chromium as a /ws browser of the web UI's kind (binaryType
#             "arraybuffer", reconnects with the same code), Node `ws` as the Mac and a
#             second browser; screenshot target/interop/session_ws.png
#                                                            scripts/interop/session_ws.js
#   tickets   curl as the PUT and GET clients of a ticket (§6) scripts/interop/tickets.sh
#   pyrycode-tls, pair-tls  the pyrycode and pair checks over wss:// (SSL_CERT_FILE,
#             NODE_EXTRA_CA_CERTS trust the test CA)
#   session-tls the session check over wss:// (Chromium trusts the test leaf by its key's
#             SHA-256, --ignore-certificate-errors-spki-list)
#   tickets-tls the same over https:// (--tls-cert/--tls-key, PROTOCOL §1.1): a test CA and
#             a leaf for localhost/127.0.0.1 minted with openssl, curl --cacert
#   wscat     one-shot echo through /v1/echo (--enable-echo)
#   pyrycode-cluster, pair-cluster, session-cluster, tickets-cluster  the same clients,
#             unchanged and judged the same, through HAProxy (Debian package, from
#             scripts/install-test-tools.sh) in front of three nodes (PROTOCOL §9,
#             scripts/lib/cluster.sh: the generated haproxy.cfg; tickets minted on node a
#             with the admin token, handed to the workspace's node). About 8 s for the
#             four on a debug build
#
# Tools are cached under target/interop/ (venv, node_modules); the first run installs them,
# and Chromium comes from Debian (`apt-get install -y chromium`) if /usr/bin/chromium is
# missing. A mode whose routes still answer 404 (not built yet) is reported SKIPPED;
# INTEROP_REQUIRE_ALL=1 (or CI set) turns a skip into a failure. INTEROP_ONLY="pair wscat" runs a subset.
set -euo pipefail
# shellcheck source=scripts/lib/relay.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/relay.sh"
# shellcheck source=scripts/lib/cluster.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/cluster.sh"

OUT="$ROOT/target/interop"
HERE="$ROOT/scripts/interop"
VENV="$OUT/venv"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
NPM_PACKAGES=(ws@8.23.0 playwright-core@1.65.1 wscat@6.1.0)
START=$SECONDS
trap relay_cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$OUT"

install_python() {
    local stamp="$VENV/.shardrelay-stamp" want
    want="$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)"
    if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    log "python websockets: installing into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$HERE/requirements.txt" ||
        die "pip install websockets failed"
    echo "$want" >"$stamp"
}

install_node() {
    local stamp="$OUT/node_modules/.shardrelay-stamp" want="${NPM_PACKAGES[*]}"
    if [ -d "$OUT/node_modules" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    command -v npm >/dev/null || die "npm not found (Node.js 18+ is needed for make interop)"
    log "npm: installing ${NPM_PACKAGES[*]} into $OUT/node_modules"
    npm install --silent --no-audit --no-fund --prefix "$OUT" "${NPM_PACKAGES[@]}" || die "npm install failed"
    echo "$want" >"$stamp"
}

install_chromium() {
    [ -x "$CHROMIUM" ] && return 0
    [ "$(id -u)" = 0 ] || die "$CHROMIUM is missing: run 'apt-get install -y chromium' as root (or set CHROMIUM=)"
    log "chromium: apt-get install -y chromium"
    (apt-get install -y -q chromium >"$OUT/apt.log" 2>&1 ||
        { apt-get update -q >>"$OUT/apt.log" 2>&1 && apt-get install -y -q chromium >>"$OUT/apt.log" 2>&1; }) ||
        { tail -n 20 "$OUT/apt.log" >&2; die "apt-get install chromium failed"; }
    [ -x "$CHROMIUM" ] || die "apt-get installed chromium but $CHROMIUM is missing"
}

wanted() {
    [ -z "${INTEROP_ONLY:-}" ] || [[ " $INTEROP_ONLY " == *" $1 "* ]]
}

T_INSTALL=$SECONDS
install_python
install_node
if wanted session || wanted session-ws || wanted session-tls || wanted session-cluster; then
    install_chromium
fi
T_INSTALL=$((SECONDS - T_INSTALL))
relay_build
if wanted tickets || wanted tickets-tls || wanted pyrycode-cluster || wanted pair-cluster ||
    wanted session-cluster || wanted tickets-cluster; then
    load_build
    export LOAD_BIN
fi
export NODE_PATH="$OUT/node_modules"

declare -a SUMMARY=()
FAILED=0
SKIPPED=0

record() { # record NAME RESULT SECONDS NOTE
    SUMMARY+=("$(printf '%-9s %-8s %4ss  %s' "$1" "$2" "$3" "$4")")
}

# http_status ADDR PATH [curl args] -> the status code of a plain request
http_status() {
    local addr="$1" path="$2"
    shift 2
    curl -s --max-time 5 -o /dev/null -w '%{http_code}' "$@" "http://$addr$path" || true
}

check_pyrycode() {
    # trace: the token checks below then cover every log level.
    relay_start "$OUT/pyrycode.relay.log" --grace 2s --max-phones-per-server 16 --log-level trace
    "$VENV/bin/python" "$HERE/pyrycode.py" --public "$RELAY_PUBLIC" --grace 2
    # §3.2/§3.3: the phone token and the push_wake token are never logged.
    if grep -q 'opaque-courier-token\|dGhpcyBpcyBub3QgcmVhbA' "$RELAY_LOG"; then
        echo "  FAIL the relay's log contains a phone token or a push_wake token"
        return 1
    fi
    echo "  ok   no phone token or push_wake token in the relay's log"
}

check_pair() {
    relay_start "$OUT/pair.relay.log" --max-message 256KiB
    node "$HERE/pair.js" --public "$RELAY_PUBLIC" --max-message $((256 * 1024))
}

check_session() {
    relay_start "$OUT/session.relay.log"
    local s
    s="$(http_status "$RELAY_PUBLIC" /mac)"
    if [ "$s" = 404 ]; then
        echo "SKIPPED: session mode not live yet (GET /mac answers 404)"
        return 77
    fi
    # session.js itself exits 77 if /mac is still the placeholder (upgrade, then 1011).
    rm -f "$OUT/session.png"
    node "$HERE/session.js" --public "$RELAY_PUBLIC" --chromium "$CHROMIUM" --screenshot "$OUT/session.png"
}

check_session_ws() {
    # A small --max-message: the page's oversized frame is how the relay closes it.
    relay_start "$OUT/session-ws.relay.log" --max-message 1KiB
    if [ "$(http_status "$RELAY_PUBLIC" /ws)" = 404 ]; then
        echo "SKIPPED: /ws not live yet (GET /ws answers 404)"
        return 77
    fi
    rm -f "$OUT/session_ws.png"
    node "$HERE/session_ws.js" --public "$RELAY_PUBLIC" --chromium "$CHROMIUM" \
        --screenshot "$OUT/session_ws.png" --max-message 1024
}

check_tickets() {
    relay_start "$OUT/tickets.relay.log"
    local s
    s="$(http_status "$RELAY_ADMIN" /v1/tickets -X POST -d '{}')"
    if [ "$s" = 404 ]; then
        echo "SKIPPED: tickets not live yet (POST /v1/tickets answers 404)"
        return 77
    fi
    bash "$HERE/tickets.sh" "$RELAY_PUBLIC" "$RELAY_ADMIN" "$OUT/tickets"
}

# mint_test_pki DIR: a throw-away CA and a leaf for localhost/127.0.0.1 signed by it
# (ca.pem, cert.pem, key.pem); nothing is kept past the run.
mint_test_pki() {
    local dir="$1"
    mkdir -p "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -keyout "$dir/ca.key" -out "$dir/ca.pem" -subj "/CN=shardrelay interop CA" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$dir/key.pem" -out "$dir/leaf.csr" -subj /CN=localhost 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n' >"$dir/leaf.ext"
    openssl x509 -req -in "$dir/leaf.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 1 -extfile "$dir/leaf.ext" -out "$dir/cert.pem" 2>/dev/null
}

check_pyrycode_tls() {
    mint_test_pki "$OUT/pki"
    relay_start "$OUT/pyrycode-tls.relay.log" --grace 2s --max-phones-per-server 16 \
        --tls-cert "$OUT/pki/cert.pem" --tls-key "$OUT/pki/key.pem"
    INTEROP_WS_SCHEME=wss SSL_CERT_FILE="$OUT/pki/ca.pem" \
        "$VENV/bin/python" "$HERE/pyrycode.py" --public "$RELAY_PUBLIC" --grace 2
}

check_pair_tls() {
    mint_test_pki "$OUT/pki"
    relay_start "$OUT/pair-tls.relay.log" --max-message 256KiB \
        --tls-cert "$OUT/pki/cert.pem" --tls-key "$OUT/pki/key.pem"
    INTEROP_WS_SCHEME=wss NODE_EXTRA_CA_CERTS="$OUT/pki/ca.pem" \
        node "$HERE/pair.js" --public "$RELAY_PUBLIC" --max-message $((256 * 1024))
}

check_session_tls() {
    mint_test_pki "$OUT/pki"
    relay_start "$OUT/session-tls.relay.log" \
        --tls-cert "$OUT/pki/cert.pem" --tls-key "$OUT/pki/key.pem"
    # Chromium trusts the test leaf the way a test harness makes a browser trust one: by
    # the SHA-256 of its public key; Node trusts the test CA.
    local spki
    spki="$(openssl x509 -in "$OUT/pki/cert.pem" -pubkey -noout | openssl pkey -pubin -outform der |
        openssl dgst -sha256 -binary | base64)"
    rm -f "$OUT/session-tls.png"
    INTEROP_WS_SCHEME=wss NODE_EXTRA_CA_CERTS="$OUT/pki/ca.pem" \
        INTEROP_CHROMIUM_ARGS="--ignore-certificate-errors-spki-list=$spki" \
        node "$HERE/session.js" --public "$RELAY_PUBLIC" --chromium "$CHROMIUM" \
        --screenshot "$OUT/session-tls.png"
}

check_tickets_tls() {
    mint_test_pki "$OUT/pki"
    relay_start "$OUT/tickets-tls.relay.log" --tls-cert "$OUT/pki/cert.pem" --tls-key "$OUT/pki/key.pem"
    bash "$HERE/tickets.sh" "$RELAY_PUBLIC" "$RELAY_ADMIN" "$OUT/tickets-tls" "$OUT/pki/ca.pem"
}

# The cluster checks: the single-relay clients, unchanged, through HAProxy's address.
check_pyrycode_cluster() {
    trap 'cluster_stop; relay_cleanup' EXIT
    cluster_start "$OUT/pyrycode-cluster" --grace 2s --max-phones-per-server 16
    "$VENV/bin/python" "$HERE/pyrycode.py" --public "$RELAY_PUBLIC" --grace 2
    cluster_alive
}

check_pair_cluster() {
    trap 'cluster_stop; relay_cleanup' EXIT
    cluster_start "$OUT/pair-cluster" --max-message 256KiB
    node "$HERE/pair.js" --public "$RELAY_PUBLIC" --max-message $((256 * 1024))
    cluster_alive
}

check_session_cluster() {
    trap 'cluster_stop; relay_cleanup' EXIT
    cluster_start "$OUT/session-cluster"
    node "$HERE/session.js" --public "$RELAY_PUBLIC" --chromium "$CHROMIUM" \
        --screenshot "$OUT/session-cluster.png"
    cluster_alive
}

check_tickets_cluster() {
    trap 'cluster_stop; relay_cleanup' EXIT
    cluster_start "$OUT/tickets-cluster" --admin-token interop-cluster-token
    ADMIN_TOKEN=interop-cluster-token bash "$HERE/tickets.sh" "$RELAY_PUBLIC" "$RELAY_ADMIN" \
        "$OUT/tickets-cluster"
    cluster_alive
}

check_wscat() {
    relay_start "$OUT/wscat.relay.log" --enable-echo
    local msg line="" ok=1
    msg="{\"wscat\":\"echo\",\"nonce\":\"$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')\"}"
    echo "  wscat -c ws://$RELAY_PUBLIC/v1/echo -x '$msg'"
    # wscat exits when its stdin closes, so it runs as a coprocess (stdin stays open) and
    # we wait for the echoed line, then stop it.
    coproc WSCAT { exec "$OUT/node_modules/.bin/wscat" -c "ws://$RELAY_PUBLIC/v1/echo" -x "$msg" -w -1 2>&1; }
    local wpid=$WSCAT_PID
    if IFS= read -r -t 10 -u "${WSCAT[0]}" line && [ "$line" = "$msg" ]; then
        ok=0
    fi
    kill "$wpid" 2>/dev/null || true
    wait "$wpid" 2>/dev/null || true
    if [ "$ok" = 0 ]; then
        echo "  ok   wscat got its message back unchanged: $line"
        echo "wscat: 1 passed, 0 failed"
    else
        echo "  FAIL wscat expected $msg, got: ${line:-nothing within 10s}"
        echo "wscat: 0 passed, 1 failed"
    fi
    return $ok
}

for name in pyrycode pair session session-ws tickets wscat pyrycode-tls pair-tls session-tls \
    tickets-tls pyrycode-cluster pair-cluster session-cluster tickets-cluster; do
    wanted "$name" || continue
    log "── interop: $name"
    t0=$SECONDS
    set +e
    # The check runs in a subshell (so its output can be teed); the subshell owns its relay
    # and kills it on any exit.
    (
        set -e
        trap relay_cleanup EXIT
        trap 'exit 130' INT TERM
        "check_${name//-/_}"
        relay_alive
    ) 2>&1 | tee "$OUT/$name.log"
    rc=${PIPESTATUS[0]}
    set -e
    dt=$((SECONDS - t0))
    case "$rc" in
        0) record "$name" PASS "$dt" "" ;;
        77)
            note="$(grep -o 'not live yet.*' "$OUT/$name.log" | head -1)"
            record "$name" SKIPPED "$dt" "${note:-mode not live yet}"
            SKIPPED=$((SKIPPED + 1))
            ;;
        *)
            case "$name" in
                *-cluster) logs="$OUT/$name/ (nodes' and haproxy's logs)" ;;
                *) logs="$OUT/$name.relay.log" ;;
            esac
            record "$name" FAIL "$dt" "see $OUT/$name.log and $logs"
            FAILED=$((FAILED + 1))
            ;;
    esac
done

log "interop summary (tools install/check ${T_INSTALL}s, total $((SECONDS - START))s):"
for line in "${SUMMARY[@]}"; do echo "  $line" >&2; done
if [ "$FAILED" -gt 0 ]; then
    die "$FAILED interop check(s) failed"
fi
if [ "$SKIPPED" -gt 0 ] && { [ "${INTEROP_REQUIRE_ALL:-0}" = 1 ] || [ -n "${CI:-}" ]; }; then
    die "$SKIPPED interop check(s) skipped (INTEROP_REQUIRE_ALL=1 or CI set: every style is live)"
fi
log "interop passed"
