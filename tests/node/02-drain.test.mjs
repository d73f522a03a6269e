// TURN drain on real nodes (issue 17): the TURN exporter in a real TURN pod counts a relayed
// call; a TURN pod that is going away leaves the ICE servers at once (status and an Event say
// which node drains, the status how many allocations it still holds), keeps relaying the calls
// it carries, and exits as soon as they end (long before turn.drainTimeout); a new call
// meanwhile goes through the other node; a call whose TURN node is cut off (its TURN and relay
// ports dropped inside the node) moves to the other node by ICE restart. Its own
// OtterDeployment, on its own TURN port and relay range, so 01's TURN pods (still draining after
// its deletion) cannot collide with it. Needs two real nodes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { launch, openPage, joinCall, expectMediaEverywhere, firstFrameMs, peerStats } from '../e2e/lib/browser.mjs';
import { roomToken } from '../../examples/room-tokens/mint.mjs';
import { env, kubectl, getJson, waitFor, otterCondition, rolledOut, record, forwardLocal, podMetrics, netnsOf, dropInNetns, udpSocketsInNetns } from './lib.mjs';

const NS = 'drain';
const NAME = 'drain';
const PORT = 3482;
const RELAY = { min: 41000, max: 41999 };
const nodeIps = env('OTTER_NODE_IPS').split(' ');
const tokenSecret = randomBytes(24).toString('hex');
const state = { pages: [] };
const two = nodeIps.length < 2 && 'needs two nodes';

const otterYaml = `apiVersion: otter.dev/v1alpha1
kind: OtterDeployment
metadata: {name: ${NAME}, namespace: ${NS}}
spec:
  signaling:
    image: ${env('OTTER_SIGNALING_IMAGE')}
    replicas: 1
    service: {type: NodePort}
    auth:
      enabled: true
      secretRef: {name: room-tokens, key: token-secret}
  turn:
    image: ${env('OTTER_TURN_IMAGE')}
    realm: drain.otter.test
    port: ${PORT}
    relayPortRange: {min: ${RELAY.min}, max: ${RELAY.max}}
    # Longer than a TURN allocation's default lifetime (10 min), so a pod that exits before it
    # exited because its allocations ended.
    drainTimeout: 15m
    # The exporter in each TURN pod: scraped here during a call, and what the operator counts a
    # draining pod's allocations with.
    metrics: {enabled: true}
  redis:
    mode: Disabled
`;

const turnPods = async () => (await getJson(['get', 'pods', '-n', NS, '-l', `app.kubernetes.io/instance=${NAME},app.kubernetes.io/component=turn`])).items;
const otter = () => getJson(['get', 'otterdeployment', NAME, '-n', NS]);
const nodeOfIp = async (ip) => (await getJson(['get', 'nodes'])).items.find((n) => n.status.addresses.some((a) => a.address === ip));
const relayIps = async (page) => Object.values(await peerStats(page)).map((s) => s.pair?.local === 'relay' && s.pair.localAddress.split(':')[0]);

before(async () => {
  if (two) return;
  await kubectl(['create', 'namespace', NS]);
  await kubectl(['create', 'secret', 'generic', 'room-tokens', '-n', NS, `--from-literal=token-secret=${tokenSecret}`]);
  const nodes = (await getJson(['get', 'nodes'])).items.map((n) => n.metadata.name);
  for (const n of nodes) await kubectl(['label', 'node', n, 'otter.dev/turn=true', '--overwrite']);
  await kubectl(['apply', '-f', '-'], { input: otterYaml });
  const o = await waitFor('OtterDeployment Ready', () => otterCondition(NS, NAME, 'Ready'), { timeoutMs: 300000 });
  assert.equal(o.status.turn.ready, nodes.length, JSON.stringify(o.status.turn));
  const svc = (await getJson(['get', 'services', '-n', NS, '-l', `app.kubernetes.io/instance=${NAME},app.kubernetes.io/component=signaling`])).items
    .find((s) => s.spec.type === 'NodePort');
  state.forward = await forwardLocal(nodeIps[0], svc.spec.ports[0].nodePort);
  state.url = `http://127.0.0.1:${state.forward.port}`;
  await waitFor('signaling ready', async () => (await fetch(`${state.url}/readyz`)).ok || '!not ready');
  state.browser = await launch();
});

after(async () => {
  await state.browser?.close().catch(() => {});
  state.forward?.close();
  if (!two) await kubectl(['delete', 'otterdeployment', NAME, '-n', NS, '--wait=false'], { allowFail: true });
});

async function relayCall(room) {
  const token = () => roomToken(tokenSecret, room, { ttlSeconds: 3600 });
  const a = await openPage(state.browser, state.url, `A-${room}`);
  const b = await openPage(state.browser, state.url, `B-${room}`);
  state.pages.push(a, b);
  await joinCall(a, { room, name: 'Alice', token: token(), iceTransportPolicy: 'relay' });
  await joinCall(b, { room, name: 'Bob', token: token(), iceTransportPolicy: 'relay' });
  assert.ok((await firstFrameMs(b, { timeoutMs: 30000 })) !== null, `B decoded no frame\n${[...a.logs, ...b.logs].join('\n')}`);
  await expectMediaEverywhere([a, b], { timeoutMs: 30000 });
  return { a, b };
}

