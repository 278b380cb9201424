#!/usr/bin/env python3
"""Interop: Python `websockets` playing a pyrycode binary and its phones (server-id, §3).

Usage: pyrycode.py --public 127.0.0.1:PORT --grace SECONDS
The relay must run with `--grace SECONDS` (interop.sh uses 2s) and the default
--max-phones-per-server (16). Exits 1 on any mismatch.

Every wait is on a message, a close or a connection event with a timeout: no sleeps.
"""
import argparse
import asyncio
import json
import os
import re
import sys
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

# INTEROP_WS_SCHEME=wss runs every connection over TLS (the relay with --tls-cert; the
# test CA trusted through SSL_CERT_FILE, which Python's default context reads).
SCHEME = os.environ.get("INTEROP_WS_SCHEME", "ws")

TIMEOUT = 10.0
BINARY_UA = "pyrycode/1.4.2 (linux; x86_64)"
BINARY_VERSION = "1.4.2"
PHONE_UA = "PyrycodeMobile/1.4.2 (iOS 18.1; iPhone15,2)"

FAILURES = []
PASSES = 0


def check(cond, what):
    global PASSES
    if cond:
        PASSES += 1
        print("  ok   %s" % what)
    else:
        FAILURES.append(what)
        print("  FAIL %s" % what)
    return cond


class Env:
    def __init__(self, public, grace):
        self.public = public
        self.grace = grace
        self.counter = 0

    def server_id(self, tag):
        self.counter += 1
        return "interop-%s-%d-%s" % (tag, self.counter, os.urandom(3).hex())

    async def binary(self, sid, headers=None):
        hdrs = headers if headers is not None else {
            "X-Pyrycode-Server": sid,
            "X-Pyrycode-Version": BINARY_VERSION,
        }
        return await asyncio.wait_for(connect(
            "%s://%s/v1/server" % (SCHEME, self.public), additional_headers=hdrs,
            user_agent_header=BINARY_UA, compression=None, max_size=None,
            ping_interval=None, close_timeout=5), TIMEOUT)

    async def phone(self, sid, device="Jane's iPhone", headers=None):
        hdrs = headers if headers is not None else {
            "X-Pyrycode-Server": sid,
            "X-Pyrycode-Token": "opaque-courier-token-%s" % os.urandom(8).hex(),
            "X-Pyrycode-Device-Name": device,
        }
        return await asyncio.wait_for(connect(
            "%s://%s/v1/client" % (SCHEME, self.public), additional_headers=hdrs,
            user_agent_header=PHONE_UA, compression=None, max_size=None,
            ping_interval=None, close_timeout=5), TIMEOUT)


async def recv(ws):
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


async def recv_text(ws, what):
    msg = await recv(ws)
    check(isinstance(msg, str), "%s arrives as a text message" % what)
    return msg if isinstance(msg, str) else msg.decode("utf-8", "replace")


