#!/usr/bin/env bash
# Interop: curl as the PUT and GET clients of a ticket (§6).
#
# Usage: tickets.sh PUBLIC_ADDR ADMIN_ADDR WORKDIR [CA_PEM]
# With CA_PEM the public listener is TLS: every request is https:// with --cacert CA_PEM
# (the admin listener stays plain).
# Mints tickets on the admin API, PUTs a file (Content-Length, then chunked) while a
# GET downloads it, and compares sha256; checks the PUT's JSON answer and that a used
# ticket answers 410. curl waits on the transfer itself: no sleeps. Exit 1 on mismatch.
# LOAD_BIN (shardrelay-load; scripts/interop.sh builds it) reads the JSON answers:
# `measure json-field` and `measure put-answer`.
set -uo pipefail  # no -e: each check records its own result
PUBLIC="$1"
ADMIN="$2"
WORK="$3"
BASE="http://$PUBLIC"
CURL_TLS=()
if [ -n "${4:-}" ]; then
    BASE="https://$PUBLIC"
    CURL_TLS=(--cacert "$4")
fi
rm -rf "${WORK:?}"
mkdir -p "$WORK"
passes=0
failures=0
check() { # check COND_RC WHAT
    if [ "$1" = 0 ]; then passes=$((passes + 1)); echo "  ok   $2"; else failures=$((failures + 1)); echo "  FAIL $2"; fi
}
if [ ! -x "${LOAD_BIN:-}" ]; then
    echo "tickets.sh: LOAD_BIN must name the shardrelay-load binary" >&2
    exit 1
fi
json_field() { "$LOAD_BIN" measure json-field "$@"; }
# ADMIN_TOKEN (optional): the relays' admin token, sent with each mint (a cluster hands a
# mint to the workspace's node only with it).
ADMIN_AUTH=()
[ -n "${ADMIN_TOKEN:-}" ] && ADMIN_AUTH=(-H "Authorization: Bearer $ADMIN_TOKEN")

mint() { # mint OUTFILE -> prints the HTTP status; body in OUTFILE
    curl -sS --max-time 10 -o "$1" -w '%{http_code}' -X POST "http://$ADMIN/v1/tickets" \
        -H 'Content-Type: application/json' "${ADMIN_AUTH[@]}" \
        -d '{"workspace_id":"w","source_id":"s","dest_id":"d"}'
}

# transfer NAME SIZE_BYTES [chunked]
transfer() {
    local name="$1" size="$2" mode="${3:-length}"
    local src="$WORK/$name.src" dst="$WORK/$name.dst"
    rm -f "$dst" "$WORK/$name".*.json "$WORK/$name".*.err "$WORK/$name".get.*
    head -c "$size" /dev/urandom >"$src"
    local status ticket
    status="$(mint "$WORK/$name.mint.json")"
    ticket="$(json_field "$WORK/$name.mint.json" ticket)"
    [[ "$status" == 201 && "$ticket" =~ ^rly_[A-Za-z0-9_-]{43}$ ]]
    check $? "$name: POST /v1/tickets -> 201 with a rly_ ticket (got $status)"

    # GET first (it waits for the PUT side), then PUT; wait for both.
    curl -sS --max-time 60 -o "$dst" -D "$WORK/$name.get.headers" -w '%{http_code}' \
        -H "Authorization: Bearer $ticket" "${CURL_TLS[@]}" "$BASE/v1/relay" >"$WORK/$name.get.status" 2>"$WORK/$name.get.err" &
    local get_pid=$!
    local put_args=(-T "$src")
    if [ "$mode" = chunked ]; then
        put_args=(-T - -H 'Transfer-Encoding: chunked')
    fi
    local put_status
    put_status="$(curl -sS --max-time 60 -o "$WORK/$name.put.json" -w '%{http_code}' \
        -H "Authorization: Bearer $ticket" "${put_args[@]}" "${CURL_TLS[@]}" "$BASE/v1/relay" <"$src" \
        2>"$WORK/$name.put.err" || true)"
    local get_rc=0
    wait "$get_pid" || get_rc=$?
    local get_status
    get_status="$(cat "$WORK/$name.get.status")"
    [ "$get_rc" = 0 ] && [ "$get_status" = 200 ]
    check $? "$name: GET -> 200, curl exit 0 (got $get_status, rc $get_rc $(head -c 200 "$WORK/$name.get.err"))"
    [ "$put_status" = 200 ]
    check $? "$name: PUT -> 200 (got $put_status $(head -c 200 "$WORK/$name.put.err"))"
    "$LOAD_BIN" measure put-answer "$WORK/$name.put.json" --status ok --bytes "$size"
    check $? "$name: PUT answer {\"bytes\":$size,\"status\":\"ok\"} (got $(head -c 200 "$WORK/$name.put.json"))"
    local a b
    a="$(sha256sum <"$src" | cut -d' ' -f1)"
    b="$(sha256sum <"$dst" | cut -d' ' -f1)"
    [ "$a" = "$b" ]
    check $? "$name: $size bytes, sha256 equal ($a / $b)"
    grep -qi '^content-type: application/octet-stream' "$WORK/$name.get.headers"
    check $? "$name: GET Content-Type application/octet-stream"
    if [ "$mode" = length ]; then
        grep -qi "^content-length: $size"$'\r'"\$" "$WORK/$name.get.headers"
        check $? "$name: GET Content-Length $size (the PUT gave one)"
    else
        grep -qi '^transfer-encoding: chunked' "$WORK/$name.get.headers"
        check $? "$name: GET chunked (the PUT was chunked)"
    fi
    # Single use: the ticket has ended.
    local again
    again="$(curl -sS --max-time 10 -o "$WORK/$name.again.json" -w '%{http_code}' \
        -H "Authorization: Bearer $ticket" "${CURL_TLS[@]}" "$BASE/v1/relay")"
    [ "$again" = 410 ]
    check $? "$name: the used ticket answers 410 (got $again $(head -c 100 "$WORK/$name.again.json"))"
}

