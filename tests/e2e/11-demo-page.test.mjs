// The demo call page, walked through as a person would use it: pre-join preview with the
// microphone level and device choice, join, a second person, chat, a file, mute and camera
// indicators on the other side, screen share (Chromium's fake capture), the connection panel,
// the invite link, the phone layout, leave; its error messages; keyboard and screen-reader use.
// Screenshots of each step go to LOG_DIR/screenshots (look at them: they are the page's face).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { useCallEnv, roomName } from './lib/harness.mjs';
import { expectMediaEverywhere } from './lib/browser.mjs';
import { LOG_DIR } from './lib/procs.mjs';

const env = useCallEnv();
const SHOTS = join(LOG_DIR, 'screenshots');
mkdirSync(SHOTS, { recursive: true });
const shot = (page, name) => page.screenshot({ path: join(SHOTS, `${name}.png`) });
const joined = (page) => page.waitForFunction(() => window.otter?.call?.state === 'joined', null, { timeout: 20000 });
const logHas = (page, text, timeout = 15000) => page.waitForFunction((t) => document.querySelector('#log').textContent.includes(t), text, { timeout });

async function prejoin(page) {
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.waitForFunction(() => document.querySelector('#preview').readyState >= 2, null, { timeout: 15000 });
  // The fake microphone beeps: the level meter moves.
  await page.waitForFunction(() => document.querySelector('#level').value > 0.01, null, { timeout: 15000 });
  const devices = await page.evaluate(() => ({ cams: document.querySelector('#camera-select').options.length, mics: document.querySelector('#mic-select').options.length }));
  assert.ok(devices.cams >= 1 && devices.mics >= 1, JSON.stringify(devices));
}

