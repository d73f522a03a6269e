// One OtterDeployment on real nodes: Ready from real pods, a relayed and a direct call through
// what the operator built, faults during a live call with the media gap measured, bad input
// on the live cluster, and deletion. The tests run in order and share the deployment.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, createHmac } from 'node:crypto';
import { launch, openPage, joinCall, expectMediaEverywhere, firstFrameMs, peerStats } from '../e2e/lib/browser.mjs';
import { roomToken } from '../../examples/room-tokens/mint.mjs';
import {
  env, kubectl, getJson, waitFor, otterCondition, rolledOut, condition,
  startGapSampler, resetGap, readGap, record, forwardLocal, podMetric,
} from './lib.mjs';

const NS = 'calls';
const NAME = 'otter';
const nodeIps = env('OTTER_NODE_IPS').split(' ');
const tokenSecret = randomBytes(24).toString('hex');
const state = {};

function otterYaml({ authSecret = 'room-tokens', realm = 'otter.test' } = {}) {
  return `apiVersion: otter.dev/v1alpha1
kind: OtterDeployment
metadata: {name: ${NAME}, namespace: ${NS}}
spec:
  signaling:
    image: ${env('OTTER_SIGNALING_IMAGE')}
    service: {type: NodePort}
    auth:
      enabled: true
      secretRef: {name: ${authSecret}, key: token-secret}
  turn:
    image: ${env('OTTER_TURN_IMAGE')}
    realm: ${realm}
    # The calls here outlive every TURN roll: a short drain keeps the faults quick (02 tests it).
    drainTimeout: 30s
  redis:
    managed:
      image: ${env('OTTER_REDIS_IMAGE')}
`;
}

const pods = async (component) => (await getJson(['get', 'pods', '-n', NS, '-l', `app.kubernetes.io/instance=${NAME},app.kubernetes.io/component=${component}`])).items;

/** Seconds from each pod's creation to its Ready condition. */
async function podStartToReady(component) {
  return (await pods(component)).map((p) => {
    const ready = condition(p, 'Ready');
    return (Date.parse(ready.lastTransitionTime) - Date.parse(p.metadata.creationTimestamp)) / 1000;
  });
}

async function backendWhole() {
  await waitFor('OtterDeployment Ready', () => otterCondition(NS, NAME, 'Ready'));
}

before(async () => {
  for (const ip of nodeIps) assert.match(ip, /^\d+\.\d+\.\d+\.\d+$/);
  const nodes = (await getJson(['get', 'nodes'])).items.map((n) => n.metadata.name);
  state.nodes = nodes;
  for (const n of nodes) await kubectl(['label', 'node', n, 'otter.dev/turn=true', '--overwrite']);
  await kubectl(['create', 'namespace', NS]);
  await kubectl(['create', 'secret', 'generic', 'room-tokens', '-n', NS, `--from-literal=token-secret=${tokenSecret}`]);
  state.browser = await launch();
});

after(async () => {
  await state.browser?.close().catch(() => {});
  state.forward?.close();
});

test('an OtterDeployment becomes Ready from real pods', async () => {
  state.applied = Date.now();
  await kubectl(['apply', '-f', '-'], { input: otterYaml() });
  const o = await waitFor('OtterDeployment Ready', () => otterCondition(NS, NAME, 'Ready'), { timeoutMs: 300000 });
  record('apply_to_ready_s', (Date.now() - state.applied) / 1000);
  for (const c of ['signaling', 'turn', 'redis']) record(`pod_start_to_ready_s.${c}`, await podStartToReady(c));
  // TURN on every labelled node, published with the node's address.
  assert.equal(o.status.turn.ready, state.nodes.length, JSON.stringify(o.status.turn));
  for (const ip of nodeIps) assert.ok(o.status.turnUris.some((u) => u.includes(ip)), `${ip} in ${o.status.turnUris}`);
  const svc = (await getJson(['get', 'services', '-n', NS, '-l', `app.kubernetes.io/instance=${NAME},app.kubernetes.io/component=signaling`])).items
    .find((s) => s.spec.type === 'NodePort');
  assert.ok(svc, 'a NodePort signaling Service');
  const nodePort = `http://${nodeIps[0]}:${svc.spec.ports[0].nodePort}`;
  await waitFor(`${nodePort}/readyz`, async () => (await fetch(`${nodePort}/readyz`)).ok || '!not ready');
  // The pages load from 127.0.0.1 (a secure context, so getUserMedia exists), forwarded to
  // the NodePort: every byte still goes through kube-proxy on a node to a signaling pod.
  state.forward = await forwardLocal(nodeIps[0], svc.spec.ports[0].nodePort);
  state.url = `http://127.0.0.1:${state.forward.port}`;
});

