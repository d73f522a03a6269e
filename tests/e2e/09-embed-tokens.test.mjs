// An application on its own origin embeds the SDK from the Otter server (examples/web-app),
// with room tokens from its backend (examples/room-tokens) and the Otter server requiring them
// and allowing only the app's origin. Also: tokens from the Python snippet work, and a join
// without a valid token or from another origin is refused with the protocol's codes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { startCoturn, startSignaling, spawnLogged, freePort, REPO } from './lib/procs.mjs';
import { launch, openPage, expectMediaEverywhere } from './lib/browser.mjs';
import { roomToken } from '../../examples/room-tokens/mint.mjs';

const secret = randomBytes(24).toString('hex');
const env = {};

before(async () => {
  env.turn = await startCoturn();
  env.appPort = await freePort();
  env.appOrigin = `http://127.0.0.1:${env.appPort}`;
  // Allowed: the app, and the server's own origin as 127.0.0.1 (pages there import /otter.js
  // same-origin); not allowed: the same server reached as localhost, a different origin.
  const port = await freePort();
  env.selfOrigin = `http://127.0.0.1:${port}`;
  env.otherOrigin = `http://localhost:${port}`;
  env.server = await startSignaling({ turn: env.turn, port, extraArgs: ['--token-secret', secret, '--allowed-origins', `${env.appOrigin},${env.selfOrigin}`] });
  env.app = spawnLogged('web-app', process.execPath, [join(REPO, 'examples/web-app/server.mjs')], {
    env: { ...process.env, OTTER_URL: env.server.url, OTTER_TOKEN_SECRET: secret, PORT: String(env.appPort) },
  });
  for (let i = 0; i < 100; i++) {
    try { if ((await fetch(`${env.appOrigin}/`)).ok) break; } catch { await new Promise((r) => setTimeout(r, 100)); }
  }
  env.browser = await launch();
});
after(async () => {
  await env.browser?.close().catch(() => {});
  await env.app?.stop();
  await env.server?.stop();
  await env.turn?.stop();
});

test('the example app embeds the SDK cross-origin with tokens from its backend, and calls', async () => {
  const room = `embed-${process.pid}`;
  const js = await fetch(`${env.server.url}/otter.js`, { headers: { origin: env.appOrigin } });
  assert.ok(js.headers.get('access-control-allow-origin'), 'GET /otter.js must answer Access-Control-Allow-Origin (e.g. *): a page on another origin imports it as a module, which is a CORS request (server side: web_file in signaling/src/http.rs)');
  const a = await openPage(env.browser, env.appOrigin, 'A', `/?room=${room}&name=Alice`);
  const b = await openPage(env.browser, env.appOrigin, 'B', `/?room=${room}&name=Bob`);
  for (const p of [a, b]) await p.waitForFunction(() => window.call?.state === 'joined', null, { timeout: 15000 }).catch((e) => { throw new Error(`${e.message}\n${p.logs.join('\n')}`); });
  await expectMediaEverywhere([a, b]);
  // The name claim of the token is what the others see.
  assert.deepEqual(await a.evaluate(() => [...window.call.peers.values()].map((p) => p.name)), ['Bob']);
});

async function tryJoin(page, opts) {
  return page.evaluate(async (o) => {
    const { join } = await import('/otter.js'); // url defaults to the origin otter.js came from
    try {
      const call = await join({ media: false, ...o });
      const r = { ok: true, peerId: call.peerId };
      call.leave();
      return r;
    } catch (e) {
      return { ok: false, code: e.code, message: e.message };
    }
  }, opts);
}

test('joins need a valid token for the room: missing, expired, forged, wrong room are refused', async () => {
  const page = await openPage(env.browser, env.selfOrigin, 'T');
  const room = `tokens-${process.pid}`;
  assert.equal((await tryJoin(page, { room, token: roomToken(secret, room) })).ok, true);
  const py = execFileSync('python3', [join(REPO, 'examples/room-tokens/mint.py'), room, 'Py'], { env: { ...process.env, OTTER_TOKEN_SECRET: secret } }).toString().trim();
  assert.equal((await tryJoin(page, { room, token: py })).ok, true, 'a token from the Python snippet');
  assert.equal((await tryJoin(page, { room })).code, 'auth-required');
  assert.equal((await tryJoin(page, { room, token: roomToken(secret, room, { ttlSeconds: -60 }) })).code, 'auth-expired');
  assert.equal((await tryJoin(page, { room, token: roomToken('forged', room) })).code, 'auth-invalid');
  assert.equal((await tryJoin(page, { room, token: roomToken(secret, 'other-room') })).code, 'auth-wrong-room');
});

test('a page of an origin not in --allowed-origins cannot join', async () => {
  const page = await openPage(env.browser, env.otherOrigin, 'X'); // not in --allowed-origins
  const room = `origin-${process.pid}`;
  const r = await tryJoin(page, { room, token: roomToken(secret, room) });
  assert.equal(r.ok, false);
  assert.equal(r.code, 'sdk-connect', JSON.stringify(r));
  // What the browser got: the upgrade refused with 403 origin-forbidden.
  const { request } = await import('node:http');
  const refused = await new Promise((resolve, reject) => {
    const req = request(`${env.server.url}/ws`, {
      headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', origin: env.otherOrigin },
    });
    req.on('response', (res) => { let body = ''; res.on('data', (d) => { body += d; }); res.on('end', () => resolve({ status: res.statusCode, body })); });
    req.on('upgrade', (res, socket) => { socket.destroy(); resolve({ status: 101 }); });
    req.on('error', reject);
    req.end();
  });
  assert.equal(refused.status, 403);
  assert.match(refused.body, /origin-forbidden/);
});
