// Helpers of the node suite: kubectl against the test cluster, waiting on conditions, and a
// media-gap sampler that runs inside the call pages.
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startProxy } from '../e2e/lib/proxy.mjs';

const run = promisify(execFile);

export function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run this through tests/node/test`);
  return v;
}

/** kubectl ARGS (stdin INPUT); resolves stdout, rejects with stderr in the message. */
export async function kubectl(args, { input, allowFail = false } = {}) {
  const child = run(env('OTTER_KUBECTL'), args, { env: process.env, maxBuffer: 64 << 20 });
  if (input !== undefined) { child.child.stdin.end(input); }
  try {
    const { stdout } = await child;
    return stdout;
  } catch (e) {
    if (allowFail) return { failed: true, stderr: e.stderr ?? String(e) };
    throw new Error(`kubectl ${args.join(' ')}: ${e.stderr ?? e.message}`);
  }
}

export async function getJson(args) {
  return JSON.parse(await kubectl([...args, '-o', 'json']));
}

/**
 * Poll CHECK (async, returns a truthy value when done, or a string saying what is missing
 * prefixed with '!') every INTERVAL ms until it is done; throws with the last reason after
 * TIMEOUT ms. Resolves CHECK's value.
 */
export async function waitFor(what, check, { timeoutMs = 180000, intervalMs = 250 } = {}) {
  const end = Date.now() + timeoutMs;
  let why = '';
  while (Date.now() < end) {
    try {
      const r = await check();
      if (r && !(typeof r === 'string' && r.startsWith('!'))) return r;
      why = typeof r === 'string' ? r.slice(1) : String(r);
    } catch (e) {
      why = e.message;
    }
    await sleep(intervalMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}: ${why}`);
}

export const condition = (obj, type) => (obj?.status?.conditions ?? []).find((c) => c.type === type);

/** The OtterDeployment's condition TYPE has STATUS for its current generation. */
export async function otterCondition(ns, name, type, status = 'True') {
  const o = await getJson(['get', 'otterdeployment', name, '-n', ns]);
  const c = condition(o, type);
  if (o.status?.observedGeneration !== o.metadata.generation) return `!observedGeneration ${o.status?.observedGeneration} != ${o.metadata.generation}`;
  if (c?.status !== status) return `!${type}=${c?.status} (${c?.reason}: ${c?.message})`;
  return o;
}

/** A workload (deployment/statefulset/daemonset) fully rolled out: every replica updated and ready. */
export async function rolledOut(ns, kind, name) {
  const o = await getJson(['get', kind, name, '-n', ns]);
  const s = o.status ?? {};
  if ((s.observedGeneration ?? 0) < o.metadata.generation) return `!${kind}/${name} generation not observed`;
  const want = kind === 'daemonset' ? s.desiredNumberScheduled : o.spec.replicas;
  const updated = kind === 'daemonset' ? s.updatedNumberScheduled : s.updatedReplicas;
  const ready = kind === 'daemonset' ? s.numberReady : s.readyReplicas;
  const avail = kind === 'daemonset' ? s.numberAvailable : s.availableReplicas;
  if (!(want > 0 && updated === want && ready === want && avail === want)) return `!${kind}/${name} want ${want} updated ${updated} ready ${ready} available ${avail}`;
  if (kind !== 'daemonset' && (s.replicas ?? 0) !== want) return `!${kind}/${name} has ${s.replicas} pods, wants ${want}`;
  return o;
}

/**
 * Install, in the page, a sampler of decoded video frames (all peers, every 50 ms) that keeps
 * the longest time without a new decoded frame since the last reset: the media gap.
 */
export async function startGapSampler(page) {
  await page.evaluate(() => {
    const g = { prev: 0, last: performance.now(), maxGap: 0 };
    window.gap = g;
    g.reset = () => { g.maxGap = 0; g.last = performance.now(); };
    setInterval(async () => {
      let total = 0;
      for (const peer of (window.call?.peers.values() ?? [])) {
        const stats = await peer.pc.getStats();
        stats.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') total += s.framesDecoded ?? 0; });
      }
      const now = performance.now();
      if (total > g.prev) g.last = now;
      g.prev = total; // a new RTCPeerConnection starts from 0: only an increase is progress
      g.maxGap = Math.max(g.maxGap, now - g.last);
    }, 50);
  });
}
export const resetGap = (page) => page.evaluate(() => window.gap.reset());
export const readGap = (page) => page.evaluate(() => Math.round(window.gap.maxGap));