async function call(room, policy) {
  // The pages drive the SDK from a blank document of the server's origin (BLANK); the demo page
  // itself is checked once, served through the same NodePort.
  const a = await openPage(state.browser, state.url, `A-${room}`);
  const b = await openPage(state.browser, state.url, `B-${room}`);
  const opts = policy ? { iceTransportPolicy: policy } : {};
  await joinCall(a, { room, name: 'Alice', token: roomToken(tokenSecret, room, { ttlSeconds: 3600 }), ...opts });
  await joinCall(b, { room, name: 'Bob', token: roomToken(tokenSecret, room, { ttlSeconds: 3600 }), ...opts });
  const ms = await firstFrameMs(b, { timeoutMs: 30000 });
  assert.ok(ms !== null, `B decoded no frame\n${[...a.logs, ...b.logs].join('\n')}`);
  return { a, b, ms };
}

test('a relayed call goes through the coturn pods, on the published node addresses', async () => {
  const demo = await fetch(`${state.url}/`);
  assert.equal(demo.status, 200, 'the demo page through the NodePort');
  assert.match(await demo.text(), /demo\.js/, 'the demo page through the NodePort');
  const { a, b, ms } = await call('relay', 'relay');
  record('apply_to_first_relay_frame_s', (Date.now() - state.applied) / 1000);
  record('join_to_first_relay_frame_ms', Math.round(ms));
  const stats = await expectMediaEverywhere([a, b], { timeoutMs: 30000 });
  for (const [label, peers] of Object.entries(stats)) {
    for (const s of Object.values(peers)) {
      assert.equal(s.pair?.local, 'relay', `${label} ${JSON.stringify(s.pair)}`);
      assert.ok(nodeIps.some((ip) => s.pair.localAddress.startsWith(`${ip}:`)), `${label} relays through ${s.pair.localAddress}, not a node address ${nodeIps}`);
    }
  }
  const ice = await a.evaluate(() => window.call.peers.values().next().value.pc.getConfiguration().iceServers);
  const urls = ice.flatMap((s) => [].concat(s.urls));
  for (const ip of nodeIps) assert.ok(urls.some((u) => u.startsWith(`turn:${ip}:`)), `turn URI of ${ip} in ${urls}`);
  state.relay = { a, b };
  for (const p of [a, b]) await startGapSampler(p);
});

test('a direct call works too', async () => {
  const { a, b } = await call('direct');
  const stats = await expectMediaEverywhere([a, b], { timeoutMs: 30000 });
  for (const peers of Object.values(stats)) for (const s of Object.values(peers)) assert.notEqual(s.pair?.local, 'relay');
  for (const p of [a, b]) await p.context().close();
});

/** The ICE servers signaling hands a new join right now. */
async function iceServers() {
  const r = await fetch(`${state.url}/v1/ice-servers`, { headers: { authorization: `Bearer ${roomToken(tokenSecret, 'rotation', { ttlSeconds: 600 })}` } });
  assert.ok(r.ok, `GET /v1/ice-servers: ${r.status}`);
  return (await r.json()).iceServers;
}

/** The TURN keys the operator keeps (`<name>-turn-keys`), decoded. */
async function turnKeys() {
  const data = (await getJson(['get', 'secret', `${NAME}-turn-keys`, '-n', NS])).data ?? {};
  return Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v, 'base64').toString()]));
}

/** Is the TURN credential of SERVER minted from SECRET? */
const mintedFrom = (server, secret) => createHmac('sha1', secret).update(server.username).digest('base64') === server.credential;

