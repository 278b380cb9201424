#!/usr/bin/env node
// Interop: headless Chromium joins a session (§5) as the browser; Node `ws` plays the host.
//
// Usage: node session.js --public 127.0.0.1:PORT --chromium /usr/bin/chromium --screenshot FILE
//
// The host connects to /mac and reads `registered`; Chromium (driven by playwright-core)
// loads scripts/interop/session.html from a file:// URL, whose own `new WebSocket(...)`
// joins with the code; host and page exchange `data` (checked byte for byte both ways)
// and the page pings the relay. Then the page leaves (host told BROWSER_DISCONNECTED and
// its code is joinable again: a Node browser joins it in lower case, leaves, and another
// joins with /v1/session/join?code=), and the host leaves (that browser told
// MAC_DISCONNECTED, then closed 1000 "peer disconnected").
// Waits are on events or page conditions with deadlines: no sleeps. Exit 1 on any mismatch.
'use strict';

const fs = require('fs');
const path = require('path');
const { check, args, Client, openPage, finish } = require('./common');

// INTEROP_WS_SCHEME=wss runs every connection over TLS (see interop.sh session-tls).
const SCHEME = process.env.INTEROP_WS_SCHEME || 'ws';

const CODE_RE = /^[346789ABCDEFGHJKLMNPQRTUVWXY]{6}$/;
const UUID4_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

async function main() {
  const opts = args(['public', 'chromium', 'screenshot']);
  const pub = opts.public;

  console.log('host registers');
  const host = new Client(`${SCHEME}://${pub}/mac`, 'host');
  await host.opened();
  // Until session mode lands, its placeholder upgrades and closes 1011 "... not available yet".
  const first = await Promise.race([host.closePromise, host.next().catch(() => null)]);
  if (host.closed && /not available yet/.test(host.closed.reason) && host.queue.length === 0) {
    console.log(`SKIPPED: session mode not live yet (/mac closed ${host.closed.code} "${host.closed.reason}")`);
    process.exit(77);
  }
  if (first && first.text !== undefined) host.queue.unshift(first);
  const reg = (await host.nextJson('registered')).json;
  check(reg.type === 'registered' && CODE_RE.test(reg.code || '') && Number.isInteger(reg.expiresAt) &&
    reg.expiresAt > Date.now(), `host gets {"type":"registered","code":<6 chars>,"expiresAt":<future ms>}: ${JSON.stringify(reg)}`);
  const code = reg.code;

  console.log('Chromium joins with new WebSocket(...)');
  let close;
  try {
    let page;
    ({ page, close } = await openPage(opts.chromium, 'session.html', { relay: `${SCHEME}://${pub}/browser`, code }));

    const joinedHost = (await host.nextJson('joined at the host')).json;
    await page.waitForFunction(() => window.interop.joined !== null || window.interop.errors.length > 0);
    const pageState = await page.evaluate(() => window.interop);
    check(pageState.errors.length === 0, `page saw no error (${JSON.stringify(pageState.errors)})`);
    check(joinedHost.type === 'joined' && UUID4_RE.test(joinedHost.sessionId || ''),
      `host gets {"type":"joined","sessionId":<uuid v4>}: ${JSON.stringify(joinedHost)}`);
    check(pageState.joined === joinedHost.sessionId, `page joined the same session (${pageState.joined})`);

    console.log('data both ways, exact text');
    // The page sends its data message right after `joined`: the host must get those exact bytes.
    const fromPage = await host.next();
    const sentByPage = await page.evaluate(() => window.interop.sent.find((s) => s.includes('"type":"data"')));
    check(!fromPage.isBinary && fromPage.text === sentByPage,
      `host receives the page's data message byte-exact: ${fromPage.text.slice(0, 90)}…`);
    const hostData = '{"type":"data","payload":{"from":"host","text":"gr\u00fc\u00df \u2713","n": 1.50, "arr":[1, 2]}}';
    host.ws.send(hostData);
    await page.waitForFunction((t) => window.interop.received.includes(t), hostData);
    check(true, 'page receives the host\'s data message byte-exact');
    await page.waitForFunction(() => window.interop.pong !== null);
    const pong = await page.evaluate(() => window.interop.pong);
    check(pong === 1732262400123, `page ping answered by the relay with the same ts (${pong})`);
    check(host.queue.length === 0, 'the page\'s ping did not reach the host');

    await page.waitForFunction(() => window.interop.status === 'exchanged data with the host');
    fs.mkdirSync(path.dirname(opts.screenshot), { recursive: true });
    await page.screenshot({ path: opts.screenshot });
    check(fs.statSync(opts.screenshot).size > 1000, `screenshot saved: ${opts.screenshot}`);

    console.log('browser leaves; host stays; code joinable again (lower case)');
    await page.evaluate(() => window.interopSocket.close(1000));
    const left = (await host.nextJson('BROWSER_DISCONNECTED')).json;
    check(left.type === 'error' && left.code === 'BROWSER_DISCONNECTED',
      `host told {"type":"error","code":"BROWSER_DISCONNECTED"}: ${JSON.stringify(left)}`);
    await page.waitForFunction(() => window.interop.close !== null);
    check(host.closed === null, 'host still connected');
  } finally {
    if (close) await close();
  }

  const browser2 = new Client(`${SCHEME}://${pub}/browser`, 'node-browser');
  await browser2.opened();
  browser2.ws.send(JSON.stringify({ type: 'join', code: code.toLowerCase() }));
  const j2 = (await browser2.nextJson('joined (lower-case code)')).json;
  const h2 = (await host.nextJson('second joined at the host')).json;
  check(j2.type === 'joined' && h2.type === 'joined' && j2.sessionId === h2.sessionId,
    `lower-case join of the same code after the browser left: ${JSON.stringify(j2)}`);

  console.log('join on connect: /v1/session/join?code=<code>');
  browser2.ws.close(1000);
  const left2 = (await host.nextJson('second BROWSER_DISCONNECTED')).json;
  check(left2.code === 'BROWSER_DISCONNECTED', `host told BROWSER_DISCONNECTED again: ${JSON.stringify(left2)}`);
  const browser3 = new Client(`${SCHEME}://${pub}/v1/session/join?code=${code}`, 'query-browser');
  await browser3.opened();
  const j3 = (await browser3.nextJson('joined (?code=)')).json;
  const h3 = (await host.nextJson('third joined at the host')).json;
  check(j3.type === 'joined' && h3.type === 'joined' && j3.sessionId === h3.sessionId,
    `?code= joins right after the upgrade: ${JSON.stringify(j3)}`);

  console.log('host leaves');
  host.ws.close(1000);
  const gone = (await browser3.nextJson('MAC_DISCONNECTED')).json;
  check(gone.type === 'error' && gone.code === 'MAC_DISCONNECTED',
    `browser told {"type":"error","code":"MAC_DISCONNECTED"}: ${JSON.stringify(gone)}`);
  const c = await browser3.closedWith();
  check(c.code === 1000 && c.reason === 'peer disconnected',
    `browser then closed 1000 "peer disconnected" (got ${c.code} ${JSON.stringify(c.reason)})`);
}

main()
  .catch((e) => check(false, `unexpected error: ${e.stack || e}`))
  .finally(() => finish('session (chromium + node ws)'));