/** End a call the way a leaving browser does: close the peer connections (their TURN ports deallocate), then the pages. */
async function hangUp({ a, b }) {
  for (const p of [a, b]) {
    await p.evaluate(() => { for (const peer of (window.otter?.call ?? window.call).peers.values()) peer.pc.close(); });
    await p.context().close();
  }
}

/**
 * What a pod that should have exited is still doing: its running containers, the drain hook's
 * last words (they name the ports it still counts) and the UDP sockets in the relay range on its
 * node, with the processes that hold them.
 */
async function whyNotGone(pod) {
  const running = [...(pod.status.initContainerStatuses ?? []), ...(pod.status.containerStatuses ?? [])]
    .filter((c) => c.state?.running).map((c) => c.name);
  const log = await kubectl(['logs', '-n', NS, pod.metadata.name, '-c', 'coturn', '--tail=200'], { allowFail: true });
  const drain = (typeof log === 'string' ? log : log.stderr).split('\n').filter((l) => l.includes('otter:')).slice(-2);
  const sockets = await udpSocketsInNetns(await netnsOf(pod.status.hostIP), RELAY.min, RELAY.max).catch((e) => [`ss: ${e.message}`]);
  return `running ${running.join(',') || 'none'}; ${drain.join(' | ') || 'no drain line'}; sockets in the relay range: ${sockets.join(' | ') || 'none'}`;
}

/** The TURN URIs signaling hands a new join right now. */
async function iceUrls() {
  const r = await fetch(`${state.url}/v1/ice-servers`, { headers: { authorization: `Bearer ${roomToken(tokenSecret, 'probe', { ttlSeconds: 600 })}` } });
  assert.ok(r.ok, `GET /v1/ice-servers: ${r.status}`);
  return (await r.json()).iceServers.flatMap((s) => [].concat(s.urls)).filter((u) => u.startsWith('turn'));
}

/** The sum of the series of metric NAME (any labels) in a Prometheus text scrape. */
const metricSum = (text, name) => [...text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))].reduce((sum, m) => sum + Number(m[1]), 0);

test('the TURN exporter in a real TURN pod counts a relayed call\'s allocations and bytes', { skip: two }, async () => {
  const call = await relayCall('exporter');
  const [ip] = await relayIps(call.a);
  const node = await nodeOfIp(ip);
  const pod = (await turnPods()).find((p) => p.spec.nodeName === node.metadata.name);
  // A native sidecar: an init container that keeps running.
  const port = (pod.spec.initContainers ?? []).find((c) => c.name === 'turn-exporter').ports[0].containerPort;
  const scrape = () => podMetrics(NS, pod.metadata.name, port);
  const first = await waitFor('the exporter sees the call\'s allocations', async () => {
    const text = await scrape();
    return metricSum(text, 'otter_turn_allocations') >= 1 ? text : `!allocations ${metricSum(text, 'otter_turn_allocations')}`;
  }, { timeoutMs: 60000, intervalMs: 1000 });
  const bytes = metricSum(first, 'otter_turn_traffic_bytes_total');
  await waitFor('relayed bytes grow', async () => {
    const now = metricSum(await scrape(), 'otter_turn_traffic_bytes_total');
    return now > bytes || `!${now} <= ${bytes}`;
  }, { timeoutMs: 90000, intervalMs: 2000 });
  record('exporter.allocations_during_call', metricSum(first, 'otter_turn_allocations'));
  await hangUp(call);
});