async def closed(ws):
    """Wait until ws is closed; return (code, reason) of the close frame received."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    except ConnectionClosed:
        pass
    await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
    rcvd = ws.protocol.close_rcvd
    return (rcvd.code, rcvd.reason) if rcvd is not None else (None, None)


async def attach(env, binary, sid, device="Jane's iPhone"):
    """Attach a phone and learn its conn_id from the first envelope it causes."""
    phone = await env.phone(sid, device)
    hello = b'{"type":"hello","device":"%s"}' % device.encode()
    await phone.send(hello.decode())
    env_text = await recv_text(binary, "envelope for the attach hello")
    m = re.fullmatch(r'\{"conn_id":"(client-%s-[0-9a-f]{8})","frame":(.*)\}' % re.escape(sid), env_text,
                     re.S)
    check(m is not None and m.group(2) == hello.decode(),
          "binary gets {\"conn_id\":\"client-<sid>-<8 hex>\",\"frame\":<hello verbatim>}: %r" % env_text)
    return phone, (m.group(1) if m else None)


async def test_envelope(env):
    print("envelope both ways, byte-exact")
    sid = env.server_id("env")
    binary = await env.binary(sid)
    phone, cid = await attach(env, binary, sid)

    # phone -> binary: odd whitespace, number formatting and non-ASCII survive verbatim.
    frame = '{"type":"prompt",  "n": 1.50, "text":"h\u00e9llo \u2713 \\u00e9", "list":[ 1,2 ,3 ]}'
    await phone.send(frame)
    got = await recv_text(binary, "phone text message")
    check(got == '{"conn_id":"%s","frame":%s}' % (cid, frame),
          "phone text -> binary envelope byte-exact: %r" % got)

    # A phone's JSON sent with the binary opcode is embedded verbatim too.
    frame_b = '[true, null, {"k": "v"}]'
    await phone.send(frame_b.encode())
    got = await recv_text(binary, "phone binary message")
    check(got == '{"conn_id":"%s","frame":%s}' % (cid, frame_b),
          "phone binary-opcode JSON -> binary envelope byte-exact: %r" % got)

    # binary -> phone: the bytes of `frame` from first to last character, as text.
    reply = '{"type":"reply",  "ok":true, "v": 1e3, "s":"\u00fc\\n"}'
    await binary.send('{"conn_id":"%s","frame": %s }' % (cid, reply))
    got = await recv_text(phone, "binary's frame at the phone")
    check(got == reply, "binary envelope (text) -> phone gets frame bytes exactly: %r" % got)

    # Envelope sent with the binary opcode (UTF-8) is accepted too.
    reply2 = '"just a string"'
    await binary.send(('{"frame":%s,"conn_id":"%s"}' % (reply2, cid)).encode())
    got = await recv_text(phone, "frame from a binary-opcode envelope")
    check(got == reply2, "binary envelope (binary opcode) -> phone gets frame exactly: %r" % got)

    # A malformed envelope and an unknown conn_id are dropped; the binary stays.
    await binary.send('{"conn_id":"%s","close_code":999}' % cid)
    await binary.send('{"conn_id":"client-%s-00000000","frame":{}}' % sid)
    await binary.send('not json at all')
    await binary.send('{"push_wake":{"platform":"fcm","token":"dGhpcyBpcyBub3QgcmVhbA"}}')
    marker = '{"marker":42}'
    await binary.send('{"conn_id":"%s","frame":%s}' % (cid, marker))
    got = await recv_text(phone, "frame after dropped envelopes")
    check(got == marker, "malformed / unknown / push_wake envelopes dropped, binary still routes: %r" % got)

    # Two phones are told apart.
    phone2, cid2 = await attach(env, binary, sid, "Tablet")
    check(cid2 is not None and cid2 != cid, "second phone gets its own conn_id")
    await binary.send('{"conn_id":"%s","frame":{"to":2}}' % cid2)
    await binary.send('{"conn_id":"%s","frame":{"to":1}}' % cid)
    check(await recv_text(phone2, "frame for phone 2") == '{"to":2}', "phone 2 gets only its frame")
    check(await recv_text(phone, "frame for phone 1") == '{"to":1}', "phone 1 gets only its frame")
    for ws in (phone, phone2, binary):
        await ws.close()


async def test_close_codes(env):
    print("close_code from the binary; phone close reported to the binary")
    sid = env.server_id("close")
    binary = await env.binary(sid)

    # close_code alone: the phone gets that code with an empty reason.
    phone, cid = await attach(env, binary, sid)
    await binary.send('{"conn_id":"%s","close_code":4000}' % cid)
    code, reason = await closed(phone)
    check((code, reason) == (4000, ""), "binary close_code 4000 -> phone closed 4000 \"\": %r" % ((code, reason),))

    # frame then close in one envelope.
    phone, cid = await attach(env, binary, sid)
    await binary.send('{"conn_id":"%s","frame":{"bye":true},"close_code":1000}' % cid)
    got = await recv_text(phone, "frame before the close")
    code, reason = await closed(phone)
    check(got == '{"bye":true}' and (code, reason) == (1000, ""),
          "frame+close_code 1000 -> phone gets the frame then close 1000: %r %r" % (got, (code, reason)))

    # The phone closes with a code: the binary is told that code.
    phone, cid = await attach(env, binary, sid)
    await phone.close(code=4001, reason="user left")
    got = json.loads(await recv_text(binary, "phone-left notice"))
    check(got == {"conn_id": cid, "close_code": 4001}, "phone close 4001 -> binary told %r" % got)

    # The phone drops without a close frame: 1006.
    phone, cid = await attach(env, binary, sid)
    phone.transport.abort()
    got = json.loads(await recv_text(binary, "phone-dropped notice"))
    check(got == {"conn_id": cid, "close_code": 1006}, "phone TCP drop -> binary told 1006: %r" % got)

    # A phone message that is not JSON: phone closed 1007; the binary hears the code it echoed.
    phone, cid = await attach(env, binary, sid)
    await phone.send("this is not json")
    code, _ = await closed(phone)
    check(code == 1007, "non-JSON phone message -> phone closed 1007 (got %r)" % code)
    got = json.loads(await recv_text(binary, "notice after 1007"))
    check(got == {"conn_id": cid, "close_code": 1007}, "binary told 1007: %r" % got)

    # A second binary for a live server-id (the incumbent answers pings): 4409.
    second = await env.binary(sid)
    code, reason = await closed(second)
    check((code, reason) == (4409, "server-id already claimed"),
          "second binary -> 4409 \"server-id already claimed\": %r" % ((code, reason),))
    await binary.close()


async def test_rejections(env):
    print("rejections")
    sid = env.server_id("none")
    phone = await env.phone(sid)
    code, reason = await closed(phone)
    check((code, reason) == (4404, "no server with that id"),
          "phone for an unheld server-id -> 4404 \"no server with that id\": %r" % ((code, reason),))
    for path_kind, headers in (
        ("binary without X-Pyrycode-Version", {"X-Pyrycode-Server": sid}),
        ("phone without X-Pyrycode-Token", {"X-Pyrycode-Server": sid}),
        ("phone with empty X-Pyrycode-Server", {"X-Pyrycode-Server": "", "X-Pyrycode-Token": "t"}),
    ):
        opener = env.binary if path_kind.startswith("binary") else env.phone
        try:
            ws = await opener(sid, headers=headers)
            await ws.close()
            check(False, "%s -> 400 (it upgraded)" % path_kind)
        except InvalidStatus as e:
            check(e.response.status_code == 400 and not e.response.body,
                  "%s -> 400, empty body (got %d %r)" % (path_kind, e.response.status_code, e.response.body))


async def test_phone_cap(env):
    print("phone cap: the 17th phone for one server-id -> 4429")
    sid = env.server_id("cap")
    binary = await env.binary(sid)
    phones = []
    for i in range(16):
        phone, cid = await attach(env, binary, sid, "phone %d" % i)
        phones.append(phone)
    extra = await env.phone(sid, "one too many")
    code, reason = await closed(extra)
    check((code, reason) == (4429, "too many phones for server-id"),
          "17th phone -> 4429 \"too many phones for server-id\": %r" % ((code, reason),))
    # The 16 are unaffected: a phone's message still reaches the binary.
    await phones[-1].send('{"still":"here"}')
    got = await recv_text(binary, "message from the 16th phone")
    check(got.endswith(',"frame":{"still":"here"}}'), "the 16 attached phones still route: %r" % got)
    for ws in phones + [binary]:
        await ws.close()


async def test_grace_reclaim(env):
    print("grace: binary drops, phone stays, binary reconnects -> phone 4404")
    sid = env.server_id("reclaim")
    binary = await env.binary(sid)
    phone, cid = await attach(env, binary, sid)
    binary.transport.abort()  # the binary's process dies: no close frame
    await asyncio.wait_for(binary.wait_closed(), TIMEOUT)
    # The phone stays: the relay still answers its pings during the grace window.
    pong = await phone.ping()
    await asyncio.wait_for(pong, TIMEOUT)
    check(phone.state.name == "OPEN", "phone still open during the grace window")
    # A phone may attach during grace too.
    late = await env.phone(sid, "Late phone")
    pong = await late.ping()
    await asyncio.wait_for(pong, TIMEOUT)
    check(late.state.name == "OPEN", "a phone can attach while the slot is in grace")
    # The binary comes back in time and takes the slot over.
    binary2 = await env.binary(sid)
    code, reason = await closed(phone)
    check((code, reason) == (4404, "binary reclaimed server-id"),
          "phone closed 4404 \"binary reclaimed server-id\": %r" % ((code, reason),))
    code, reason = await closed(late)
    check((code, reason) == (4404, "binary reclaimed server-id"),
          "late phone closed 4404 too: %r" % ((code, reason),))
    # The reclaiming binary works: a new phone routes through it.
    phone3, cid3 = await attach(env, binary2, sid)
    await binary2.send('{"conn_id":"%s","frame":{"after":"reclaim"}}' % cid3)
    check(await recv_text(phone3, "frame after reclaim") == '{"after":"reclaim"}',
          "the reclaiming binary routes to a new phone")
    await phone3.close()
    await binary2.close()


async def test_grace_expiry(env):
    print("grace expiry: phone closed 1011 \"binary did not reconnect\"")
    sid = env.server_id("expiry")
    binary = await env.binary(sid)
    phone, cid = await attach(env, binary, sid)
    await binary.close(code=1000)
    left = time.monotonic()
    # Messages from a phone during grace are dropped; the phone is not closed for them.
    await phone.send('{"during":"grace"}')
    code, reason = await closed(phone)
    waited = time.monotonic() - left
    check((code, reason) == (1011, "binary did not reconnect"),
          "phone closed 1011 \"binary did not reconnect\": %r" % ((code, reason),))
    check(env.grace * 0.5 <= waited <= env.grace + 5,
          "the close came after the grace window (%.2fs for --grace %ss)" % (waited, env.grace))
    phone = await env.phone(sid)
    code, reason = await closed(phone)
    check((code, reason) == (4404, "no server with that id"),
          "after expiry the server-id is free: new phone -> 4404: %r" % ((code, reason),))


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--public", required=True)
    ap.add_argument("--grace", type=float, required=True)
    args = ap.parse_args()
    env = Env(args.public, args.grace)
    for test in (test_envelope, test_close_codes, test_rejections, test_phone_cap,
                 test_grace_reclaim, test_grace_expiry):
        try:
            await asyncio.wait_for(test(env), 60)
        except Exception as e:  # a timeout or an unexpected close is a mismatch too
            check(False, "%s raised %s: %s" % (test.__name__, type(e).__name__, e))
    print("pyrycode (python websockets): %d passed, %d failed" % (PASSES, len(FAILURES)))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
