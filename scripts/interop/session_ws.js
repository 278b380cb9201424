#!/usr/bin/env node
// Interop: the session-code relay's second protocol (`GET /ws`) as its clients speak it.
// Headless Chromium is a browser of the web UI's kind (session_ws.html: its own WebSocket,
// binaryType "arraybuffer", reconnecting with the same code); Node `ws` is the Mac and,
// beside the page, a second browser.
//
// Usage: node session_ws.js --public 127.0.0.1:PORT --chromium /usr/bin/chromium
//        --screenshot FILE --max-message BYTES   (the relay's --max-message, small)
//
// The Mac registers and gets its code; the page authenticates with it (lower case) and the
// Mac is told browser_connected; the Mac's session_list text and binary frames (every
// byte value, invalid UTF-8 included) reach the page as ArrayBuffers and the Node browser
// alike; the page's keystrokes reach the Mac as binary, its create_session as the text
// sent and its close_session as the Mac's one binary frame. Then the relay closes the page
// (a frame over --max-message: 1009): the page reconnects with the same code, the Mac
// sees browser_disconnected then browser_connected, and binary flows both ways again.
// Finally the Mac leaves: every browser gets {"type":"error","message":"Session
// disconnected"} and is closed 1000; the page's reconnect gets auth_failed and 4404.
// Waits are on events or page conditions with deadlines: no sleeps. Exit 1 on any mismatch.
'use strict';

const fs = require('fs');
const path = require('path');
const { check, args, Client, openPage, finish } = require('./common');

const CODE_RE = /^[ABCDEFGHJKMNPQRSTUVWXYZ23456789]{6}$/;
const ID_RE = /^[A-Za-z0-9_-]{8}$/;
const SESSION_GONE = '{"type":"error","message":"Session disconnected"}';

// The Mac's next message is browser_connected or browser_disconnected; returns the id.
async function browserNotice(mac, type) {
  const m = (await mac.nextJson(type)).json;
  check(m.type === type && ID_RE.test(m.browser_id || '') && Object.keys(m).length === 2,
    `Mac gets {"type":"${type}","browser_id":<8 chars>}: ${JSON.stringify(m)}`);
  return m.browser_id;
}

// The Mac's next message is binary with exactly `bytes`.
async function macGetsBinary(mac, bytes, what) {
  const m = await mac.next();
  check(m.isBinary && Buffer.compare(m.data, Buffer.from(bytes)) === 0, `Mac receives ${what} as binary, byte-exact`);
}

// The Mac sends `bytes`; the page (as an ArrayBuffer) and the Node browser get them.
async function fanOut(mac, page, nodeBrowser, bytes, what) {
  const before = await page.evaluate(() => window.interop.binaries.length);
  mac.ws.send(Buffer.from(bytes), { binary: true });
  await page.waitForFunction((n) => window.interop.binaries.length > n, before);
  const got = await page.evaluate((n) => window.interop.binaries[n], before);
  check(JSON.stringify(got) === JSON.stringify(bytes), `page receives ${what} as an ArrayBuffer, byte-exact`);
  if (nodeBrowser) {
    const m = await nodeBrowser.next();
    check(m.isBinary && Buffer.compare(m.data, Buffer.from(bytes)) === 0, `Node browser receives ${what} too`);
  }
}