// Up to 12 min: see the wait for the pod's exit. (tests/node/test gives each file 20 min.)
test('a deleted TURN pod drains: its node leaves the ICE servers, its call keeps flowing, a new call uses the other node, and it exits when its calls end', { skip: two, timeout: 720000 }, async () => {
  const first = await relayCall('drain-one');
  const [ip] = await relayIps(first.a);
  assert.ok(nodeIps.includes(ip), `relayed through ${ip}, not a node address ${nodeIps}`);
  const other = nodeIps.find((x) => x !== ip);
  const node = await nodeOfIp(ip);
  const victim = (await turnPods()).find((p) => p.spec.nodeName === node.metadata.name);
  const t0 = Date.now();
  await kubectl(['delete', 'pod', '-n', NS, victim.metadata.name, '--wait=false']);

  // The operator unpublishes the node as soon as the pod is terminating, and says so.
  const o = await waitFor('node draining in status, gone from turnUris', async () => {
    const cr = await otter();
    const draining = (cr.status.turnDraining ?? []).some((d) => d.node === node.metadata.name && d.pod === victim.metadata.name);
    const published = cr.status.turnUris.some((u) => u.includes(`:${ip}:`));
    return (draining && !published && cr) || `!draining=${draining} published=${published}`;
  });
  record('drain.unpublished_s', (Date.now() - t0) / 1000);
  assert.ok(o.status.turnUris.some((u) => u.includes(`:${other}:`)), `${other} still published: ${o.status.turnUris}`);
  await waitFor('a TurnDraining Event', async () => {
    const events = (await getJson(['get', 'events.events.k8s.io', '-n', NS, '--field-selector', 'reason=TurnDraining'])).items;
    return events.some((e) => (e.note ?? '').includes(node.metadata.name)) || `!${events.length} events`;
  });
  // The status says how many allocations the draining pod still holds (its exporter's count:
  // a native sidecar, still up while coturn drains).
  const counted = await waitFor('the draining node\'s allocations in status', async () => {
    const d = ((await otter()).status.turnDraining ?? []).find((x) => x.node === node.metadata.name);
    return (d?.allocations >= 1 && d) || `!${JSON.stringify(d)}`;
  }, { timeoutMs: 60000, intervalMs: 1000 });
  record('drain.allocations_in_status', counted.allocations);
  // Signaling re-reads its ConfigMap (mounted: the kubelet updates it within about a minute).
  await waitFor('signaling hands out the other node only', async () => {
    const urls = await iceUrls();
    return (urls.length > 0 && urls.every((u) => u.includes(`:${other}:`))) || `!${urls}`;
  });
  record('drain.ice_servers_updated_s', (Date.now() - t0) / 1000);

  // The draining pod still relays the first call.
  await expectMediaEverywhere([first.a, first.b], { timeoutMs: 30000 });
  assert.deepEqual([...new Set(await relayIps(first.a))], [ip], 'the first call stays on its draining node');
  assert.ok((await turnPods()).some((p) => p.metadata.uid === victim.metadata.uid), 'the draining pod is still there');

  // A call made now goes through the other node.
  const second = await relayCall('drain-two');
  for (const page of [second.a, second.b]) assert.deepEqual([...new Set(await relayIps(page))], [other], `${page.label} relays through the other node`);

  // Once its calls end, the pod exits, long before drainTimeout (15m): within seconds when the
  // browsers' deallocations arrive. A deallocation is one UDP datagram that Chrome sends once
  // as it closes; should it be lost, coturn holds that allocation until its lifetime (10 min
  // from the call's start) ends, and the drain rightly waits for it. So the wait allows that.
  const ended = Date.now();
  await hangUp(first);
  await hangUp(second);
  await waitFor('the drained pod exits', async () => {
    const pod = (await turnPods()).find((p) => p.metadata.uid === victim.metadata.uid);
    return !pod || `!still there: ${await whyNotGone(pod)}`;
  }, { timeoutMs: 630000, intervalMs: 1000 });
  record('drain.pod_exit_after_calls_end_s', (Date.now() - ended) / 1000);
  await waitFor('a TurnDrained Event', async () => {
    const events = (await getJson(['get', 'events.events.k8s.io', '-n', NS, '--field-selector', 'reason=TurnDrained'])).items;
    return events.some((e) => (e.note ?? '').includes(victim.metadata.name)) || `!${events.length} events`;
  });
  await waitFor('TURN DaemonSet whole again', () => rolledOut(NS, 'daemonset', `${NAME}-turn`));
  await waitFor('node published again', async () => (await otter()).status.turnUris.some((u) => u.includes(`:${ip}:`)) || '!not yet');
});

test('a call whose TURN node is cut off moves to the other node', { skip: two }, async () => {
  const call = await relayCall('node-gone');
  const [ip] = await relayIps(call.a);
  const other = nodeIps.find((x) => x !== ip);
  // The node is lost to the call as behind a failed link: inside its network namespace, all
  // that arrives for its TURN port and its relay ports is dropped (coturn, the pod and the
  // kubelet go on, so nothing else in the cluster changes). The SDK sees ICE fail and restarts
  // it; of the fresh candidates, only the other node's relay works. (SIGKILLing coturn instead
  // once left containerd 1.6's shim for the pod disconnected and the pod stuck terminating.)
  const lift = await dropInNetns(await netnsOf(ip), [
    ['-p', 'udp', '--dport', String(PORT)],
    ['-p', 'tcp', '--dport', String(PORT)],
    ['-p', 'udp', '--dport', `${RELAY.min}:${RELAY.max}`],
  ]);
  try {
    const t0 = Date.now();
    await waitFor('the call relays through the other node', async () => {
      const ips = [...new Set([...(await relayIps(call.a)), ...(await relayIps(call.b))])];
      return (ips.length === 1 && ips[0] === other) || `!${ips}`;
    }, { timeoutMs: 90000, intervalMs: 500 });
    await expectMediaEverywhere([call.a, call.b], { timeoutMs: 60000 });
    record('drain.node_gone_moved_s', (Date.now() - t0) / 1000);
  } finally {
    await lift();
  }
  await hangUp(call);
});
