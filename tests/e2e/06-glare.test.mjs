// Test 6: both peers renegotiate at the same instant (each adds, then removes, a track at the
// same wall-clock moment) several times; perfect negotiation resolves every collision and the
// call survives, with the added tracks decoded on both sides.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useCallEnv, roomName } from './lib/harness.mjs';
import { joinCall, expectMediaEverywhere, peerStats } from './lib/browser.mjs';

const env = useCallEnv();

// In the page: count the offers this side sends; make a canvas track that keeps drawing.
const instrument = (page) => page.evaluate(() => {
  window.sent = [];
  const orig = window.call._signal.bind(window.call);
  window.call._signal = (m) => { if (m.type !== 'candidate') window.sent.push({ type: m.type, t: performance.now() }); orig(m); };
  // An offer that arrives while this side has its own offer out is a collision (glare).
  window.collisions = 0;
  for (const peer of window.call.peers.values()) {
    const receive = peer._receive.bind(peer);
    peer._receive = (m) => {
      if (m.type === 'offer' && (peer.makingOffer || peer.pc.signalingState === 'have-local-offer')) window.collisions++;
      return receive(m);
    };
  }
  const canvas = document.createElement('canvas');
  canvas.width = 320; canvas.height = 240;
  const ctx = canvas.getContext('2d');
  let n = 0;
  setInterval(() => { ctx.fillStyle = `hsl(${(n += 7) % 360} 80% 50%)`; ctx.fillRect(0, 0, 320, 240); }, 33);
  window.extra = canvas.captureStream(30).getVideoTracks()[0];
});

// Run `action` in both pages at the same wall-clock instant.
async function together(pages, action) {
  const at = Date.now() + 400;
  await Promise.all(pages.map((p) => p.evaluate(([when, src]) => new Promise((resolve) => {
    const fn = new Function(`return (${src})()`);
    const wait = () => (Date.now() >= when ? resolve(fn()) : setTimeout(wait, 1));
    wait();
  }), [at, action.toString()])));
}

const stable = (page) => page.waitForFunction(() => [...window.call.peers.values()].every((p) => p.pc.signalingState === 'stable' && p.pc.connectionState === 'connected'), null, { timeout: 15000 });
// How many remote video streams are being decoded right now (framesDecoded rising over 0.5 s).
async function decodingVideos(page) {
  const sample = async () => new Map(Object.values(await peerStats(page))[0].video.filter((v) => v.negotiated).map((v) => [v.mid, v.framesDecoded]));
  const x = await sample();
  await new Promise((r) => setTimeout(r, 500));
  const y = await sample();
  return [...y].filter(([mid, n]) => n > (x.get(mid) ?? 0)).length;
}

test('simultaneous renegotiation from both sides never deadlocks', async () => {
  const room = roomName('glare');
  const a = await env.page('A');
  const b = await env.page('B');
  await joinCall(a, { room, name: 'Alice' });
  await joinCall(b, { room, name: 'Bob' });
  await expectMediaEverywhere([a, b]);
  await instrument(a);
  await instrument(b);

  for (let round = 0; round < 3; round++) {
    await together([a, b], () => window.call.addTrack(window.extra));
    await stable(a);
    await stable(b);
    // Both added tracks are decoded on the other side: camera and canvas, both increasing.
    for (const p of [a, b]) {
      let n = 0;
      for (const end = Date.now() + 15000; Date.now() < end && n < 2;) n = await decodingVideos(p);
      assert.ok(n >= 2, `${p.label} decodes camera and canvas (round ${round}, ${n} video streams decoding)`);
    }
    await together([a, b], () => window.call.removeTrack(window.extra));
    await stable(a);
    await stable(b);
  }
  const collisions = await Promise.all([a, b].map((p) => p.evaluate(() => window.collisions)));
  console.log(`offer collisions seen (A, B) over 6 simultaneous renegotiations: ${collisions}`);
  assert.ok(collisions[0] + collisions[1] >= 1, 'the test did make offers collide');
  const errors = await Promise.all([a, b].map((p) => p.evaluate(() => window.events.filter((e) => e.type === 'error'))));
  assert.deepEqual(errors, [[], []], 'no negotiation errors');
  await expectMediaEverywhere([a, b]);
});

test('mute and unmute keep the connection and the call going', async () => {
  const room = roomName('mute');
  const a = await env.page('A');
  const b = await env.page('B');
  await joinCall(a, { room });
  await joinCall(b, { room });
  await expectMediaEverywhere([a, b]);
  assert.deepEqual(await a.evaluate(() => { window.call.mute('audio'); window.call.mute('video'); return [window.call.isMuted('audio'), window.call.isMuted('video')]; }), [true, true]);
  await expectMediaEverywhere([a, b]); // black frames and silence still flow: no renegotiation
  assert.deepEqual(await a.evaluate(() => { window.call.unmute('audio'); window.call.unmute('video'); return [window.call.isMuted('audio'), window.call.isMuted('video')]; }), [false, false]);
  await expectMediaEverywhere([a, b]);
});
