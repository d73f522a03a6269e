// TURN reachability on real nodes: the operator (a pod, with the chart's RBAC) allocates a relay
// on every published TURN address. TurnReachable goes True for the operator's coturn pods; when
// one node's coturn stops answering (its TURN port dropped by iptables inside the node's network
// namespace, the pod still Ready) the condition goes False naming the node, with a Warning Event;
// Ready does not follow it (docs/operator.md, "TURN reachability"). Unblocked, it recovers with
// a Normal Event. Runs after 01-backend, on its own
// namespace and TURN ports.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { env, kubectl, getJson, waitFor, otterCondition, condition, netnsOf, dropInNetns } from './lib.mjs';

const NS = 'reach';
const NAME = 'reach';
// Apart from the other node tests' ports: their TURN pods may still be draining on the same nodes.
const PORT = 3486;
const nodeIps = env('OTTER_NODE_IPS').split(' ');
/** Functions that lift the drops in place. */
const blocked = [];

const otterYaml = () => `apiVersion: otter.dev/v1alpha1
kind: OtterDeployment
metadata: {name: ${NAME}, namespace: ${NS}}
spec:
  signaling:
    image: ${env('OTTER_SIGNALING_IMAGE')}
    replicas: 1
  turn:
    image: ${env('OTTER_TURN_IMAGE')}
    port: ${PORT}
    relayPortRange: {min: 42000, max: 42999}
  redis:
    mode: Disabled
`;

async function block(ip) {
  blocked.push(await dropInNetns(await netnsOf(ip), [['-p', 'udp', '--dport', String(PORT)]]));
}

async function unblockAll() {
  while (blocked.length > 0) await blocked.pop()();
}

async function reachability() {
  const o = await getJson(['get', 'otterdeployment', NAME, '-n', NS]);
  return { o, entries: o.status?.turnReachability ?? [], turn: condition(o, 'TurnReachable') };
}

/** Events about the OtterDeployment with REASON, as `kubectl get events` lists them. */
async function events(reason) {
  const list = await getJson(['get', 'events', '-n', NS, '--field-selector', `reason=${reason},involvedObject.name=${NAME}`]);
  return list.items;
}

before(async () => {
  for (const ip of nodeIps) assert.match(ip, /^\d+\.\d+\.\d+\.\d+$/);
  for (const n of (await getJson(['get', 'nodes'])).items) {
    await kubectl(['label', 'node', n.metadata.name, 'otter.dev/turn=true', '--overwrite']);
  }
  await kubectl(['create', 'namespace', NS]);
});

after(async () => {
  await unblockAll();
  await kubectl(['delete', 'namespace', NS, '--wait=false'], { allowFail: true });
});

test('TurnReachable goes True for the operator\'s coturn pods, per node', async () => {
  await kubectl(['apply', '-f', '-'], { input: otterYaml() });
  await waitFor('Ready', () => otterCondition(NS, NAME, 'Ready'), { timeoutMs: 300000 });
  const { o, entries } = await waitFor('TurnReachable=True', async () => {
    const r = await reachability();
    return r.turn?.status === 'True' ? r : `!TurnReachable=${r.turn?.status} ${r.turn?.message}`;
  }, { timeoutMs: 120000 });
  assert.equal(entries.length, nodeIps.length, JSON.stringify(entries));
  for (const ip of nodeIps) {
    const e = entries.find((x) => x.address === `${ip}:${PORT}`);
    assert.ok(e, `${ip}:${PORT} probed: ${JSON.stringify(entries)}`);
    assert.equal(e.reachable, true);
    assert.equal(e.message, 'allocated a relay');
  }
  assert.equal(condition(o, 'TurnReachable').reason, 'TurnAllocated');
});

test('one node not answering: TurnReachable=False naming it, a Warning Event, still Ready', { skip: nodeIps.length < 2 && 'one node' }, async () => {
  const ip = nodeIps[nodeIps.length - 1];
  await block(ip);
  const { o, turn, entries } = await waitFor('TurnReachable=False', async () => {
    const r = await reachability();
    return r.turn?.status === 'False' ? r : `!TurnReachable=${r.turn?.status}`;
  }, { timeoutMs: 150000 });
  const down = entries.filter((e) => !e.reachable);
  assert.deepEqual(down.map((e) => e.address), [`${ip}:${PORT}`], JSON.stringify(entries));
  assert.match(down[0].message, /no answer to a TURN Allocate over UDP/);
  assert.match(turn.message, new RegExp(`1 of ${nodeIps.length} TURN nodes do not allocate a relay: ${down[0].node} \\(${ip}:${PORT}\\)`));
  assert.equal(condition(o, 'Ready').status, 'True', 'the other node still relays');
  assert.equal(condition(o, 'Degraded').status, 'False');
  const warned = await waitFor('a TurnNodeUnreachable Event', async () => {
    const items = await events('TurnNodeUnreachable');
    return items.find((e) => e.message?.includes(down[0].node)) ?? '!none yet';
  }, { timeoutMs: 30000 });
  assert.equal(warned.type, 'Warning');
  assert.equal(warned.related?.name, down[0].node);
});

test('unblocked, the node allocates again: TurnReachable=True and a Normal Event', async () => {
  await unblockAll();
  await waitFor('TurnReachable=True again', () => otterCondition(NS, NAME, 'TurnReachable'), { timeoutMs: 150000 });
  const back = await waitFor('a TurnNodeReachable Event', async () => {
    const items = await events('TurnNodeReachable');
    return items.length > 0 ? items[0] : '!none yet';
  }, { timeoutMs: 30000 });
  assert.equal(back.type, 'Normal');
});
