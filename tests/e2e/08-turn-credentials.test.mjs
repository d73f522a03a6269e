// coturn (use-auth-secret) accepts the TURN credentials the signaling server mints, and
// refuses expired and forged ones: checked with a raw TURN Allocate and from Chromium.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useCallEnv } from './lib/harness.mjs';
import { turnCredentials } from './lib/procs.mjs';
import { allocate } from './lib/stun.mjs';

const env = useCallEnv();

async function mintedTurn() {
  const r = await fetch(`${env.server.url}/v1/ice-servers`);
  assert.equal(r.status, 200);
  const body = await r.json();
  const turn = body.iceServers.find((s) => [].concat(s.urls).some((u) => u.startsWith('turn:')));
  assert.ok(turn, JSON.stringify(body));
  return turn;
}

test('credentials minted by the signaling server get a relay allocation', async () => {
  const turn = await mintedTurn();
  const [expiry] = turn.username.split(':');
  assert.ok(Number(expiry) > Date.now() / 1000, 'expiry in the future');
  const r = await allocate('127.0.0.1', env.turn.port, turn.username, turn.credential);
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.match(r.relayed, /^127\.0\.0\.1:\d+$/);
  assert.equal(r.realm, 'otter.test');
});

test('expired credentials are refused (401)', async () => {
  const c = turnCredentials(env.turn.secret, 'p-late', -120);
  const r = await allocate('127.0.0.1', env.turn.port, c.username, c.credential);
  assert.deepEqual([r.ok, r.code], [false, 401]);
});

test('forged credentials are refused (401)', async () => {
  const turn = await mintedTurn();
  const wrongPassword = await allocate('127.0.0.1', env.turn.port, turn.username, 'bm90IHRoZSBobWFj');
  assert.deepEqual([wrongPassword.ok, wrongPassword.code], [false, 401]);
  const otherSecret = turnCredentials('not-the-secret', 'p-forger');
  const r2 = await allocate('127.0.0.1', env.turn.port, otherSecret.username, otherSecret.credential);
  assert.deepEqual([r2.ok, r2.code], [false, 401]);
  // A longer expiry on a real credential breaks its HMAC.
  const [, peer] = turn.username.split(':');
  const extended = `${Math.floor(Date.now() / 1000) + 10 * 365 * 86400}:${peer}`;
  const r3 = await allocate('127.0.0.1', env.turn.port, extended, turn.credential);
  assert.deepEqual([r3.ok, r3.code], [false, 401]);
});

test('in Chromium, a forged credential yields no relay candidate, a minted one does', async () => {
  const page = await env.page('A');
  const turn = await mintedTurn();
  const gather = (ice) => page.evaluate(async (server) => {
    const pc = new RTCPeerConnection({ iceServers: [server], iceTransportPolicy: 'relay' });
    const found = [];
    const errors = [];
    pc.onicecandidateerror = (e) => errors.push(e.errorCode);
    pc.createDataChannel('x');
    await pc.setLocalDescription();
    await new Promise((resolve) => {
      const t = setTimeout(resolve, 8000);
      pc.onicecandidate = (e) => { if (e.candidate) found.push(e.candidate.type); else { clearTimeout(t); resolve(); } };
    });
    pc.close();
    return { found, errors };
  }, ice);
  const good = await gather(turn);
  assert.ok(good.found.includes('relay'), JSON.stringify(good));
  const bad = await gather({ ...turn, credential: 'Zm9yZ2Vk' });
  assert.deepEqual(bad.found, [], JSON.stringify(bad));
  assert.ok(bad.errors.includes(401), JSON.stringify(bad));
});
