// Test 3: three pages in a full mesh: every page decodes both others.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useCallEnv, roomName } from './lib/harness.mjs';
import { joinCall, expectMediaEverywhere } from './lib/browser.mjs';

const env = useCallEnv();

test('three pages in a mesh, every pair has media both ways', async () => {
  const room = roomName('mesh');
  const pages = [await env.page('A'), await env.page('B'), await env.page('C')];
  const ids = [];
  for (const [i, p] of pages.entries()) ids.push((await joinCall(p, { room, name: `P${i}` })).peerId);
  assert.equal(new Set(ids).size, 3);
  const stats = await expectMediaEverywhere(pages, { expectPeers: 2, timeoutMs: 30000 });
  pages.forEach((p, i) => {
    const others = ids.filter((_, j) => j !== i).sort();
    assert.deepEqual(Object.keys(stats[p.label]).sort(), others, `${p.label} is connected to both others`);
  });
  // Roles are consistent: for each pair, exactly one side is polite.
  const roles = await Promise.all(pages.map((p) => p.evaluate(() => Object.fromEntries([...window.call.peers].map(([id, x]) => [id, x.polite])))));
  for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) {
    if (i !== j) assert.notEqual(roles[i][ids[j]], roles[j][ids[i]], `pair ${i}-${j}`);
  }
});
