# shellcheck shell=bash
# Shared helpers for the scripts that start a relay (source this file).
#
# relay_build        build the release binary (`cargo build --release`; honours CARGO_TARGET_DIR);
#                    SHARDRELAY_BIN=/path/to/shardrelay skips the build and tests that binary
# relay_start LOG ARGS  start it on 127.0.0.1:0 (public and admin), wait for its ready line,
#                    set RELAY_PID, RELAY_PUBLIC, RELAY_ADMIN, RELAY_DRIVER, RELAY_VERSION,
#                    RELAY_LOG (its stderr); SHARDRELAY_DRIVER etc. reach it from the env
# relay_stop         SIGTERM it, wait (bounded), SIGKILL if it is still there
# load_build         set LOAD_BIN to the load generator, whose `measure` subcommands read
#                    and judge what the scripts collect: LOAD_BIN (or SOAK_LOAD_BIN) if
#                    set, else the one beside the relay binary, built (`cargo build
#                    -p shardrelay-load`, release when the relay is a release build; a
#                    no-op when it is up to date)
#
# Call `trap relay_cleanup EXIT` (or chain it) so the relay never outlives the script.
# Nothing here sleeps to synchronise: the ready line is read from a FIFO with a timeout.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CARGO="${CARGO:-cargo}"
RELAY_BIN="${SHARDRELAY_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/shardrelay}"
RELAY_READY_TIMEOUT="${RELAY_READY_TIMEOUT:-20}"
RELAY_PID=""
RELAY_PUBLIC=""
RELAY_ADMIN=""
RELAY_VERSION=""
RELAY_DRIVER=""
RELAY_LOG=""
_RELAY_DRAIN_PID=""
_RELAY_TMP=""

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

relay_build() {
    if [ -n "${SHARDRELAY_BIN:-}" ]; then
        [ -x "$RELAY_BIN" ] || die "SHARDRELAY_BIN=$RELAY_BIN is not an executable"
        log "using SHARDRELAY_BIN=$RELAY_BIN (no build)"
        return 0
    fi
    log "building the relay: $CARGO build --release"
    (cd "$ROOT" && "$CARGO" build --release --quiet) || die "cargo build --release failed"
    [ -x "$RELAY_BIN" ] || die "no relay binary at $RELAY_BIN"
}

load_build() {
    LOAD_BIN="${LOAD_BIN:-${SOAK_LOAD_BIN:-}}"
    if [ -n "$LOAD_BIN" ]; then
        [ -x "$LOAD_BIN" ] || die "LOAD_BIN=$LOAD_BIN is not an executable"
        return 0
    fi
    local dir profile=()
    dir="$(cd "$(dirname "$RELAY_BIN")" && pwd)"
    case "$(basename "$dir")" in
        debug) ;;
        release) profile=(--release) ;;
        *)
            dir="${CARGO_TARGET_DIR:-$ROOT/target}/release"
            profile=(--release)
            ;;
    esac
    LOAD_BIN="$dir/shardrelay-load"
    log "building the load generator: $CARGO build ${profile[*]} -p shardrelay-load"
    (cd "$ROOT" && CARGO_TARGET_DIR="$(dirname "$dir")" "$CARGO" build "${profile[@]}" --quiet \
        -p shardrelay-load) || die "cargo build -p shardrelay-load failed"
    [ -x "$LOAD_BIN" ] || die "no load generator at $LOAD_BIN"
}

# relay_start LOGFILE [relay flags...]
relay_start() {
    local logfile="$1"
    shift
    relay_stop
    _RELAY_TMP="$(mktemp -d "${TMPDIR:-/tmp}/shardrelay-script.XXXXXX")"
    mkfifo "$_RELAY_TMP/ready"
    RELAY_LOG="$logfile"
    : >"$RELAY_LOG"
    "$RELAY_BIN" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 "$@" \
        >"$_RELAY_TMP/ready" 2>>"$RELAY_LOG" &
    RELAY_PID=$!
    local line=""
    exec {_relay_fd}<"$_RELAY_TMP/ready"
    if ! IFS= read -r -t "$RELAY_READY_TIMEOUT" -u "$_relay_fd" line; then
        exec {_relay_fd}<&-
        log "relay log:"; tail -n 30 "$RELAY_LOG" >&2
        relay_stop
        die "the relay printed no ready line within ${RELAY_READY_TIMEOUT}s (flags: $*)"
    fi
    # Keep draining its stdout so a later write never meets a closed pipe.
    cat <&"$_relay_fd" >>"$RELAY_LOG" &
    _RELAY_DRAIN_PID=$!
    exec {_relay_fd}<&-
    case "$line" in
        "shardrelay: listening "*) ;;
        *) relay_stop; die "unexpected first stdout line from the relay: $line" ;;
    esac
    local word
    for word in $line; do
        case "$word" in
            public=*) RELAY_PUBLIC="${word#public=}" ;;
            admin=*) RELAY_ADMIN="${word#admin=}" ;;
            driver=*) RELAY_DRIVER="${word#driver=}" ;;
        esac
    done
    [ -n "$RELAY_PUBLIC" ] && [ -n "$RELAY_ADMIN" ] || die "cannot parse the ready line: $line"
    RELAY_VERSION="$(curl -fsS --max-time 5 "http://$RELAY_ADMIN/health" |
        sed -n 's/.*"version" *: *"\([^"]*\)".*/\1/p' 2>/dev/null || true)"
    RELAY_VERSION="${RELAY_VERSION:-?}"
    log "relay pid $RELAY_PID public=$RELAY_PUBLIC admin=$RELAY_ADMIN driver=$RELAY_DRIVER version=$RELAY_VERSION ($*)"
}

relay_stop() {
    if [ -n "$RELAY_PID" ] && kill -0 "$RELAY_PID" 2>/dev/null; then
        kill -TERM "$RELAY_PID" 2>/dev/null || true
        # Bounded wait for a clean exit (it drains for up to --drain-timeout): tail --pid
        # polls the process with a deadline; SIGKILL if it is still there.
        timeout 20 tail --pid="$RELAY_PID" -s 0.1 -f /dev/null 2>/dev/null ||
            kill -KILL "$RELAY_PID" 2>/dev/null || true
        wait "$RELAY_PID" 2>/dev/null || true
    fi
    if [ -n "$_RELAY_DRAIN_PID" ]; then
        kill "$_RELAY_DRAIN_PID" 2>/dev/null || true
        wait "$_RELAY_DRAIN_PID" 2>/dev/null || true
    fi
    [ -n "$_RELAY_TMP" ] && rm -rf "$_RELAY_TMP"
    RELAY_PID=""
    _RELAY_DRAIN_PID=""
    _RELAY_TMP=""
}

relay_cleanup() {
    local rc=$?
    relay_stop
    return $rc
}

# relay_alive: fail loudly if the relay died under a test (a crash is a finding).
relay_alive() {
    if [ -n "$RELAY_PID" ] && ! kill -0 "$RELAY_PID" 2>/dev/null; then
        log "relay log:"; tail -n 40 "$RELAY_LOG" >&2
        die "the relay (pid $RELAY_PID) is no longer running"
    fi
}
