// Test 5: on the demo page, one page reloads and the call resumes; a page closes and the others
// see it leave, while their own call goes on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useCallEnv, roomName } from './lib/harness.mjs';
import { expectMediaEverywhere } from './lib/browser.mjs';

const env = useCallEnv();

const demo = (room, name) => `/?room=${room}&name=${name}&autojoin=1`;
const joined = (page) => page.waitForFunction(() => window.otter?.call?.state === 'joined', null, { timeout: 15000 });
const peerIdOf = (page) => page.evaluate(() => window.otter.call.peerId);
const seenLeft = (page) => page.evaluate(() => window.seenLeft ?? []);
const watchLeaves = (page) => page.evaluate(() => {
  window.seenLeft = [];
  if (window.watching === window.otter.call) return;
  window.watching = window.otter.call;
  window.otter.call.addEventListener('peerleft', (e) => window.seenLeft.push({ id: e.detail.peer.id, reason: e.detail.reason }));
});

test('demo page: a reload rejoins and media resumes; a closed page is seen leaving', async () => {
  const room = roomName('reload');
  const a = await env.page('A', demo(room, 'Alice'));
  await joined(a);
  const b = await env.page('B', demo(room, 'Bob'));
  await joined(b);
  const c = await env.page('C', demo(room, 'Carol'));
  await joined(c);
  await expectMediaEverywhere([a, b, c], { expectPeers: 2, timeoutMs: 30000 });
  // The demo page shows a video per remote peer.
  assert.equal(await a.locator('figure[data-peer] video').count(), 2);
  await watchLeaves(a);
  await watchLeaves(c);

  const before = await peerIdOf(b);
  await b.reload();
  await joined(b);
  const after = await peerIdOf(b);
  assert.notEqual(after, before, 'a reload is a new peer (the old socket closed cleanly)');
  await expectMediaEverywhere([a, b, c], { expectPeers: 2, timeoutMs: 30000 });
  for (const p of [a, c]) {
    assert.deepEqual(await seenLeft(p), [{ id: before, reason: 'left' }], `${p.label} saw B's old seat leave`);
    assert.ok(await p.evaluate((id) => window.otter.call.peers.has(id), after), `${p.label} is connected to the reloaded B`);
  }
  await a.waitForFunction((id) => document.querySelector(`figure[data-peer="${id}"] video`)?.readyState >= 2, after, { timeout: 10000 });

  const cId = await peerIdOf(c);
  await watchLeaves(a);
  await watchLeaves(b);
  const closedAt = Date.now();
  await c.context().close();
  env.pages.splice(env.pages.indexOf(c), 1);
  for (const p of [a, b]) {
    await p.waitForFunction((id) => window.seenLeft.some((x) => x.id === id), cId, { timeout: 10000 });
    assert.deepEqual(await seenLeft(p), [{ id: cId, reason: 'left' }]);
  }
  console.log(`closed page seen leaving after ${Date.now() - closedAt} ms`);
  assert.equal(await a.locator(`figure[data-peer="${cId}"]`).count(), 0, 'its video is gone from the page');
  await expectMediaEverywhere([a, b], { expectPeers: 1 });
});
