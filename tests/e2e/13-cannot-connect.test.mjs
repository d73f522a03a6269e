// A call that cannot connect says so (the SDK's connectTimeoutMs escalation: ICE restart, TURN
// over TCP, TURN over TLS, then an `error` event whose code says what failed), against the real
// coturn: credentials it refuses, UDP blocked (coturn on TCP only), and coturn gone mid-call.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startCoturn, startSignaling } from './lib/procs.mjs';
import { launch, openPage, joinCall, expectMediaEverywhere } from './lib/browser.mjs';
import { roomName } from './lib/harness.mjs';

const CONNECT_TIMEOUT_MS = 3000;
const env = { stops: [] };
before(async () => { env.browser = await launch(); });
after(async () => {
  await env.browser?.close().catch(() => {});
  for (const stop of env.stops.reverse()) await stop();
});

async function startPair(t, server, extra = {}) {
  const room = roomName(t);
  const pages = [];
  for (const label of ['A', 'B']) {
    const page = await openPage(env.browser, server.url, `${t}-${label}`);
    await joinCall(page, { room, name: label, iceTransportPolicy: 'relay', connectTimeoutMs: CONNECT_TIMEOUT_MS, ...extra });
    pages.push(page);
  }
  return pages;
}

/** Wait for an `error` event about a peer connection on the page; returns it. */
async function connectError(page, timeoutMs) {
  try {
    const handle = await page.waitForFunction(() => window.events.find((e) => e.type === 'error' && e.peer && e.code?.startsWith('sdk-')), null, { timeout: timeoutMs, polling: 200 });
    return await handle.jsonValue();
  } catch (e) {
    const events = await page.evaluate(() => window.events.map((x) => `${x.type}:${x.state ?? x.code ?? ''}`)).catch(() => []);
    throw new Error(`${page.label}: no connection error event in ${timeoutMs} ms (${e.message})\nevents: ${events.join(' ')}\n${page.logs.join('\n')}`);
  }
}

test('TURN refusing the credentials: sdk-turn-auth, not a silent hang', async () => {
  const turn = await startCoturn({ name: 'coturn-auth' });
  const server = await startSignaling({ turn, turnSecret: randomBytes(16).toString('hex'), name: 'signaling-wrong-turn-secret' });
  env.stops.push(() => turn.stop(), () => server.stop());
  const t0 = Date.now();
  const pages = await startPair('turn-auth', server);
  for (const p of pages) {
    const e = await connectError(p, 30000);
    assert.equal(e.code, 'sdk-turn-auth', `${p.label}: ${e.error}`);
    assert.match(e.error, /refused the credentials/);
    const info = await p.evaluate(() => ({ sent: window.call.send('anyone?'), states: window.events.filter((x) => x.type === 'peerstate').map((x) => x.state) }));
    assert.equal(info.sent, 0);
    assert.ok(!info.states.includes('connected'), `never connected: ${info.states}`);
  }
  const ms = Date.now() - t0;
  console.log(`sdk-turn-auth raised ${ms} ms after joining (connectTimeoutMs ${CONNECT_TIMEOUT_MS}, one restart stage)`);
  assert.ok(ms >= 2 * CONNECT_TIMEOUT_MS - 500, `raised only after the restart stage too (${ms} ms)`);
  for (const p of pages) await p.evaluate(() => window.call.leave());
});

test('UDP blocked (coturn on TCP only): the call connects through TURN over TCP', async () => {
  const turn = await startCoturn({ name: 'coturn-tcp-only', udp: false });
  const server = await startSignaling({
    turn, name: 'signaling-tcp-turn',
    turnUris: `turn:127.0.0.1:${turn.port}?transport=udp,turn:127.0.0.1:${turn.port}?transport=tcp`,
  });
  env.stops.push(() => turn.stop(), () => server.stop());
  const pages = await startPair('udp-blocked', server);
  await expectMediaEverywhere(pages, { timeoutMs: 30000 });
  for (const p of pages) {
    const pair = await p.evaluate(async () => {
      const peer = [...window.call.peers.values()][0];
      const stats = await peer.pc.getStats();
      let local = null;
      stats.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) local = stats.get(stats.get(s.selectedCandidatePairId).localCandidateId); });
      return local && { type: local.candidateType, relayProtocol: local.relayProtocol };
    });
    assert.deepEqual(pair, { type: 'relay', relayProtocol: 'tcp' }, `${p.label}: relayed over TCP`);
    const errors = await p.evaluate(() => window.events.filter((e) => e.type === 'error'));
    assert.deepEqual(errors, [], `${p.label}: no error on a call that connects`);
  }
  for (const p of pages) await p.evaluate(() => window.call.leave());
});

test('TURN gone mid-call: the call says it cannot reconnect (sdk-turn-unreachable)', async () => {
  const turn = await startCoturn({ name: 'coturn-gone' });
  const server = await startSignaling({ turn, name: 'signaling-turn-gone' });
  env.stops.push(() => turn.stop(), () => server.stop());
  const pages = await startPair('turn-gone', server);
  await expectMediaEverywhere(pages, { timeoutMs: 30000 });
  const t0 = Date.now();
  await turn.stop();
  for (const p of pages) {
    const e = await connectError(p, 60000);
    assert.equal(e.code, 'sdk-turn-unreachable', `${p.label}: ${e.error}`);
  }
  console.log(`sdk-turn-unreachable raised ${Date.now() - t0} ms after coturn was stopped`);
  for (const p of pages) await p.evaluate(() => window.call.leave());
});
