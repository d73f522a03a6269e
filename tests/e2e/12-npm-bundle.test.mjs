// The npm package as an app uses it: `npm pack` of signaling/web, the tarball installed into a
// scratch app, the app bundled by esbuild (pinned in package.json), and a real call made in
// Chromium with nothing but the bundled code (the server's /otter.js is never loaded).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build } from 'esbuild';
import { useCallEnv, roomName } from './lib/harness.mjs';
import { joinCall, expectMediaEverywhere } from './lib/browser.mjs';
import { REPO } from './lib/procs.mjs';

const env = useCallEnv();
const app = {};

before(() => {
  app.dir = mkdtempSync(join(tmpdir(), 'otter-bundle-'));
  const out = execFileSync('npm', ['pack', '--json', '--pack-destination', app.dir, join(REPO, 'signaling/web')], { encoding: 'utf8' });
  const tarball = join(app.dir, JSON.parse(out)[0].filename);
  writeFileSync(join(app.dir, 'package.json'), JSON.stringify({ name: 'bundled-app', private: true, type: 'module' }));
  execFileSync('npm', ['install', '--offline', '--no-audit', '--no-fund', '--loglevel=error', tarball], { cwd: app.dir, stdio: 'pipe' });
  // The app's own module: it imports the package by name, as any app would.
  writeFileSync(join(app.dir, 'app.js'), 'export { join, ErrorCode } from "@otter/sdk";\n');
});
after(() => rmSync(app.dir, { recursive: true, force: true }));

test('the server serves the very files the package ships (/otter.js, /otter.d.ts)', async () => {
  for (const f of ['otter.js', 'otter.d.ts']) {
    const served = await (await fetch(`${env.server.url}/${f}`)).text();
    const shipped = readFileSync(join(app.dir, 'node_modules', '@otter', 'sdk', f), 'utf8');
    assert.equal(served, shipped, `/${f} differs from the npm package's ${f}`);
  }
});

test('an app bundled by esbuild from the packed npm package makes a call', async () => {
  const result = await build({
    entryPoints: [join(app.dir, 'app.js')], absWorkingDir: app.dir, bundle: true, format: 'esm',
    platform: 'browser', target: 'chrome120', minify: true, write: false, metafile: true, logLevel: 'silent',
  });
  const bundle = result.outputFiles[0].text;
  const inputs = Object.keys(result.metafile.inputs);
  assert.ok(inputs.some((i) => i.includes('node_modules/@otter/sdk/otter.js')), `the bundle must come from the installed package: ${inputs}`);
  assert.doesNotMatch(bundle, /\bimport\s*[{*"']|from\s*"@otter/, 'the bundle is self-contained');

  const room = roomName('bundle');
  const pages = [];
  for (const label of ['A', 'B']) {
    const page = await env.page(label, '/healthz');
    const requested = [];
    page.on('request', (r) => requested.push(new URL(r.url()).pathname));
    // The app's files, served on the signaling server's origin without touching the server.
    await page.route('**/app/bundle.js', (route) => route.fulfill({ status: 200, contentType: 'text/javascript', body: bundle }));
    await joinCall(page, { url: env.server.url, room, name: label }, '/app/bundle.js');
    page.requested = requested;
    pages.push(page);
  }
  await expectMediaEverywhere(pages);
  for (const p of pages) {
    assert.ok(!p.requested.includes('/otter.js'), `${p.label} loaded /otter.js: the call must run on the bundled code`);
    const codes = await p.evaluate(async () => (await import('/app/bundle.js')).ErrorCode.RoomFull);
    assert.equal(codes, 'room-full');
    await p.evaluate(() => window.call.leave());
  }
});
