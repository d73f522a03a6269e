// Test 2: two pages call with iceTransportPolicy "relay": the selected pair is relay<->relay
// through coturn, with credentials the signaling server minted; media decoded on both sides.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useCallEnv, roomName } from './lib/harness.mjs';
import { joinCall, expectMediaEverywhere, firstFrameMs } from './lib/browser.mjs';

const env = useCallEnv();

test('two pages call through coturn (iceTransportPolicy relay)', async () => {
  const room = roomName('relay');
  const a = await env.page('A');
  const b = await env.page('B');
  await joinCall(a, { room, name: 'Alice', iceTransportPolicy: 'relay' });
  await joinCall(b, { room, name: 'Bob', iceTransportPolicy: 'relay' });
  const ms = await firstFrameMs(b);
  assert.ok(ms !== null, 'B decoded a frame');
  console.log(`join->first remote frame (relay): ${ms.toFixed(0)} ms`);
  const stats = await expectMediaEverywhere([a, b]);
  const turnAddr = `127.0.0.1`;
  for (const [label, peers] of Object.entries(stats)) {
    for (const s of Object.values(peers)) {
      assert.equal(s.pair?.local, 'relay', `${label} local candidate ${JSON.stringify(s.pair)}`);
      assert.equal(s.pair?.remote, 'relay', `${label} remote candidate ${JSON.stringify(s.pair)}`);
      assert.ok(s.pair.localAddress.startsWith(turnAddr));
    }
  }
  // The ICE servers the page used are the ones the server handed out in `joined`.
  const ice = await a.evaluate(() => window.call.peers.values().next().value.pc.getConfiguration().iceServers);
  const turn = ice.find((s) => [].concat(s.urls).some((u) => u.startsWith('turn:')));
  assert.ok(turn, JSON.stringify(ice));
  assert.ok([].concat(turn.urls).includes(`turn:127.0.0.1:${env.turn.port}?transport=udp`));
  assert.match(turn.username, /^\d+:/);
});