echo "curl PUT -> curl GET through a ticket"
transfer small 1
transfer file-5MiB $((5 * 1024 * 1024 + 7))
transfer chunked-3MiB $((3 * 1024 * 1024 + 1)) chunked

# aborted WORKDIR-NAME HOW: the GET side must see an error, never a clean short file.
#   over-max   mint with max_bytes 100000, PUT 1 MiB: PUT 413, GET aborted
#   put-breaks a rate-limited PUT (Content-Length 4 MiB) is killed once the GET has bytes:
#              GET aborted
aborted() {
    local name="$1" how="$2"
    local src="$WORK/$name.src" dst="$WORK/$name.dst" body ticket
    rm -f "$dst" "$WORK/$name".*.json "$WORK/$name".*.err
    head -c $((4 * 1024 * 1024)) /dev/urandom >"$src"
    if [ "$how" = over-max ]; then
        body='{"workspace_id":"w","source_id":"s","dest_id":"d","max_bytes":100000}'
    else
        body='{"workspace_id":"w","source_id":"s","dest_id":"d"}'
    fi
    curl -sS --max-time 10 -o "$WORK/$name.mint.json" -X POST "http://$ADMIN/v1/tickets" \
        "${ADMIN_AUTH[@]}" -d "$body"
    ticket="$(json_field "$WORK/$name.mint.json" ticket)"
    curl -sS --max-time 60 -o "$dst" -H "Authorization: Bearer $ticket" "${CURL_TLS[@]}" "$BASE/v1/relay" \
        2>"$WORK/$name.get.err" &
    local get_pid=$! put_pid
    if [ "$how" = over-max ]; then
        local put_status
        put_status="$(curl -sS --max-time 60 -o "$WORK/$name.put.json" -w '%{http_code}' \
            -H "Authorization: Bearer $ticket" -T "$src" "${CURL_TLS[@]}" "$BASE/v1/relay" 2>"$WORK/$name.put.err")"
        "$LOAD_BIN" measure put-answer "$WORK/$name.put.json" --status error
        local body_ok=$?
        [ "$put_status" = 413 ] && [ "$body_ok" = 0 ]
        check $? "$name: PUT over max_bytes -> 413 {\"bytes\":n,\"status\":\"error\"} (got $put_status $(head -c 120 "$WORK/$name.put.json"))"
    else
        curl -sS --max-time 60 -o /dev/null --limit-rate 200k -H "Authorization: Bearer $ticket" \
            -T "$src" "${CURL_TLS[@]}" "$BASE/v1/relay" 2>/dev/null &
        put_pid=$!
        # Wait (polling with a deadline) until the GET has received some of the body.
        local deadline=$((SECONDS + 20))
        while [ "$(stat -c %s "$dst" 2>/dev/null || echo 0)" -lt 65536 ] && [ "$SECONDS" -lt "$deadline" ]; do
            read -r -t 0.05 <> <(:) || true
        done
        kill "$put_pid" 2>/dev/null
        wait "$put_pid" 2>/dev/null
    fi
    local get_rc=0
    wait "$get_pid" || get_rc=$?
    local got
    got="$(stat -c %s "$dst" 2>/dev/null || echo 0)"
    [ "$get_rc" != 0 ] && [ "$got" -lt $((4 * 1024 * 1024)) ]
    check $? "$name: the GET's curl reports an error, not a clean short file (curl exit $get_rc after $got bytes: $(head -c 120 "$WORK/$name.get.err"))"
}

echo "aborted transfers"
aborted over-max over-max
aborted put-breaks put-breaks

echo "bad tickets"
s="$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "${CURL_TLS[@]}" "$BASE/v1/relay")"
[ "$s" = 401 ]; check $? "GET without Authorization -> 401 (got $s)"
s="$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer rly_$(printf 'A%.0s' $(seq 43))" "${CURL_TLS[@]}" "$BASE/v1/relay")"
[ "$s" = 404 ]; check $? "GET with an unknown well-formed ticket -> 404 (got $s)"

echo "tickets (curl): $passes passed, $failures failed"
[ "$failures" = 0 ]