async function pageTest(opts, mac, code) {
  const { page, close } = await openPage(opts.chromium, 'session_ws.html',
    { relay: `ws://${opts.public}/ws`, code: code.toLowerCase() });
  try {
    await page.waitForFunction(() => window.interop.authed === 1);
    const texts = await page.evaluate(() => window.interop.texts);
    check(texts[0] === '{"type":"auth_success"}', `page gets {"type":"auth_success"} for the lower-case code`);
    const pageId = await browserNotice(mac, 'browser_connected');

    const nodeBrowser = new Client(`ws://${opts.public}/ws`, 'node-browser');
    await nodeBrowser.opened();
    nodeBrowser.ws.send(JSON.stringify({ type: 'auth', session_code: code }));
    const ok = await nodeBrowser.next();
    check(ok.text === '{"type":"auth_success"}', 'Node browser authenticates beside the page');
    const nodeId = await browserNotice(mac, 'browser_connected');
    check(nodeId !== pageId, 'browser ids differ within the session');

    console.log('Mac → every browser');
    const list = '{"type":"session_list","sessions":[{"id":"term-1","title":"zsh \u2713"}]}';
    mac.ws.send(list);
    await page.waitForFunction((t) => window.interop.texts.includes(t), list);
    check(true, 'page receives session_list as the exact text sent');
    check((await nodeBrowser.next()).text === list, 'Node browser receives session_list too');
    const every = Array.from({ length: 256 }, (_, i) => i).concat([0xc3, 0x28, 0xff]);
    await fanOut(mac, page, nodeBrowser, every, 'terminal output of every byte value');
    await fanOut(mac, page, nodeBrowser, [], 'an empty frame');
    check(await page.evaluate(() => window.interop.notArrayBuffer === 0), 'binary always arrives as an ArrayBuffer');

    console.log('page → Mac');
    const keys = [0x1b, 0x5b, 0x41, 0x0d, 0xff, 0x00];
    await page.evaluate((k) => window.sendKeys(k), keys);
    await macGetsBinary(mac, keys, 'the page\'s keystrokes');
    const create = '{"type":"create_session","cols":80,"rows":24}';
    await page.evaluate((t) => window.sendControl(t), create);
    const c = await mac.next();
    check(!c.isBinary && c.text === create, 'Mac receives create_session as the exact text sent');
    await page.evaluate(() => window.sendControl('{"type":"close_session","session_id":"term-1"}'));
    const closeFrame = [6, ...Buffer.from('term-1'), ...Buffer.from('{"type":"close_session"}')];
    await macGetsBinary(mac, closeFrame, 'close_session (length byte, id, {"type":"close_session"})');

    console.log('the relay closes the page; it reconnects with the same code');
    await page.evaluate((n) => window.sendKeys(new Array(n).fill(0x61)), Number(opts['max-message']) + 1);
    await page.waitForFunction(() => window.interop.authed === 2);
    const closes = await page.evaluate(() => window.interop.closes);
    check(closes.length === 1 && closes[0].code === 1009, `page was closed by the relay (${JSON.stringify(closes)})`);
    check(await browserNotice(mac, 'browser_disconnected') === pageId, 'Mac told the page left');
    const againId = await browserNotice(mac, 'browser_connected');
    check(againId !== pageId, 'the reconnected page is a new browser of the same session');
    await fanOut(mac, page, nodeBrowser, [1, 2, 3, 250], 'output after the reconnect');
    await page.evaluate(() => window.sendKeys([0x71]));
    await macGetsBinary(mac, [0x71], 'keystrokes after the reconnect');

    await page.waitForFunction(() => window.interop.binaries.length >= 3);
    fs.mkdirSync(path.dirname(opts.screenshot), { recursive: true });
    await page.screenshot({ path: opts.screenshot });
    check(fs.statSync(opts.screenshot).size > 1000, `screenshot saved: ${opts.screenshot}`);

    console.log('the Mac leaves');
    mac.ws.close(1000);
    check((await nodeBrowser.next()).text === SESSION_GONE, `Node browser gets ${SESSION_GONE}`);
    const nc = await nodeBrowser.closedWith();
    check(nc.code === 1000, `Node browser then closed 1000 (got ${nc.code} ${JSON.stringify(nc.reason)})`);
    await page.waitForFunction(() => window.interop.authFailed !== null);
    const state = await page.evaluate(() => window.interop);
    check(state.errors.includes('Session disconnected'), 'page gets "Session disconnected"');
    check(state.closes[1] && state.closes[1].code === 1000, `page closed 1000 (${JSON.stringify(state.closes[1])})`);
    check(state.authFailed === 'Invalid session code', `page's reconnect gets auth_failed "${state.authFailed}" (the code is gone)`);
    await page.waitForFunction(() => window.interop.closes.length === 3);
    const last = await page.evaluate(() => window.interop.closes[2]);
    check(last.code === 4404, `and is closed 4404 (${JSON.stringify(last)})`);
  } finally {
    await close();
  }
}

async function main() {
  const opts = args(['public', 'chromium', 'screenshot', 'max-message']);
  console.log('Mac registers on /ws');
  const mac = new Client(`ws://${opts.public}/ws`, 'mac');
  await mac.opened();
  mac.ws.send(JSON.stringify({ type: 'register', client_id: 'interop-mac-0001' }));
  const reg = (await mac.nextJson('registered')).json;
  check(reg.type === 'registered' && CODE_RE.test(reg.code || '') && Object.keys(reg).length === 2,
    `Mac gets {"type":"registered","code":<6 of the alphabet>}: ${JSON.stringify(reg)}`);
  console.log('Chromium authenticates with new WebSocket(...), binaryType "arraybuffer"');
  await pageTest(opts, mac, reg.code);
}

main()
  .catch((e) => check(false, `unexpected error: ${e.stack || e}`))
  .finally(() => finish('session-ws (chromium + node ws)'));