/** Numbers for docs/benchmarks.md, collected in OTTER_E2E_LOGS/node-bench.json. */
const results = {};
export function record(key, value) {
  results[key] = value;
  console.log(`bench: ${key} = ${JSON.stringify(value)}`);
  const dir = process.env.OTTER_E2E_LOGS || '.';
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'node-bench.json'), JSON.stringify(results, null, 2));
}

/**
 * A TCP forwarder from 127.0.0.1:<free port> to HOST:PORT (like kubectl port-forward, to a
 * NodePort). Pages must be on 127.0.0.1: on a node address the page is not a secure context
 * and navigator.mediaDevices is undefined. Resolves the e2e proxy ({ port, url, close, ... }).
 */
export const forwardLocal = (host, port) => startProxy(port, host);

/**
 * The value of the Prometheus gauge or counter NAME (no labels) that pod POD serves on PORT at
 * /metrics, read through `kubectl port-forward` (the host cannot route to pod addresses).
 */
export async function podMetric(ns, pod, port, name) {
  const text = await podMetrics(ns, pod, port);
  const m = text.match(new RegExp(`^${name} (\\S+)$`, 'm'));
  if (!m) throw new Error(`${name} not in ${pod}'s /metrics`);
  return Number(m[1]);
}

/** The /metrics text pod POD serves on PORT, through `kubectl port-forward`. */
export async function podMetrics(ns, pod, port) {
  const child = spawn(env('OTTER_KUBECTL'), ['port-forward', '-n', ns, `pod/${pod}`, `:${port}`, '--address', '127.0.0.1'], { env: process.env });
  try {
    const local = await new Promise((resolve, reject) => {
      let out = '';
      let err = '';
      child.stdout.on('data', (d) => {
        out += d;
        const m = out.match(/Forwarding from 127\.0\.0\.1:(\d+)/);
        if (m) resolve(Number(m[1]));
      });
      child.stderr.on('data', (d) => { err += d; });
      child.once('exit', (code) => reject(new Error(`kubectl port-forward ${pod}: exited ${code}: ${err}`)));
    });
    return await (await fetch(`http://127.0.0.1:${local}/metrics`)).text();
  } finally {
    child.kill();
  }
}

/** The network namespace of the node whose address is IP (the harness makes one per node). */
export async function netnsOf(ip) {
  const { stdout } = await run('ip', ['netns', 'list']);
  for (const ns of stdout.split('\n').map((l) => l.split(' ')[0]).filter(Boolean)) {
    const { stdout: addrs } = await run('ip', ['-n', ns, '-o', '-4', 'addr', 'show']).catch(() => ({ stdout: '' }));
    if (addrs.includes(` ${ip}/`)) return ns;
  }
  throw new Error(`no network namespace holds ${ip}`);
}

/**
 * Drop, inside network namespace NS, whatever arrives that matches one of MATCHES (iptables
 * match arguments, e.g. ['-p', 'udp', '--dport', '3478']): the node is cut off on those ports,
 * as behind a failed link, while its processes and its kubelet go on. Resolves a function that
 * lifts the drop again.
 */
export async function dropInNetns(ns, matches) {
  const rule = (op, m) => ['netns', 'exec', ns, 'iptables', op, 'INPUT', ...m, '-j', 'DROP'];
  for (const m of matches) await run('ip', rule('-I', m));
  return async () => { for (const m of matches) await run('ip', rule('-D', m)); };
}

/** The UDP sockets in network namespace NS bound to a port in MIN..MAX, with their processes (ss lines). */
export async function udpSocketsInNetns(ns, min, max) {
  const { stdout } = await run('nsenter', [`--net=/run/netns/${ns}`, 'ss', '-uanpH']);
  return stdout.split('\n').filter((line) => {
    const port = Number(line.trim().split(/\s+/)[3]?.split(':').pop());
    return port >= min && port <= max;
  });
}
