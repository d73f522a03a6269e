// The demo call page's controls, driven like a user: join form, chat, file, mute and camera
// buttons, copy link, leave. And the SDK's errors at join: bad room id, full room.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useCallEnv, roomName } from './lib/harness.mjs';
import { expectMediaEverywhere } from './lib/browser.mjs';

const env = useCallEnv();

test('demo page: join form, chat, file, mute, camera, copy link, leave', async () => {
  const room = roomName('demo');
  const a = await env.page('A');
  assert.deepEqual([await a.isVisible('#join'), await a.isVisible('#stage')], [true, false], 'before joining: the form only');
  await a.fill('#room', room);
  await a.fill('#name', 'Alice');
  await a.click('#join button[type=submit]');
  await a.waitForFunction(() => window.otter?.call?.state === 'joined');
  assert.match(await a.textContent('#status'), new RegExp(`in ${room} as p-`));
  assert.deepEqual([await a.isVisible('#join'), await a.isVisible('#stage')], [false, true], 'in the call: videos and controls only');
  assert.equal(new URL(a.url()).searchParams.get('room'), room, 'the URL names the room, to share');

  const b = await env.page('B', `/?room=${room}&name=Bob&autojoin=1`);
  await b.waitForFunction(() => window.otter?.call?.state === 'joined');
  await expectMediaEverywhere([a, b]);
  await a.waitForFunction(() => document.querySelector('figure[data-peer] video')?.readyState >= 2, null, { timeout: 10000 });
  assert.equal(await a.textContent('figure[data-peer] figcaption'), 'Bob');

  // Chat.
  await b.waitForFunction(() => [...window.otter.call.peers.values()].every((p) => p.chat.readyState === 'open'));
  await a.waitForFunction(() => [...window.otter.call.peers.values()].every((p) => p.chat.readyState === 'open'));
  await a.fill('#text', 'hello Bob');
  await a.press('#text', 'Enter');
  await b.waitForFunction(() => document.querySelector('#log').textContent.includes('Alice: hello Bob'), null, { timeout: 10000 });

  // File through the file input.
  await a.setInputFiles('#file', { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('consultation notes\n'.repeat(5000)) });
  await a.waitForFunction(() => document.querySelector('#log').textContent.includes('notes.txt delivered'), null, { timeout: 15000 });
  const link = b.locator('#log a[download="notes.txt"]');
  await link.waitFor({ timeout: 10000 });
  const text = await b.evaluate(async () => (await fetch(document.querySelector('#log a[download="notes.txt"]').href)).text());
  assert.equal(text, 'consultation notes\n'.repeat(5000));

  // Mute and camera off, then back.
  await a.click('#mic');
  await a.click('#cam');
  assert.deepEqual(await a.evaluate(() => [window.otter.call.isMuted('audio'), window.otter.call.isMuted('video')]), [true, true]);
  assert.equal(await a.getAttribute('#mic', 'aria-pressed'), 'true');
  await a.click('#mic');
  await a.click('#cam');
  assert.deepEqual(await a.evaluate(() => [window.otter.call.isMuted('audio'), window.otter.call.isMuted('video')]), [false, false]);

  // Copy link (the clipboard may be refused headless: the link is shown either way).
  await a.click('#copy');
  await a.waitForFunction((r) => document.querySelector('#log').textContent.includes(`/?room=${r}`), room);

  // Leave: B sees A go, A is back at the form.
  await a.click('#leave');
  await b.waitForFunction(() => document.querySelector('#log').textContent.includes('Alice left (left)'), null, { timeout: 10000 });
  assert.deepEqual([await a.isVisible('#join'), await a.isVisible('#stage')], [true, false], 'after leaving: the form again');
  assert.equal(await b.locator('figure[data-peer]').count(), 0);
  assert.equal(await a.evaluate(() => window.otter.call.localStream.getTracks().every((t) => t.readyState === 'ended')), true, 'camera and microphone released');
});

test('join() refuses a bad room id, and reports room-full', async () => {
  const p = await env.page('E');
  const r = await p.evaluate(async () => {
    const { join } = await import('/otter.js');
    const out = {};
    try { await join({ room: 'not a room!', media: false }); } catch (e) { out.bad = e.code; }
    const room = `full-${Math.random().toString(36).slice(2)}`;
    const calls = [];
    for (let i = 0; i < 6; i++) calls.push(await join({ room, media: false }));
    try { await join({ room, media: false }); } catch (e) { out.full = e.code; out.message = e.message; }
    out.states = calls.map((c) => c.state);
    for (const c of calls) c.leave();
    out.after = calls.map((c) => c.state);
    return out;
  });
  assert.equal(r.bad, 'bad-room-id');
  assert.equal(r.full, 'room-full', JSON.stringify(r));
  assert.deepEqual(r.states, Array(6).fill('joined'));
  assert.deepEqual(r.after, Array(6).fill('closed'));
});
