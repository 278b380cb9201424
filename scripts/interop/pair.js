#!/usr/bin/env node
// Interop: Node `ws` playing two arc-relay peers on `/?pair=<code>` (§4).
//
// Usage: node pair.js --public 127.0.0.1:PORT --max-message BYTES
// Exchanges binary frames of every interesting size from 1 byte to --max-message both
// ways and compares bytes; checks that text frames are dropped, that a third peer gets
// 409 "pair is full", that a message over --max-message gets 1009 and the peer 1011,
// and that a clean leave closes the other side 1000 "peer disconnected".
// Every wait is on a ws event with a timeout: no sleeps. Exits 1 on any mismatch.
'use strict';

const crypto = require('crypto');
const WebSocket = require('ws'); // target/interop/node_modules, via NODE_PATH

const { check, withTimeout, Client, finish } = require('./common');

// INTEROP_WS_SCHEME=wss runs every connection over TLS (the relay with --tls-cert; the test
// CA trusted through NODE_EXTRA_CA_CERTS, which Node reads at start-up).
const SCHEME = process.env.INTEROP_WS_SCHEME || 'ws';

function args() {
  const out = {};
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) out[argv[i].replace(/^--/, '')] = argv[i + 1];
  if (!out.public || !out['max-message']) throw new Error('usage: pair.js --public HOST:PORT --max-message BYTES');
  return { pub: out.public, maxMessage: Number(out['max-message']) };
}

// A peer: a queueing client (common.js) that can also await its sends.
class Peer extends Client {
  send(data, opts) {
    return new Promise((resolve, reject) => this.ws.send(data, opts || {}, (err) => (err ? reject(err) : resolve())));
  }
}

// A third peer must be refused before the upgrade: 409 with body "pair is full".
function expectRefused(url) {
  return withTimeout(new Promise((resolve) => {
    const ws = new WebSocket(url);
    ws.on('open', () => { ws.terminate(); resolve({ status: 101, body: '' }); });
    ws.on('unexpected-response', (req, res) => {
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    ws.on('error', () => {});
  }), 'the third peer to be refused');
}

function sizes(max) {
  const all = [1, 2, 125, 126, 127, 128, 1000, 65535, 65536, 65537, 100000, 131072,
    max - 1, max, Math.floor(max / 3), 4096 * 7 + 3];
  return [...new Set(all.filter((n) => n >= 1 && n <= max))].sort((a, b) => a - b);
}

async function exchange(a, b, max) {
  console.log(`binary frames 1 byte .. ${max} bytes, both ways`);
  for (const n of sizes(max)) {
    for (const [from, to] of [[a, b], [b, a]]) {
      const payload = crypto.randomBytes(n);
      await from.send(payload, { binary: true });
      const got = await to.next();
      check(got.isBinary && Buffer.compare(Buffer.from(got.data), payload) === 0,
        `${n} bytes ${from.name} -> ${to.name}: binary, same bytes (got ${got.isBinary ? 'binary' : 'text'} ${got.data.length})`);
    }
  }
  // A burst of pipelined frames arrives complete and in order.
  const burst = [];
  for (let i = 0; i < 200; i++) burst.push(crypto.randomBytes(1 + ((i * 7919) % 5000)));
  await Promise.all(burst.map((p) => a.send(p, { binary: true })));
  let inOrder = true;
  for (const p of burst) {
    const got = await b.next();
    if (!got.isBinary || Buffer.compare(Buffer.from(got.data), p) !== 0) inOrder = false;
  }
  check(inOrder, '200 pipelined binary frames arrive complete and in order');
}

async function main() {
  const { pub, maxMessage } = args();
  const code = `interop-${crypto.randomBytes(6).toString('hex')}`;
  const url = `${SCHEME}://${pub}/?pair=${encodeURIComponent(code)}`;

  console.log('early message queued until side B arrives');
  const a = new Peer(url, 'A');
  await a.opened();
  const early = crypto.randomBytes(3000);
  await a.send(early, { binary: true });
  const b = new Peer(url, 'B');
  await b.opened();
  const firstAtB = await b.next();
  check(firstAtB.isBinary && Buffer.compare(Buffer.from(firstAtB.data), early) === 0,
    'a frame sent before B arrived is delivered to B on arrival');

  console.log('third peer');
  const third = await expectRefused(url);
  check(third.status === 409 && third.body === 'pair is full',
    `third peer -> 409 "pair is full" (got ${third.status} ${JSON.stringify(third.body)})`);

  await exchange(a, b, maxMessage);

  console.log('text frames are dropped');
  await a.send('this text frame must be dropped', { binary: false });
  const marker = crypto.randomBytes(17);
  await a.send(marker, { binary: true });
  const afterText = await b.next();
  check(afterText.isBinary && Buffer.compare(Buffer.from(afterText.data), marker) === 0,
    'text frame dropped, the next binary frame arrives');

  console.log('clean leave');
  a.ws.close(1000, 'bye');
  const bClosed = await b.closedWith();
  check(bClosed.code === 1000 && bClosed.reason === 'peer disconnected',
    `A leaves cleanly -> B closed 1000 "peer disconnected" (got ${bClosed.code} ${JSON.stringify(bClosed.reason)})`);
  await a.closedWith();

  console.log(`message over --max-message (${maxMessage + 1} bytes)`);
  const code2 = `interop-big-${crypto.randomBytes(6).toString('hex')}`;
  const url2 = `${SCHEME}://${pub}/v1/pair?pair=${encodeURIComponent(code2)}`;
  const c = new Peer(url2, 'C');
  await c.opened();
  const d = new Peer(url2, 'D');
  await d.opened();
  await c.send(crypto.randomBytes(maxMessage + 1), { binary: true }).catch(() => {});
  const cClosed = await c.closedWith();
  check(cClosed.code === 1009, `sender of ${maxMessage + 1} bytes closed 1009 (got ${cClosed.code})`);
  const dClosed = await d.closedWith();
  check(dClosed.code === 1011 && dClosed.reason === 'peer connection failed',
    `its peer closed 1011 "peer connection failed" (got ${dClosed.code} ${JSON.stringify(dClosed.reason)})`);
  check(d.queue.length === 0, 'nothing of the oversized message reached the peer');

  console.log('bad pair codes');
  for (const bad of ['/?pair=', '/', `/?pair=${'x'.repeat(257)}`]) {
    const r = await expectRefused(`${SCHEME}://${pub}${bad}`);
    check(r.status === 400, `GET ${bad.length > 30 ? bad.slice(0, 30) + '…' : bad} -> 400 (got ${r.status})`);
  }
}

main()
  .catch((e) => check(false, `unexpected error: ${e.stack || e}`))
  .finally(() => finish('pair (node ws)'));