/**
 * Allocate on every TURN-over-UDP URI of SERVERS from PAGE, as a browser does: gather relay
 * candidates. Resolves { relays: relayed addresses, errors: 'url code text' of the server's refusals }.
 */
function allocateFrom(page, servers) {
  const turn = servers.filter((s) => [].concat(s.urls).some((u) => u.startsWith('turn:')))
    .map((s) => ({ ...s, urls: [].concat(s.urls).filter((u) => u.endsWith('transport=udp')) }));
  return page.evaluate(async (iceServers) => {
    const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: 'relay' });
    const out = { relays: [], errors: [] };
    // Codes 300-699 are the server's STUN/TURN error answers (401: credential refused); 7xx are
    // local (a socket closed with the connection, a timeout) and say nothing about TURN.
    pc.onicecandidateerror = (e) => { if (e.errorCode < 700) out.errors.push(`${e.url} ${e.errorCode} ${e.errorText}`); };
    const done = new Promise((resolve) => {
      pc.onicecandidate = (e) => {
        if (!e.candidate) resolve();
        else if (e.candidate.type === 'relay') out.relays.push(e.candidate.address);
      };
    });
    pc.createDataChannel('probe');
    await pc.setLocalDescription(await pc.createOffer());
    await Promise.race([done, new Promise((r) => setTimeout(r, 20000))]);
    pc.close();
    return out;
  }, turn);
}

test('a TURN secret rotation restarts no pod and refuses no allocation made meanwhile', async () => {
  const { a, b } = state.relay;
  const podState = async (c) => (await pods(c)).map((p) => `${p.metadata.uid}:${(p.status.containerStatuses ?? []).map((x) => x.restartCount).join(',')}`).sort();
  const before = { signaling: await podState('signaling'), turn: await podState('turn') };
  const old = (await turnKeys())['turn-secret'];
  assert.ok(old, 'the keys Secret holds the value signaling mints with');
  const probe = await openPage(state.browser, state.url, 'rotation-probe');
  const t0 = Date.now();
  await kubectl(['annotate', 'otterdeployment', NAME, '-n', NS, `otter.dev/rotate-turn-secret=${t0}`, '--overwrite']);
  // Allocate on every node again and again while the rotation runs, with credentials signaling
  // mints: first from the old secret, at the end from the new one. None may be refused.
  // waitFor retries a check that throws: what must never happen is collected and asserted after.
  const seen = { old: 0, rounds: 0, refused: [] };
  await waitFor('signaling mints from the new TURN secret', async () => {
    const servers = await iceServers();
    const turn = servers.find((s) => s.username);
    if (!turn) { seen.refused.push(`no TURN server handed out: ${JSON.stringify(servers)}`); return '!no TURN'; }
    const got = await allocateFrom(probe, servers);
    seen.rounds += 1;
    const relays = new Set(got.relays).size;
    if (got.errors.length || relays !== nodeIps.length) seen.refused.push(`round ${seen.rounds}: relays on ${relays} node(s), errors ${JSON.stringify(got.errors)}`);
    if (mintedFrom(turn, old)) { seen.old += 1; return '!still minted from the old secret'; }
    const fresh = (await turnKeys())['turn-secret'];
    return (fresh !== old && mintedFrom(turn, fresh)) || `!minted from neither: keys ${fresh === old ? 'unchanged' : 'moved'}`;
  }, { timeoutMs: 300000, intervalMs: 500 });
  record('rotation.minting_new_s', (Date.now() - t0) / 1000);
  console.log(`rotation: ${seen.rounds} allocation rounds, ${seen.old} with old-secret credentials`);
  assert.deepEqual(seen.refused, [], 'no allocation refused during the rotation');
  assert.ok(seen.old >= 1, 'allocations were made while signaling still minted from the old secret');
  const keys = await turnKeys();
  assert.equal(keys.previous, old, 'the old value stays accepted as previous');
  assert.ok(Number(keys['previous-until']) * 1000 > Date.now(), `previous-until ${keys['previous-until']}`);
  assert.equal(keys.next, undefined, 'no rotation pending');
  // Fresh credentials allocate; the relayed call never stopped; nothing restarted.
  const after = await allocateFrom(probe, await iceServers());
  assert.deepEqual(after.errors, []);
  assert.equal(new Set(after.relays).size, nodeIps.length);
  await expectMediaEverywhere([a, b], { timeoutMs: 30000 });
  assert.deepEqual({ signaling: await podState('signaling'), turn: await podState('turn') }, before, 'no pod replaced or restarted');
  await backendWhole();
  await probe.context().close();
});

