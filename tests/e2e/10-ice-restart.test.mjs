// ICE restart: a relay-only call loses its TURN server (coturn stopped, all allocations gone);
// the SDK sees the connection go down, restarts ICE over signaling, and once coturn is back the
// same RTCPeerConnections carry media again with new relay candidates.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useCallEnv, roomName } from './lib/harness.mjs';
import { joinCall, expectMediaEverywhere } from './lib/browser.mjs';
import { startCoturn, startSignaling } from './lib/procs.mjs';

const env = useCallEnv();
/** The expiry (Unix seconds) in a TURN REST username `expiry:id`. */
const expiry = (username) => Number(username.split(':')[0]);

test('a relay call survives losing its TURN server through an ICE restart', async () => {
  const room = roomName('restart-ice');
  const a = await env.page('A');
  const b = await env.page('B');
  await joinCall(a, { room, iceTransportPolicy: 'relay' });
  await joinCall(b, { room, iceTransportPolicy: 'relay' });
  const before = await expectMediaEverywhere([a, b]);
  const pairBefore = Object.values(before.A)[0].pair;
  for (const p of [a, b]) {
    await p.evaluate(() => {
      const peer = [...window.call.peers.values()][0];
      window.pcBefore = peer.pc;
      window.ufragBefore = peer.pc.localDescription.sdp.match(/a=ice-ufrag:(\S+)/)[1];
    });
  }
  const { port, secret } = env.turn;
  await env.turn.stop();
  const t0 = Date.now();
  // The connection notices (consent checks fail), the SDK restarts ICE once it stays down.
  for (const p of [a, b]) {
    await p.waitForFunction(() => window.events.some((e) => e.type === 'peerstate' && (e.state === 'disconnected' || e.state === 'failed')), null, { timeout: 30000 });
  }
  env.turn = await startCoturn({ port, secret, name: 'coturn-restarted' });
  const after = await expectMediaEverywhere([a, b], { timeoutMs: 45000 });
  console.log(`media back ${Date.now() - t0} ms after coturn was stopped`);
  for (const p of [a, b]) {
    const r = await p.evaluate(() => {
      const peer = [...window.call.peers.values()][0];
      return { same: peer.pc === window.pcBefore, restarted: peer.pc.localDescription.sdp.match(/a=ice-ufrag:(\S+)/)[1] !== window.ufragBefore, state: peer.pc.connectionState };
    });
    assert.deepEqual(r, { same: true, restarted: true, state: 'connected' }, `${p.label}: same connection, new ICE credentials`);
  }
  const pairAfter = Object.values(after.A)[0].pair;
  assert.equal(pairAfter.local, 'relay');
  assert.notEqual(pairAfter.localAddress, pairBefore.localAddress, 'a new relay allocation');
});

test('the ICE restart gets fresh TURN credentials when those from joined have expired', async () => {
  // A server whose TURN credentials live 6 s: expired by the time coturn comes back.
  const server = await startSignaling({ turn: env.turn, extraArgs: ['--turn-ttl', '6s'], name: 'signaling-short-ttl' });
  try {
    const room = roomName('expired-turn');
    const a = await env.page('A2', undefined, server.url);
    const b = await env.page('B2', undefined, server.url);
    await joinCall(a, { room, iceTransportPolicy: 'relay' });
    await joinCall(b, { room, iceTransportPolicy: 'relay' });
    await expectMediaEverywhere([a, b]);
    const userBefore = await a.evaluate(() => [...window.call.peers.values()][0].pc.getConfiguration().iceServers.find((s) => s.username).username);
    await new Promise((r) => setTimeout(r, 6500)); // the credentials expire; the allocations live on
    const { port, secret } = env.turn;
    const stoppedAt = Date.now() / 1000;
    assert.ok(expiry(userBefore) <= stoppedAt, `the credentials from joined had expired: ${userBefore} at ${stoppedAt}`);
    await env.turn.stop();
    for (const p of [a, b]) {
      await p.waitForFunction(() => window.events.some((e) => e.type === 'peerstate' && (e.state === 'disconnected' || e.state === 'failed')), null, { timeout: 30000 });
    }
    env.turn = await startCoturn({ port, secret, name: 'coturn-restarted-2' });
    await expectMediaEverywhere([a, b], { timeoutMs: 45000 });
    const userAfter = await a.evaluate(() => [...window.call.peers.values()][0].pc.getConfiguration().iceServers.find((s) => s.username).username);
    // Minted after the old ones had expired. That coturn took them is shown by media being back
    // (it refuses expired REST credentials); whether they are still valid *now* depends on how
    // long the media check took, so it is not asked.
    assert.ok(expiry(userAfter) > stoppedAt, `fresh credentials: ${userBefore} -> ${userAfter}, TURN stopped at ${stoppedAt}`);
  } finally {
    await server.stop();
  }
});
