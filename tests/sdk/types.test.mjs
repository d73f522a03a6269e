// The SDK's types cannot drift (see types.mjs), and its error codes are the server's.
//   tests/sdk/run   (installs the pinned typescript first)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { checkJs, checkDeclarations, WEB } from './types.mjs';
import { ErrorCode, PROTOCOL } from '../../signaling/web/otter.js';

const PROTOCOL_RS = join(WEB, '..', 'src', 'protocol.rs');

test('tsc --noEmit --allowJs --checkJs over otter.js is clean', () => {
  assert.equal(checkJs(), '', 'the type checker found problems in otter.js');
});

test('otter.d.ts declares exactly what otter.js exports, with the same types', () => {
  assert.equal(checkDeclarations(), '', 'otter.d.ts and otter.js disagree');
});

test('the declaration check catches drift both ways', () => {
  const same = (t) => t;
  // A declared parameter type the code does not accept.
  const wrongType = checkDeclarations({ js: same, dts: (t) => t.replace('export declare function isValidRoomId(room: unknown): boolean;', 'export declare function isValidRoomId(room: unknown): string;') });
  assert.match(wrongType, /isValidRoomId/);
  // An export the declarations do not know.
  const undeclared = checkDeclarations({ js: (t) => `${t}\nexport const surprise = 1;\n`, dts: same });
  assert.match(undeclared, /surprise/);
  // A code that only one side has.
  const code = checkDeclarations({ js: (t) => t.replace('  Internal: "internal",\n', '  Internal: "internal",\n  Extra: "extra",\n'), dts: same });
  assert.match(code, /Extra/);
});

/** The server's error codes: the variants of `pub enum ErrorCode` in protocol.rs, kebab-cased as serde does. */
function serverCodes() {
  const rust = readFileSync(PROTOCOL_RS, 'utf8');
  const body = rust.match(/pub enum ErrorCode\s*\{([^}]*)\}/);
  assert.ok(body, `no "pub enum ErrorCode { ... }" in ${PROTOCOL_RS}`);
  assert.match(rust, /#\[serde\(rename_all = "kebab-case"\)\]\s*pub enum ErrorCode/, 'ErrorCode is no longer kebab-case on the wire: update this test');
  const variants = body[1].split('\n').map((l) => l.replace(/\/\/.*$/, '').trim()).join(' ')
    .split(',').map((v) => v.trim().replace(/#\[[^\]]*\]\s*/g, '')).filter(Boolean);
  for (const v of variants) assert.match(v, /^[A-Z][A-Za-z0-9]*$/, `cannot read variant "${v}" of ErrorCode (data-carrying variants are not codes)`);
  return new Map(variants.map((v) => [v, v.replace(/[A-Z]/g, (c, i) => (i ? '-' : '') + c.toLowerCase())]));
}

test("the SDK's protocol error codes are the server's (signaling/src/protocol.rs)", () => {
  const server = serverCodes();
  assert.ok(server.size >= 10, `only ${server.size} codes read from protocol.rs`);
  const sdk = new Map(Object.entries(ErrorCode).filter(([, v]) => !v.startsWith('sdk-')));
  const missing = [...server].filter(([k, v]) => sdk.get(k) !== v).map(([k, v]) => `${k}: "${v}"`);
  const extra = [...sdk].filter(([k]) => !server.has(k)).map(([k, v]) => `${k}: "${v}"`);
  assert.deepEqual({ missingInSdk: missing, notOnServer: extra }, { missingInSdk: [], notOnServer: [] },
    'add the missing codes to ErrorCode in signaling/web/otter.js and otter.d.ts (and a message for each on the demo page); remove those the server dropped');
});

test('ErrorCode is frozen, its values unique, the SDK codes prefixed sdk-', () => {
  assert.ok(Object.isFrozen(ErrorCode));
  assert.throws(() => { 'use strict'; ErrorCode.RoomFull = 'x'; }, TypeError);
  const values = Object.values(ErrorCode);
  assert.equal(new Set(values).size, values.length);
  for (const [k, v] of Object.entries(ErrorCode)) assert.equal(k.startsWith('Sdk'), v.startsWith('sdk-'), k);
});

test("the package's version is in step with the protocol version", () => {
  const pkg = JSON.parse(readFileSync(join(WEB, 'package.json'), 'utf8'));
  const rustVersion = readFileSync(PROTOCOL_RS, 'utf8').match(/pub const VERSION: u32 = (\d+);/);
  assert.ok(rustVersion, 'no VERSION in protocol.rs');
  const major = Number(pkg.version.split('.')[0]);
  assert.equal(major, Number(rustVersion[1]), `package.json version ${pkg.version}: its major is the protocol version`);
  assert.equal(PROTOCOL, `otter.v${major}`);
});

test('the demo page has a message for every error code', () => {
  const demo = readFileSync(join(WEB, 'demo.js'), 'utf8');
  const missing = Object.keys(ErrorCode).filter((k) => !demo.includes(`[ErrorCode.${k}]:`));
  assert.deepEqual(missing, [], 'add these to MESSAGES in signaling/web/demo.js');
});

test('the npm pins in tests/versions.env match the package.json files', () => {
  const env = readFileSync(join(WEB, '..', '..', 'tests', 'versions.env'), 'utf8');
  const pins = (name) => (env.match(new RegExp(`^${name}="([^"]*)"`, 'm'))?.[1] ?? '').split(' ').filter(Boolean);
  for (const [name, dir] of [['E2E_NPM_PINS', 'e2e'], ['SDK_NPM_PINS', 'sdk']]) {
    const pkg = JSON.parse(readFileSync(join(WEB, '..', '..', 'tests', dir, 'package.json'), 'utf8'));
    const want = Object.entries(pkg.devDependencies).map(([n, v]) => `${n}@${v}`).sort();
    assert.deepEqual(pins(name).sort(), want, `${name} in tests/versions.env vs tests/${dir}/package.json`);
  }
});