/** Run FAULT during the relayed call; wait for RECOVERED and media both ways; record the gap. */
async function survive(key, fault, recovered) {
  const { a, b } = state.relay;
  await Promise.all([resetGap(a), resetGap(b)]);
  const t0 = Date.now();
  await fault();
  await recovered();
  await expectMediaEverywhere([a, b], { timeoutMs: 60000 });
  const gap = Math.max(await readGap(a), await readGap(b));
  record(`media_gap_ms.${key}`, gap);
  record(`recovered_s.${key}`, (Date.now() - t0) / 1000);
}

/** Open WebSocket connections per signaling pod, from each pod's /metrics. */
async function signalingConnections() {
  const out = {};
  for (const p of await pods('signaling')) out[p.metadata.name] = await podMetric(NS, p.metadata.name, 9090, 'otter_signaling_connections');
  return out;
}

/** Resolves when the pod with uid UID is gone from the API (its containers have ended). */
const podGone = (component, uid) => waitFor(`${component} pod ${uid} gone`, async () => (await pods(component)).every((p) => p.metadata.uid !== uid) || '!still there');

test('the call survives deleting a signaling pod', async () => {
  const { a, b } = state.relay;
  // Delete the pod that holds (some of) the call's WebSockets, so the SDK has to resume.
  const conns = await waitFor('the two relay pages are the only connections', async () => {
    const c = await signalingConnections();
    return Object.values(c).reduce((x, y) => x + y, 0) === 2 ? c : `!${JSON.stringify(c)}`;
  });
  const victimName = Object.keys(conns).sort((x, y) => conns[y] - conns[x])[0];
  const victim = (await pods('signaling')).find((p) => p.metadata.name === victimName);
  const seen = await Promise.all([a, b].map((p) => p.evaluate(() => window.events.length)));
  await survive('signaling_pod_deleted',
    () => kubectl(['delete', 'pod', '-n', NS, victimName, '--wait=false']),
    async () => {
      await podGone('signaling', victim.metadata.uid);
      await waitFor('signaling rolled out', () => rolledOut(NS, 'deployment', `${NAME}-signaling`));
      await backendWhole();
      // Both pages are in the room with each other again.
      for (const p of [a, b]) {
        await waitFor(`${p.label} joined with one peer`, () => p.evaluate(() => window.call.state === 'joined' && window.call.peers.size === 1) || '!not whole');
      }
    });
  const states = await Promise.all([a, b].map((p, i) => p.evaluate((n) => window.events.slice(n).filter((e) => e.type === 'state').map((e) => e.state), seen[i])));
  assert.ok(states.some((s) => s.includes('reconnecting') && s.at(-1) === 'joined'), `no page resumed after ${victimName} (${conns[victimName]} connections) went: ${JSON.stringify(states)}`);
  const after = await signalingConnections();
  assert.equal(Object.values(after).reduce((x, y) => x + y, 0), 2, JSON.stringify(after));
});

test('the call survives deleting the Redis pod', async () => {
  const [victim] = await pods('redis');
  await survive('redis_pod_deleted',
    () => kubectl(['delete', 'pod', '-n', NS, victim.metadata.name, '--wait=false']),
    async () => {
      await waitFor('redis pod replaced', async () => ((await pods('redis')).some((p) => p.metadata.uid !== victim.metadata.uid && condition(p, 'Ready')?.status === 'True')) || '!old pod');
      await backendWhole();
    });
});

test('the call survives a TURN DaemonSet roll (ICE restart)', async () => {
  const before = (await pods('turn')).map((p) => p.metadata.uid);
  await survive('turn_daemonset_rolled',
    () => kubectl(['apply', '-f', '-'], { input: otterYaml({ realm: 'rolled.otter.test' }) }),
    async () => {
      await waitFor('every TURN pod replaced', async () => {
        const now = await pods('turn');
        return (now.length === before.length && now.every((p) => !before.includes(p.metadata.uid) && condition(p, 'Ready')?.status === 'True')) || `!${now.length} pods`;
      });
      await backendWhole();
    });
});

