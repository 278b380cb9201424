// Shared by the Node interop drivers: pass/fail bookkeeping, argument parsing, timeouts,
// and a WebSocket client with a message queue (await "the next message" without races).
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { pathToFileURL } = require('url');
const WebSocket = require('ws'); // target/interop/node_modules, via NODE_PATH

const TIMEOUT_MS = 15000;
const results = { passes: 0, failures: [] };

function check(cond, what) {
  if (cond) {
    results.passes++;
    console.log(`  ok   ${what}`);
  } else {
    results.failures.push(what);
    console.log(`  FAIL ${what}`);
  }
  return cond;
}

// `--name value` pairs; every name in `required` must be given.
function args(required) {
  const out = {};
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) out[argv[i].replace(/^--/, '')] = argv[i + 1];
  for (const k of required) if (!out[k]) throw new Error(`missing --${k}`);
  return out;
}

function withTimeout(promise, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), TIMEOUT_MS);
    }),
  ]).finally(() => clearTimeout(timer));
}

// A client whose messages queue up as { text, data, isBinary } (data: the raw Buffer).
class Client {
  constructor(url, name) {
    this.name = name;
    this.queue = [];
    this.waiters = [];
    this.closed = null;
    this.ws = new WebSocket(url);
    this.ws.binaryType = 'nodebuffer';
    this.ws.on('message', (data, isBinary) => {
      const msg = { text: data.toString('utf8'), data, isBinary };
      const w = this.waiters.shift();
      if (w) w.resolve(msg); else this.queue.push(msg);
    });
    this.closePromise = new Promise((resolve) => {
      this.ws.on('close', (code, reason) => {
        this.closed = { code, reason: reason.toString() };
        resolve(this.closed);
        for (const w of this.waiters.splice(0)) w.reject(new Error(`${name} closed ${code} ${reason}`));
      });
    });
    this.ws.on('error', () => {});
  }

  opened() {
    return withTimeout(new Promise((resolve, reject) => {
      if (this.ws.readyState === WebSocket.OPEN) return resolve();
      this.ws.once('open', resolve);
      this.ws.once('unexpected-response', (req, res) => reject(new Error(`${this.name}: HTTP ${res.statusCode}`)));
      this.ws.once('error', reject);
    }), `${this.name} open`);
  }

  next() {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    if (this.closed) return Promise.reject(new Error(`${this.name} closed ${this.closed.code}`));
    return withTimeout(new Promise((resolve, reject) => this.waiters.push({ resolve, reject })),
      `a message at ${this.name}`);
  }

  async nextJson(what) {
    const msg = await this.next();
    check(!msg.isBinary, `${what}: a text message`);
    try {
      return { raw: msg.text, json: JSON.parse(msg.text) };
    } catch (e) {
      check(false, `${what}: JSON (${msg.text})`);
      return { raw: msg.text, json: {} };
    }
  }

  closedWith() {
    return withTimeout(this.closePromise, `${this.name} to close`);
  }
}

// Headless Chromium (playwright-core, a throw-away profile) showing `html` from this
// directory as a file:// URL with `params` in its query. Returns { page, close }.
async function openPage(executablePath, html, params) {
  const { chromium } = require('playwright-core');
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'shardrelay-chromium-'));
  let context;
  const close = async () => {
    if (context) await context.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  };
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        // INTEROP_CHROMIUM_ARGS: extra flags, e.g. the TLS checks' test-certificate trust
        // (--ignore-certificate-errors-spki-list=<sha256 of the leaf's key>).
        ...(process.env.INTEROP_CHROMIUM_ARGS || '').split(' ').filter(Boolean)],
      viewport: { width: 900, height: 560 },
      timeout: 60000,
    });
    const page = context.pages()[0] || await context.newPage();
    page.setDefaultTimeout(TIMEOUT_MS);
    const url = pathToFileURL(path.join(__dirname, html));
    for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
    await page.goto(url.href);
    return { page, close };
  } catch (e) {
    await close();
    throw e;
  }
}

// Print the tally and exit 1 on any failure.
function finish(name) {
  console.log(`${name}: ${results.passes} passed, ${results.failures.length} failed`);
  process.exit(results.failures.length ? 1 : 0);
}

module.exports = { TIMEOUT_MS, check, args, withTimeout, Client, openPage, finish };