test('demo page: preview, join, chat, file, mute, screen share, connection panel, invite, phone, leave', async () => {
  const room = roomName('demo');
  const a = await env.page('A', `/?room=${room}`);
  await prejoin(a);
  assert.deepEqual([await a.isVisible('#prejoin'), await a.isVisible('#stage')], [true, false], 'before joining: the pre-join screen only');
  assert.equal(await a.inputValue('#room'), room, 'the room comes from the link');
  assert.match(await a.textContent('#embed-code'), new RegExp(`import \\{ join \\} from "http://127\\.0\\.0\\.1:\\d+/otter\\.js"[\\s\\S]*room: "${room}"`));
  await a.fill('#name', 'Alice');
  await shot(a, '01-prejoin');
  await a.press('#name', 'Enter');
  await joined(a);
  assert.deepEqual([await a.isVisible('#prejoin'), await a.isVisible('#stage')], [false, true]);
  assert.equal(await a.evaluate(() => document.activeElement.id), 'mic', 'focus moves to the call controls');
  assert.match(await a.textContent('#status'), new RegExp(`In ${room} as Alice`));
  assert.match(await a.textContent('#conn'), /Waiting for someone/);

  const b = await env.page('B', `/?room=${room}&name=Bob&autojoin=1`);
  await b.setViewportSize({ width: 1280, height: 800 });
  await joined(b);
  await expectMediaEverywhere([a, b]);
  await a.waitForFunction(() => document.querySelector('figure[data-peer] video')?.readyState >= 2, null, { timeout: 10000 });
  assert.equal(await a.textContent('figure[data-peer] .who'), 'Bob');
  // Connection panel: direct on loopback, with a measured round trip.
  await a.waitForFunction(() => /Path\s*direct/.test(document.querySelector('#conn').textContent) && /\d+ ms/.test(document.querySelector('#conn').textContent), null, { timeout: 15000 });
  assert.equal(await a.textContent('figure[data-peer] .badge'), 'direct');

  // Chat and a file.
  await b.waitForFunction(() => [...window.otter.call.peers.values()].every((p) => p.chat.readyState === 'open'));
  await a.waitForFunction(() => [...window.otter.call.peers.values()].every((p) => p.chat.readyState === 'open'));
  await a.fill('#text', 'Hello Bob, can you see my screen in a minute?');
  await a.press('#text', 'Enter');
  await logHas(b, 'Alice: Hello Bob');
  await b.fill('#text', 'Yes, go ahead');
  await b.press('#text', 'Enter');
  await logHas(a, 'Bob: Yes, go ahead');
  // (The received File is read through the SDK's event, not by fetching the page's blob: link,
  // which a Content-Security-Policy's connect-src may forbid.)
  await b.evaluate(() => window.otter.call.addEventListener('file', (e) => e.detail.file.text().then((t) => { window.gotFile = t; })));
  await a.setInputFiles('#file', { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('consultation notes\n'.repeat(5000)) });
  await logHas(a, 'notes.txt delivered');
  await b.locator('#log a[download="notes.txt"]').waitFor({ timeout: 10000 });
  const text = await b.waitForFunction(() => window.gotFile, null, { timeout: 10000 }).then((h) => h.jsonValue());
  assert.equal(text, 'consultation notes\n'.repeat(5000));
  await shot(a, '02-call');

  // Mute and camera off: Bob sees both on Alice's tile (and a screen reader hears them).
  await a.click('#mic');
  await a.click('#cam');
  assert.deepEqual(await a.evaluate(() => [window.otter.call.isMuted('audio'), window.otter.call.isMuted('video')]), [true, true]);
  assert.equal(await a.getAttribute('#mic', 'aria-pressed'), 'true');
  await b.waitForFunction(() => {
    const f = document.querySelector('figure[data-peer]');
    return f && !f.querySelector('.mic-off').hidden && f.classList.contains('cam-off');
  }, null, { timeout: 10000 });
  assert.equal(await b.getAttribute('figure[data-peer]', 'aria-label'), 'Alice, microphone muted, camera off');
  await shot(b, '03-peer-muted');
  await a.click('#mic');
  await a.click('#cam');
  await b.waitForFunction(() => document.querySelector('figure[data-peer] .mic-off').hidden, null, { timeout: 10000 });

  // Screen share: Bob gets a second tile with Alice's screen, gone when she stops.
  await a.click('#share');
  await a.waitForFunction(() => document.querySelector('#share').getAttribute('aria-pressed') === 'true', null, { timeout: 10000 })
    .catch(async (e) => { throw new Error(`${e.message}\n${await a.textContent('#log')}\n${a.logs.join('\n')}`); });
  await b.waitForFunction(() => document.querySelector('figure[data-screen] video')?.readyState >= 2, null, { timeout: 20000 });
  assert.match(await b.textContent('figure[data-screen] .who'), /Alice's screen/);
  await shot(b, '04-screen-share');
  await a.click('#share');
  await b.waitForFunction(() => !document.querySelector('figure[data-screen]'), null, { timeout: 20000 });
  await expectMediaEverywhere([a, b]);

  // Invite link (the clipboard may be refused headless: the link is shown either way).
  await a.click('#copy');
  await logHas(a, `/?room=${room}`);

  // A phone: one column, nothing wider than the screen, the controls reachable.
  await b.setViewportSize({ width: 390, height: 844 });
  await b.waitForFunction(() => document.documentElement.scrollWidth <= 390, null, { timeout: 5000 })
    .catch(async () => { throw new Error(`page wider than the phone: ${await b.evaluate(() => document.documentElement.scrollWidth)} px`); });
  for (const id of ['#mic', '#cam', '#share', '#leave']) assert.ok(await b.isVisible(id), `${id} visible on a phone`);
  await shot(b, '05-phone');

  // Leave: Bob sees Alice go; Alice's camera and microphone are released.
  await a.click('#leave');
  await logHas(b, 'Alice left (left)', 10000);
  assert.deepEqual([await a.isVisible('#left'), await a.isVisible('#stage')], [true, false]);
  assert.equal(await a.evaluate(() => window.otter.call.localStream.getTracks().every((t) => t.readyState === 'ended')), true, 'camera and microphone released');
  assert.equal(await b.locator('figure[data-peer]').count(), 0);
  await shot(a, '06-left');
  await a.click('#rejoin');
  await a.waitForFunction(() => document.querySelector('#preview').readyState >= 2, null, { timeout: 15000 });
});

test('demo page: the relay-only switch sends media through TURN, and the panel says so', async () => {
  const room = roomName('relay');
  const a = await env.page('R1', `/?room=${room}&name=Rita`);
  await a.setViewportSize({ width: 1280, height: 800 });
  await prejoin(a);
  await a.check('#relay');
  await a.click('#join-button');
  await joined(a);
  const b = await env.page('R2', `/?room=${room}&name=Sam&relay=1&autojoin=1`);
  await joined(b);
  await expectMediaEverywhere([a, b]);
  for (const p of [a, b]) {
    assert.equal(await p.evaluate(() => [...window.otter.call.peers.values()][0].pc.getConfiguration().iceTransportPolicy), 'relay');
    await p.waitForFunction(() => /Path\s*relayed \(TURN over udp\)/.test(document.querySelector('#conn').textContent), null, { timeout: 15000 });
    assert.equal(await p.textContent('figure[data-peer] .badge'), 'relayed');
  }
  await shot(a, '08-relayed');
  for (const p of [a, b]) await p.click('#leave');
});

test('demo page: every failure is a message a person understands', async () => {
  const room = roomName('full');
  const p = await env.page('E', `/?room=${room}&name=Eve`);
  await p.setViewportSize({ width: 1280, height: 800 });
  // A bad room name, typed.
  await p.fill('#room', 'not a room!');
  await p.click('#join-button');
  const badName = await p.textContent('#notice');
  assert.match(badName, /1 to 64 letters, digits/);
  // A full room (6 seats, taken by receive-only SDK calls).
  await p.fill('#room', room);
  await p.evaluate(async (r) => {
    const { join } = await import('/otter.js');
    window.fillers = [];
    for (let i = 0; i < 6; i++) window.fillers.push(await join({ room: r, media: false }));
  }, room);
  await p.click('#join-button');
  // The bad-name notice may still show until the server answers: wait for the next one.
  await p.waitForFunction((before) => {
    const n = document.querySelector('#notice');
    return !n.hidden && n.textContent !== before;
  }, badName, { timeout: 15000 });
  assert.match(await p.textContent('#notice'), /This room is full/);
  assert.ok(await p.isVisible('#prejoin'), 'still on the pre-join screen, to try again');
  await shot(p, '07-room-full');
  await p.evaluate(() => { for (const c of window.fillers) c.leave(); });
});

test('demo page: a blocked camera is explained, and the call can still be joined to watch', async () => {
  const context = await env.browser.newContext({ viewport: { width: 1280, height: 800 } });
  // What a browser does when the person (or a policy) said no.
  await context.addInitScript(() => {
    navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));
  });
  const p = await context.newPage();
  try {
    const room = roomName('blocked');
    await p.goto(`${env.server.url}/?room=${room}&name=Nia`);
    await p.waitForFunction(() => !document.querySelector('#notice').hidden, null, { timeout: 15000 });
    assert.match(await p.textContent('#notice'), /Camera or microphone blocked/);
    assert.ok(await p.isVisible('#preview-off'), 'the preview says the camera is off');
    const code = await p.evaluate(async () => {
      const { join } = await import('/otter.js');
      try { await join({ room: 'blocked-sdk', media: { audio: true, video: true } }); return 'joined'; } catch (e) { return e.code; }
    });
    assert.equal(code, 'sdk-media-denied', 'join() rejects with the code');
    await shot(p, '09-camera-blocked');
    await p.click('#join-button');
    await joined(p);
    assert.match(await p.textContent('#notice'), /still join to watch and listen/);
    await p.click('#leave');
  } finally {
    await context.close();
  }
});

