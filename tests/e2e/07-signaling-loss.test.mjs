// The signaling connection is lost, not the call: the SDK reconnects with backoff, resumes its
// seat with the resume token, and the peer connections (media never went through the server)
// carry on untouched. And a server restart (SIGTERM: `reconnect`, close 1012) brings the call back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useCallEnv, roomName } from './lib/harness.mjs';
import { joinCall, expectMediaEverywhere, peerStats } from './lib/browser.mjs';
import { startProxy } from './lib/proxy.mjs';
import { startSignaling } from './lib/procs.mjs';

const env = useCallEnv();

const states = (page) => page.evaluate(() => window.events.filter((e) => e.type === 'state').map((e) => e.state));
const leaves = (page) => page.evaluate(() => window.events.filter((e) => e.type === 'peerleft'));
const frames = async (page) => Object.values(await peerStats(page))[0].video.reduce((n, v) => n + v.framesDecoded, 0);

test('a signaling blip: reconnect with backoff, resume the seat, the call never drops', async () => {
  const proxy = await startProxy(env.server.port);
  try {
    const room = roomName('blip');
    const a = await env.page('A', undefined, proxy.url);
    const b = await env.page('B');
    // A reaches the server through the proxy; B directly.
    const { peerId: aId } = await joinCall(a, { room, name: 'Alice', url: proxy.url });
    const { peerId: bId } = await joinCall(b, { room, name: 'Bob' });
    await expectMediaEverywhere([a, b]);
    await a.evaluate(() => { window.pcBefore = [...window.call.peers.values()][0].pc; });
    const framesBefore = await frames(a);

    proxy.cut();
    await a.waitForFunction(() => window.call.state === 'reconnecting', null, { timeout: 5000 });
    await new Promise((r) => setTimeout(r, 2500)); // a few refused attempts (backoff)
    // Meanwhile the media path is untouched.
    assert.ok(await frames(a) > framesBefore, 'A still decodes B while signaling is down');
    proxy.reopen();
    await a.waitForFunction(() => window.call.state === 'joined', null, { timeout: 15000 });

    assert.equal(await a.evaluate(() => window.call.peerId), aId, 'same peer id after resume');
    assert.ok(await a.evaluate(() => [...window.call.peers.values()][0].pc === window.pcBefore), 'same RTCPeerConnection');
    assert.deepEqual(await leaves(b), [], 'B never saw A leave');
    assert.deepEqual(await leaves(a), [], 'A never dropped B');
    const s = await states(a);
    assert.deepEqual(s.slice(0, 2), ['connecting', 'joined']);
    assert.ok(s.includes('reconnecting') && s.at(-1) === 'joined', s.join(','));
    await expectMediaEverywhere([a, b]);

    // Signaling works again after the resume: a renegotiation goes through it.
    await a.evaluate(() => {
      const c = document.createElement('canvas');
      const ctx = c.getContext('2d');
      setInterval(() => { ctx.fillStyle = `#${Math.floor(Math.random() * 4096).toString(16).padStart(3, '0')}`; ctx.fillRect(0, 0, 300, 150); }, 40);
      window.call.addTrack(c.captureStream(25).getVideoTracks()[0]);
    });
    await b.waitForFunction(async (id) => {
      const pc = window.call.peers.get(id).pc;
      const mids = new Set(pc.getTransceivers().filter((t) => t.receiver.track.kind === 'video' && /recv/.test(t.currentDirection ?? '')).map((t) => t.mid));
      const stats = await pc.getStats();
      let n = 0;
      stats.forEach((x) => { if (x.type === 'inbound-rtp' && x.kind === 'video' && mids.has(x.mid) && x.framesDecoded > 0) n++; });
      return n >= 2;
    }, aId, { timeout: 15000, polling: 250 });
  } finally {
    await proxy.close();
  }
});

