// Test 1: two pages call directly (host candidates on loopback), media decoded on both sides.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useCallEnv, roomName } from './lib/harness.mjs';
import { joinCall, expectMediaEverywhere, firstFrameMs } from './lib/browser.mjs';

const env = useCallEnv();

test('the server serves the SDK and the demo page', async () => {
  const js = await fetch(`${env.server.url}/otter.js`);
  assert.equal(js.status, 200);
  assert.match(js.headers.get('content-type'), /javascript/);
  assert.match(await js.text(), /export async function join/);
  const html = await fetch(`${env.server.url}/`);
  assert.equal(html.status, 200);
  assert.match(html.headers.get('content-type'), /text\/html/);
  assert.match(await html.text(), /demo\.js/);
});

test('two pages call directly and decode each other\'s video', async () => {
  const room = roomName('direct');
  const a = await env.page('A');
  const b = await env.page('B');
  const ja = await joinCall(a, { room, name: 'Alice' });
  const jb = await joinCall(b, { room, name: 'Bob' });
  assert.notEqual(ja.peerId, jb.peerId);
  const ms = await firstFrameMs(b);
  assert.ok(ms !== null, 'B decoded a frame');
  console.log(`join->first remote frame (direct): ${ms.toFixed(0)} ms`);
  const stats = await expectMediaEverywhere([a, b]);
  for (const [label, peers] of Object.entries(stats)) {
    for (const s of Object.values(peers)) {
      assert.equal(s.state, 'connected', label);
      assert.notEqual(s.pair?.local, 'relay', `${label} pair ${JSON.stringify(s.pair)}`);
      assert.ok(s.audio.some((x) => x.packetsReceived > 0), `${label} receives audio`);
    }
  }
});