test('join() refuses a bad room id, and reports room-full', async () => {
  const p = await env.page('F');
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

test('demo page: keyboard order and accessible names', async () => {
  const room = roomName('a11y');
  const p = await env.page('K', `/?room=${room}`);
  await prejoin(p);
  // Every control has a name a screen reader says.
  for (const [role, name] of [['textbox', 'Room'], ['textbox', 'Your name'], ['combobox', 'Camera'], ['combobox', 'Microphone'],
    ['checkbox', 'Relay only'], ['button', 'Join'], ['meter', 'Microphone level']]) {
    assert.equal(await p.getByRole(role, { name, exact: true }).count(), 1, `${role} "${name}"`);
  }
  // Tab goes through the form in reading order.
  await p.focus('body');
  const order = [];
  for (let i = 0; i < 12; i++) {
    await p.keyboard.press('Tab');
    order.push(await p.evaluate(() => document.activeElement.id || document.activeElement.tagName.toLowerCase()));
  }
  const want = ['room', 'name', 'camera-select', 'mic-select'];
  const seen = order.filter((x) => want.includes(x) || x === 'relay' || x === 'join-button');
  assert.deepEqual(seen.slice(0, 6).filter((x) => want.includes(x)), want, `tab order: ${order}`);
  assert.ok(seen.indexOf('relay') < seen.indexOf('join-button'), `relay before join: ${order}`);
  // Join with the keyboard only; the toolbar's buttons have names and pressed states.
  await p.focus('#join-button');
  await p.keyboard.press('Enter');
  await joined(p);
  assert.equal(await p.getByRole('toolbar', { name: 'Call controls' }).count(), 1);
  for (const name of ['Mute', 'Stop camera', 'Share screen', 'Copy invite link', 'Leave']) {
    assert.equal(await p.getByRole('button', { name, exact: true }).count(), 1, `button "${name}"`);
  }
  await p.keyboard.press('Enter'); // focus is on Mute
  assert.equal(await p.getByRole('button', { name: 'Unmute', pressed: true }).count(), 1);
  await p.click('#leave');
});
