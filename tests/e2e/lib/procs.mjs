// Start and stop the real parts the end-to-end tests need (coturn, the signaling server),
// each on a free loopback port, each killed when the test process ends.
import { spawn } from 'node:child_process';
import { connect, createServer } from 'node:net';
import { createWriteStream, mkdirSync, existsSync } from 'node:fs';
import { basename, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { randomBytes, createHmac } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { binding } from './stun.mjs';

export const REPO = fileURLToPath(new URL('../../..', import.meta.url)).replace(/\/$/, '');
export const LOG_DIR = process.env.OTTER_E2E_LOGS || join(REPO, 'target', 'e2e-logs');
mkdirSync(LOG_DIR, { recursive: true });

const children = new Set();
function killAll() {
  for (const c of children) {
    try { process.kill(-c.pid, 'SIGKILL'); } catch { /* already gone */ }
  }
  children.clear();
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { killAll(); process.exit(130); });

/** A TCP port that was free on 127.0.0.1 a moment ago. */
export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** A free UDP range [lo, lo+n) starting at a port that is also free for TCP (good enough on loopback). */
export async function freeRange(n = 100) {
  // Pick randomly in the high range, away from the ephemeral range used by freePort (32768+).
  const lo = 20000 + Math.floor(Math.random() * 10000 / n) * n;
  return [lo, lo + n - 1];
}

// Each test file runs in its own process: its logs are named after it, so that no file
// overwrites another's and 99-log-privacy sees every server log of the run.
const FILE_TAG = basename(process.argv[1] ?? 'e2e').replace(/\.test\.mjs$|\.mjs$/, '');

/** Spawn a process in its own group, log to LOG_DIR/<test file>.<name>.log, remember it for cleanup. */
export function spawnLogged(name, cmd, args, opts = {}) {
  const log = createWriteStream(join(LOG_DIR, `${FILE_TAG}.${name}.log`));
  const child = spawn(cmd, args, { ...opts, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let output = '';
  const keep = (d) => { output = (output + d.toString()).slice(-20000); log.write(d); };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  child.on('exit', (code, sig) => { children.delete(child); log.write(`\n[exited code=${code} signal=${sig}]\n`); });
  child.output = () => output;
  child.stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    try { process.kill(-child.pid, 'SIGTERM'); } catch { return; }
    const t = setTimeout(() => { try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ } }, 3000);
    await new Promise((r) => child.once('exit', r));
    clearTimeout(t);
  };
  return child;
}

async function waitFor(what, fn, { timeoutMs = 15000, child } = {}) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    if (child && child.exitCode !== null) {
      throw new Error(`${what}: process exited with ${child.exitCode}:\n${child.output()}`);
    }
    try { if (await fn()) return; } catch (e) { last = e; }
    await sleep(100);
  }
  throw new Error(`${what}: not ready after ${timeoutMs} ms (${last?.message ?? 'no answer'})\n${child ? child.output() : ''}`);
}

/** TURN REST API credentials (what coturn's use-auth-secret checks). */
export function turnCredentials(secret, user = 'test', ttlSeconds = 3600) {
  const username = `${Math.floor(Date.now() / 1000) + ttlSeconds}:${user}`;
  const credential = createHmac('sha1', secret).update(username).digest('base64');
  return { username, credential };
}

/** A TCP connection to host:port succeeds (for a coturn that does not listen on UDP). */
function tcpOpen(host, port) {
  return new Promise((resolve) => {
    const s = connect({ host, port }, () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  });
}

/**
 * Start coturn on a free loopback port with the TURN REST API secret. `udp: false` makes it
 * listen on TCP only (clients whose UDP is blocked).
 */
export async function startCoturn({ secret = randomBytes(16).toString('hex'), name = 'coturn', port: fixedPort, udp = true } = {}) {
  if (!existsSync('/usr/bin/turnserver')) throw new Error('turnserver not found: apt-get install -y coturn (or run tests/e2e/install)');
  const port = fixedPort ?? await freePort();
  const [minPort, maxPort] = await freeRange(200);
  const child = spawnLogged(name, '/usr/bin/turnserver', [
    '-n', // no config file
    '--listening-ip=127.0.0.1', `--listening-port=${port}`, '--relay-ip=127.0.0.1',
    `--min-port=${minPort}`, `--max-port=${maxPort}`,
    '--use-auth-secret', `--static-auth-secret=${secret}`, '--realm=otter.test',
    '--allow-loopback-peers', // tests only: every peer is on 127.0.0.1
    '--no-cli', '--fingerprint', '--no-tls', '--no-dtls', '--log-file=stdout', '--simple-log',
    '--no-software-attribute', '--pidfile=/dev/null', ...(udp ? [] : ['--no-udp']),
  ]);
  await waitFor('coturn', () => (udp ? binding('127.0.0.1', port) : tcpOpen('127.0.0.1', port)), { child });
  return { child, port, secret, host: '127.0.0.1', uri: `turn:127.0.0.1:${port}?transport=udp`, stop: () => child.stop() };
}

export const SERVER_BIN = process.env.OTTER_SIGNALING_BIN || join(REPO, 'target', 'debug', 'otter-signaling');

/** Start the signaling server on a free loopback port, handing out coturn's URIs. */
export async function startSignaling({ turn, turnSecret = turn?.secret, turnUris, extraArgs = [], env = {}, name = 'signaling', port: fixedPort } = {}) {
  if (!existsSync(SERVER_BIN)) throw new Error(`${SERVER_BIN} not found: run cargo build --workspace (tests/e2e/run does)`);
  const port = fixedPort ?? await freePort();
  const args = ['--listen', `127.0.0.1:${port}`, '--reconnect-grace', '15s'];
  if (turn) {
    args.push('--turn-secret', turnSecret, '--turn-uris', turnUris ?? `turn:127.0.0.1:${turn.port}?transport=udp`,
      '--stun-uris', `stun:127.0.0.1:${turn.port}`);
  }
  args.push(...extraArgs);
  const child = spawnLogged(name, SERVER_BIN, args, { env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info', ...env } });
  const url = `http://127.0.0.1:${port}`;
  await waitFor('signaling server', async () => (await fetch(`${url}/readyz`)).ok, { child });
  return { child, port, url, stop: () => child.stop() };
}
