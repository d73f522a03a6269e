// Privacy of the server's logs: after every other e2e file has run (this one sorts last), the
// signaling server logs of the run (info level, LOG_DIR/<file>.signaling*.log) must hold no SDP, no ICE
// candidate, no peer IP address, no token and no secret. tests/e2e/run empties LOG_DIR before a
// full run, so these are this run's logs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LOG_DIR } from './lib/procs.mjs';
import { scanLog } from './lib/logscan.mjs';

test('the scanner finds each kind of leak (so a clean result means something)', () => {
  const leaks = [
    'INFO offer sdp="v=0\\r\\no=- 46117 2 IN IP4 127.0.0.1"',
    'DEBUG relayed a=candidate:1 1 udp 2122260223 10.1.2.3 54321 typ host',
    'INFO join token=eyJhbGciOiJIUzI1NiJ9.eyJyb29tIjoiYSJ9.c2lnbmF0dXJl',
    'INFO resume=0123456789abcdef0123456789abcdef',
    'INFO turn password=ZmFrZWZha2VmYWtlZmFrZWZha2U=',
    'INFO turn user=1767225600:p-1234',
    'INFO peer joined room=a peer=p-1 remote=192.0.2.7:50123',
    'INFO peer joined from 2001:db8:0:0:0:0:0:1',
  ];
  const kinds = leaks.map((l) => scanLog(l).map((f) => f.what));
  kinds.forEach((k, i) => assert.ok(k.length > 0, `not caught: ${leaks[i]}`));
  // What the server does log, and may.
  const fine = [
    'listening on http://127.0.0.1:8080',
    '2026-12-01T12:00:00.123456Z  INFO otter_signaling::server: otter-signaling listening addr=127.0.0.1:8080 public_url=',
    '2026-12-01T12:00:00Z  INFO loaded ICE config uris=IceUris { stun_uris: ["stun:127.0.0.1:3478"], turn_uris: ["turn:127.0.0.1:3478?transport=udp"] }',
    '2026-12-01T12:00:01Z  INFO conn{room=consult-42 peer=p-0123456789abcdef}: peer joined peers=2',
    '2026-12-01T12:00:02Z  INFO peer left room=consult-42 peer=p-0123456789abcdef reason=Left',
  ];
  for (const l of fine) assert.deepEqual(scanLog(l), [], l);
});

test('the signaling server logs of this e2e run hold no SDP, candidates, peer IPs, tokens or secrets', () => {
  const files = readdirSync(LOG_DIR).filter((f) => /(?:^|\.)signaling[^.]*\.log$/.test(f)).sort();
  const testFiles = new Set(files.map((f) => f.split('.')[0]));
  assert.ok(testFiles.size >= 10, `signaling logs of only ${testFiles.size} test files in ${LOG_DIR}: run the whole suite (tests/e2e/run) first`);
  let lines = 0;
  let joins = 0;
  const findings = [];
  for (const f of files) {
    const text = readFileSync(join(LOG_DIR, f), 'utf8');
    lines += text.split('\n').length;
    joins += (text.match(/peer joined/g) ?? []).length;
    for (const x of scanLog(text)) findings.push(`${f}:${x.line}: ${x.what}: ${x.match}\n    ${x.text}`);
  }
  console.log(`scanned ${files.length} signaling logs of ${testFiles.size} test files, ${lines} lines, ${joins} joins`);
  assert.ok(joins > 10, `the logs must be of real calls at info level (saw ${joins} "peer joined")`);
  assert.equal(findings.length, 0, `the server logged what it must not (report to the signaling owner):\n${findings.slice(0, 40).join('\n')}`);
});
