// The npm package (root: signaling/web): `npm pack` makes a tarball an app installs, whose
// exports Node imports and whose types a TypeScript app compiles against.
//   tests/sdk/run   (installs the pinned typescript first)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WEB } from './types.mjs';

const here = fileURLToPath(new URL('.', import.meta.url));
const env = {};

/** Pack signaling/web into dir; returns the tarball's path and npm's file list. */
export function pack(dir) {
  const out = execFileSync('npm', ['pack', '--json', '--pack-destination', dir, WEB], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const [info] = JSON.parse(out);
  return { tarball: join(dir, info.filename), files: info.files.map((f) => f.path).sort(), name: info.name, version: info.version };
}

/** A scratch app in dir with the tarball installed (offline: the package has no dependencies). */
export function installInto(dir, tarball, pkg = { name: 'scratch-app', private: true, type: 'module' }) {
  writeFileSync(join(dir, 'package.json'), JSON.stringify(pkg));
  execFileSync('npm', ['install', '--offline', '--no-audit', '--no-fund', '--loglevel=error', tarball], { cwd: dir, stdio: 'pipe' });
}

before(() => {
  env.dir = mkdtempSync(join(tmpdir(), 'otter-pkg-'));
  env.packed = pack(env.dir);
  installInto(env.dir, env.packed.tarball);
});
after(() => rmSync(env.dir, { recursive: true, force: true }));

test('npm pack ships exactly the module, its types, the README and package.json', () => {
  assert.deepEqual(env.packed.files, ['README.md', 'otter.d.ts', 'otter.js', 'package.json']);
  const pkg = JSON.parse(readFileSync(join(WEB, 'package.json'), 'utf8'));
  assert.equal(env.packed.name, pkg.name);
  assert.equal(pkg.type, 'module');
  assert.deepEqual(pkg.exports['.'], { types: './otter.d.ts', default: './otter.js' });
  assert.equal(pkg.types, './otter.d.ts');
  assert.equal(pkg.dependencies, undefined, 'zero runtime dependencies');
  assert.equal(pkg.peerDependencies, undefined, 'zero runtime dependencies');
});

/** Run an ES module snippet with Node in the scratch app (so the package resolves from there). */
function runInApp(code) {
  return execFileSync(process.execPath, ['--input-type=module', '-e', code], { cwd: env.dir, encoding: 'utf8', stdio: 'pipe' });
}

test('Node imports the installed package: named exports, default export, frozen codes', () => {
  const out = JSON.parse(runInApp(`
    import * as m from '@otter/sdk';
    import Otter from '@otter/sdk';
    import pkg from '@otter/sdk/package.json' with { type: 'json' };
    console.log(JSON.stringify({
      names: Object.keys(m).sort(),
      types: Object.fromEntries(Object.entries(m).map(([k, v]) => [k, typeof v])),
      defaultJoin: Otter.join === m.join, defaultCodes: Otter.ErrorCode === m.ErrorCode,
      frozen: Object.isFrozen(m.ErrorCode), roomFull: m.ErrorCode.RoomFull, protocol: m.PROTOCOL,
      version: pkg.version, room: m.isValidRoomId('consult-42'),
    }));`));
  assert.deepEqual(out.names, ['CHAT_CHANNEL_ID', 'CHUNK_HEADER_BYTES', 'CHUNK_SIZE', 'Call', 'ErrorCode', 'FILE_CHANNEL_ID',
    'FileAssembler', 'OtterError', 'PROTOCOL', 'backoffDelay', 'chunkRanges', 'decodeChunk', 'default', 'encodeChunk',
    'isPolite', 'isValidRoomId', 'join', 'parseChannelMessage', 'parseServerMessage', 'signalingUrl']);
  assert.equal(out.types.join, 'function');
  assert.equal(out.types.Call, 'function');
  assert.equal(out.types.ErrorCode, 'object');
  assert.ok(out.defaultJoin && out.defaultCodes && out.frozen && out.room);
  assert.equal(out.roomFull, 'room-full');
  assert.equal(out.protocol, `otter.v${out.version.split('.')[0]}`);
});

test('files outside `exports` are not importable', () => {
  assert.throws(() => runInApp("await import('@otter/sdk/otter.js');"), /ERR_PACKAGE_PATH_NOT_EXPORTED/);
});

test('a TypeScript app compiles against the installed package (types via exports)', () => {
  writeFileSync(join(env.dir, 'app.ts'), `
import { join, ErrorCode, type ErrorCodeValue, type Call } from "@otter/sdk";
export async function start(): Promise<Call> {
  const call = await join({ room: "consult-42", iceTransportPolicy: "relay", connectTimeoutMs: 8000 });
  call.addEventListener("error", (e) => { const c: ErrorCodeValue | string = e.detail.code; void c; void e.detail.peer?.id; });
  call.addEventListener("track", (e) => { const s: MediaStream = e.detail.stream; void s; });
  const n: number = call.send("hi");
  void n;
  if (ErrorCode.TooLarge !== "too-large") throw new Error("codes");
  return call;
}
`);
  // A wrong use must fail, or the check above proves nothing.
  writeFileSync(join(env.dir, 'bad.ts'), `import { join } from "@otter/sdk"; join({ room: 42 });\n`);
  const tsc = (file) => {
    try {
      execFileSync(process.execPath, [join(here, 'node_modules', 'typescript', 'bin', 'tsc'), '--noEmit', '--strict',
        '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--lib', 'es2022,dom', file],
      { cwd: env.dir, encoding: 'utf8', stdio: 'pipe' });
      return '';
    } catch (e) {
      return `${e.stdout}${e.stderr}`;
    }
  };
  assert.equal(tsc('app.ts'), '');
  assert.match(tsc('bad.ts'), /TS2322|not assignable/);
});
