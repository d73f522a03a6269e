// Test 4: chat and a 5 MB file go peer to peer over data channels and arrive intact.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useCallEnv, roomName } from './lib/harness.mjs';
import { joinCall, expectMediaEverywhere } from './lib/browser.mjs';

const env = useCallEnv();

test('chat messages and a 5 MB file arrive intact (SHA-256 compared)', async () => {
  const room = roomName('files');
  const a = await env.page('A');
  const b = await env.page('B');
  await joinCall(a, { room, name: 'Alice' });
  await joinCall(b, { room, name: 'Bob' });
  await expectMediaEverywhere([a, b]);

  // Chat both ways, including non-ASCII text.
  await a.waitForFunction(() => [...window.call.peers.values()].every((p) => p.chat.readyState === 'open'));
  await b.waitForFunction(() => [...window.call.peers.values()].every((p) => p.chat.readyState === 'open'));
  assert.equal(await a.evaluate(() => window.call.send('hello from A ✓')), 1);
  assert.equal(await b.evaluate(() => window.call.send('hi A, B here')), 1);
  await b.waitForFunction(() => window.events.some((e) => e.type === 'message' && e.text === 'hello from A ✓'), null, { timeout: 10000 });
  await a.waitForFunction(() => window.events.some((e) => e.type === 'message' && e.text === 'hi A, B here'), null, { timeout: 10000 });

  // A 5 MB file of random bytes from A to B.
  const sent = await a.evaluate(async () => {
    const size = 5 * 1024 * 1024 + 4321;
    const bytes = new Uint8Array(size);
    for (let i = 0; i < size; i += 65536) crypto.getRandomValues(bytes.subarray(i, Math.min(size, i + 65536)));
    const hash = [...new Uint8Array(await crypto.subtle.digest('SHA-256', bytes))].map((x) => x.toString(16).padStart(2, '0')).join('');
    const file = new File([bytes], 'random.bin', { type: 'application/octet-stream' });
    const progress = [];
    const t = performance.now();
    const r = await window.call.sendFile(file, { onProgress: (p) => progress.push(p.bytes) });
    return { size, hash, ms: performance.now() - t, progress, peers: r.peers };
  });
  assert.equal(sent.peers.length, 1);
  assert.equal(sent.progress.at(-1), sent.size, 'send progress reaches the size');
  assert.ok(sent.progress.length >= 5, 'several progress reports');
  const got = await b.evaluate(async () => {
    const f = window.files[0];
    const bytes = new Uint8Array(await f.file.arrayBuffer());
    const hash = [...new Uint8Array(await crypto.subtle.digest('SHA-256', bytes))].map((x) => x.toString(16).padStart(2, '0')).join('');
    return { name: f.name, size: f.size, type: f.file.type, hash, n: window.files.length };
  });
  assert.deepEqual(got, { name: 'random.bin', size: sent.size, type: 'application/octet-stream', hash: sent.hash, n: 1 });
  console.log(`5 MB file: ${sent.ms.toFixed(0)} ms (${(sent.size / 1048576 / (sent.ms / 1000)).toFixed(1)} MiB/s)`);
});