test('an offer made while the other side\'s signaling was down is made again', async () => {
  const proxy = await startProxy(env.server.port);
  try {
    const room = roomName('lostoffer');
    const a = await env.page('A', undefined, proxy.url);
    const b = await env.page('B');
    const { peerId: aId } = await joinCall(a, { room, url: proxy.url });
    const { peerId: bId } = await joinCall(b, { room });
    await expectMediaEverywhere([a, b]);
    // Counted before and after: the check is that the new track raises an event, whatever B
    // sent at first. Waited for, not sampled once the frames decode: under a CPU hog, a count
    // taken right after the decode check once missed an event the browser had fired.
    const tracksOfB = (id) => window.events.filter((e) => e.type === 'track' && e.peer === id).length;
    const before = await a.evaluate(tracksOfB, bId);
    proxy.cut();
    await a.waitForFunction(() => window.call.state === 'reconnecting', null, { timeout: 5000 });
    // B renegotiates now: its offer reaches the server, which cannot deliver it to A.
    await b.evaluate(() => {
      const c = document.createElement('canvas');
      const ctx = c.getContext('2d');
      setInterval(() => { ctx.fillStyle = `hsl(${Date.now() % 360} 70% 50%)`; ctx.fillRect(0, 0, 300, 150); }, 40);
      window.call.addTrack(c.captureStream(25).getVideoTracks()[0]);
    });
    await b.waitForFunction((id) => window.call.peers.get(id).pc.signalingState === 'have-local-offer', aId);
    await new Promise((r) => setTimeout(r, 1500));
    proxy.reopen();
    await a.waitForFunction(() => window.call.state === 'joined', null, { timeout: 15000 });
    assert.equal(await a.evaluate(() => window.call.peerId), aId);
    // B offers again after its answer timeout; A then receives B's second video.
    await b.waitForFunction((id) => window.call.peers.get(id).pc.signalingState === 'stable', aId, { timeout: 20000 });
    await a.waitForFunction(async (id) => {
      const pc = window.call.peers.get(id).pc;
      const receiving = pc.getTransceivers().filter((t) => t.receiver.track.kind === 'video' && /recv/.test(t.currentDirection ?? ''));
      if (receiving.length < 2) return false;
      const stats = await pc.getStats();
      const mids = new Set(receiving.map((t) => t.mid));
      let n = 0;
      stats.forEach((x) => { if (x.type === 'inbound-rtp' && x.kind === 'video' && mids.has(x.mid) && x.framesDecoded > 0) n++; });
      return n >= 2;
    }, bId, { timeout: 20000, polling: 250 });
    await a.waitForFunction(([id, n]) => window.events.filter((e) => e.type === 'track' && e.peer === id).length > n, [bId, before], { timeout: 10000 })
      .catch(async () => assert.fail(`A got no track event for the new track: ${before} before, ${await a.evaluate(tracksOfB, bId)} after`));
    await expectMediaEverywhere([a, b]);
  } finally {
    await proxy.close();
  }
});

test('a half-open signaling connection: the silence is noticed, a new socket resumes the seat', async () => {
  const proxy = await startProxy(env.server.port);
  try {
    const room = roomName('halfopen');
    const a = await env.page('A', undefined, proxy.url);
    const b = await env.page('B');
    const { peerId: aId } = await joinCall(a, { room, url: proxy.url, keepalive: { intervalMs: 500, timeoutMs: 2500 } });
    await joinCall(b, { room });
    await expectMediaEverywhere([a, b]);
    await a.evaluate(() => { window.pcBefore = [...window.call.peers.values()][0].pc; });
    proxy.freeze(); // neither the browser nor the server sees anything wrong
    await a.waitForFunction(() => window.events.some((e) => e.type === 'state' && e.state === 'reconnecting'), null, { timeout: 10000 });
    await a.waitForFunction(() => window.call.state === 'joined', null, { timeout: 15000 });
    assert.equal(await a.evaluate(() => window.call.peerId), aId, 'same peer id: the resume took the seat over from the frozen socket');
    assert.ok(await a.evaluate(() => [...window.call.peers.values()][0].pc === window.pcBefore), 'same RTCPeerConnection');
    assert.deepEqual(await leaves(b), [], 'B never saw A leave');
    await expectMediaEverywhere([a, b]);
  } finally {
    await proxy.close();
  }
});

test('a server restart: clients are told to reconnect, rejoin, and the call comes back', async () => {
  const room = roomName('restart');
  const a = await env.page('A');
  const b = await env.page('B');
  await joinCall(a, { room, name: 'Alice' });
  await joinCall(b, { room, name: 'Bob' });
  await expectMediaEverywhere([a, b]);
  for (const p of [a, b]) {
    await p.evaluate(() => {
      window.got = [];
      const onMessage = window.call._onMessage.bind(window.call);
      window.call._onMessage = (m) => { window.got.push(m.type); onMessage(m); };
    });
  }
  const port = env.server.port;
  const stopped = Date.now();
  await env.server.stop(); // SIGTERM: `reconnect` then close 1012
  env.server = await startSignaling({ turn: env.turn, port, name: 'signaling-restarted' });
  for (const p of [a, b]) await p.waitForFunction(() => window.call.state === 'joined' && window.call.peers.size === 1, null, { timeout: 20000 });
  for (const p of [a, b]) assert.ok((await p.evaluate(() => window.got)).includes('reconnect'), `${p.label} was told to reconnect`);
  // In-memory state died with the old process: both are new peers, with fresh connections.
  await expectMediaEverywhere([a, b], { timeoutMs: 20000 });
  console.log(`call back ${Date.now() - stopped} ms after the server was stopped`);
});
