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
const videoDecoders = async (page) => Object.values(await peerStats(page))[0].video.filter((v) => v.framesDecoded > 0).length;

test('simultaneous renegotiation from both sides never deadlocks', async () => {
  const room = roomName('glare');
  const a = await env.page('A');
  const b = await env.page('B');
  await joinCall(a, { room, name: 'Alice' });
  await joinCall(b, { room, name: 'Bob' });
  await expectMediaEverywhere([a, b]);
  await instrument(a);
  await instrument(b);

  let collisions = 0;
  for (let round = 0; round < 3; round++) {
    const offersBefore = await Promise.all([a, b].map((p) => p.evaluate(() => window.sent.filter((m) => m.type === 'offer').length)));
    await together([a, b], () => window.call.addTrack(window.extra));
    await stable(a);
    await stable(b);
    const offersAfter = await Promise.all([a, b].map((p) => p.evaluate(() => window.sent.filter((m) => m.type === 'offer').length)));
    if (offersAfter[0] > offersBefore[0] && offersAfter[1] > offersBefore[1]) collisions++;
    // Both added tracks are decoded on the other side (camera + canvas = 2 video streams).
    for (const p of [a, b]) {
      await p.waitForFunction(async () => {
        const peer = [...window.call.peers.values()][0];
        const stats = await peer.pc.getStats();
        let n = 0;
        stats.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video' && s.framesDecoded > 0 && s.mid) n++; });
        return n >= 2;
      }, null, { timeout: 15000, polling: 250 });
      assert.ok(await videoDecoders(p) >= 2, `${p.label} decodes camera and canvas`);
    }
    await together([a, b], () => window.call.removeTrack(window.extra));
    await stable(a);
    await stable(b);
  }
  console.log(`rounds where both sides offered at once: ${collisions}/3`);
  assert.ok(collisions >= 1, 'both sides did offer simultaneously at least once (the test exercised glare)');
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