test('with two nodes, the call survives deleting the TURN pod it relays through', { skip: nodeIps.length < 2 && 'one node' }, async () => {
  const { a, b } = state.relay;
  const stats = await peerStats(a);
  const relayIp = Object.values(stats)[0].pair.localAddress.split(':')[0];
  const node = (await getJson(['get', 'nodes'])).items.find((n) => n.status.addresses.some((x) => x.address === relayIp));
  assert.ok(node, `a node with the relay address ${relayIp}`);
  const victim = (await pods('turn')).find((p) => p.spec.nodeName === node.metadata.name);
  await survive('turn_pod_deleted',
    () => kubectl(['delete', 'pod', '-n', NS, victim.metadata.name, '--wait=false']),
    async () => {
      // Gone from the API means its coturn has ended: the call's relay allocation with it.
      await podGone('turn', victim.metadata.uid);
      await waitFor('TURN DaemonSet whole', () => rolledOut(NS, 'daemonset', `${NAME}-turn`));
    });
  // Still relayed, through a node address; which node ICE picked is recorded, not asserted: the
  // DaemonSet's new pod on the same node is often Ready before the ICE restart gathers.
  const now = await expectMediaEverywhere([a, b], { timeoutMs: 60000 });
  for (const [label, peers] of Object.entries(now)) {
    for (const s of Object.values(peers)) {
      assert.equal(s.pair?.local, 'relay', `${label} ${JSON.stringify(s.pair)}`);
      assert.ok(nodeIps.some((ip) => s.pair.localAddress.startsWith(`${ip}:`)), `${label} relays through ${s.pair.localAddress}`);
    }
  }
  record('turn_pod_deleted.relay_before_after', [relayIp, Object.values(now[a.label])[0].pair.localAddress.split(':')[0]]);
});

test('an invalid OtterDeployment is refused with its CEL message', async () => {
  const bad = otterYaml().replace('realm: otter.test', 'realm: otter.test\n    relayPortRange: {min: 60000, max: 50000}').replace(`name: ${NAME},`, 'name: bad,');
  const r = await kubectl(['apply', '-f', '-'], { input: bad, allowFail: true });
  assert.ok(r.failed, 'the API server accepted an invalid relayPortRange');
  assert.match(r.stderr, /turn\.relayPortRange\.min must be lower than turn\.relayPortRange\.max/);
});

test('a missing Secret makes it Degraded naming the Secret; creating it recovers', async () => {
  await kubectl(['apply', '-f', '-'], { input: otterYaml({ authSecret: 'late-tokens', realm: 'rolled.otter.test' }) });
  const o = await waitFor('Degraded', () => otterCondition(NS, NAME, 'Degraded'));
  const c = condition(o, 'Degraded');
  assert.match(`${c.reason} ${c.message}`, /late-tokens/, JSON.stringify(c));
  await kubectl(['create', 'secret', 'generic', 'late-tokens', '-n', NS, `--from-literal=token-secret=${tokenSecret}`]);
  await waitFor('Ready again', () => otterCondition(NS, NAME, 'Ready'));
});

test('deleting the OtterDeployment removes every child and keeps user Secrets', async () => {
  for (const p of [state.relay.a, state.relay.b]) await p.context().close();
  await kubectl(['delete', 'otterdeployment', NAME, '-n', NS, '--wait=true', '--timeout=120s']);
  const kinds = 'deployments,statefulsets,daemonsets,services,configmaps,secrets,networkpolicies,poddisruptionbudgets,pods';
  await waitFor('children gone', async () => {
    const left = (await getJson(['get', kinds, '-n', NS, '-l', `app.kubernetes.io/instance=${NAME}`])).items;
    return left.length === 0 || `!${left.map((o) => `${o.kind}/${o.metadata.name}`).join(' ')}`;
  });
  for (const s of ['room-tokens', 'late-tokens']) await kubectl(['get', 'secret', s, '-n', NS]);
});
