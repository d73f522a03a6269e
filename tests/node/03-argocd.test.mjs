// Argo CD on real nodes (issue 19): the node suite's helm release is removed, then a real Argo CD
// syncs examples/argocd/ from a Git repository on loopback into this cluster, so the operator
// runs as the pods Argo CD made and the backend's OtterDeployment becomes real signaling, TURN
// and Redis pods. The scenarios are tests/argocd/test's own (--real-nodes): each of its checks
// is a subtest here. Runs last: it takes the operator away from the other files' tests.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { join } from 'node:path';
import { env, kubectl, getJson, waitFor } from './lib.mjs';

const repo = new URL('../..', import.meta.url).pathname;
const CRD = 'otterdeployments.otter.dev';

before(async () => {
  // The chart's CRD outlives `helm uninstall` (Helm never deletes crds/): delete it too, so that
  // Argo CD's first sync creates it, ordered before the operator. Left-over OtterDeployments
  // have no finalizers; their children are garbage-collected.
  await new Promise((resolve, reject) => {
    execFile(env('OTTER_HELM'), ['uninstall', 'otter', '--namespace', 'otter-system', '--wait', '--timeout', '3m', '--kubeconfig', env('KUBECONFIG')],
      (err, stdout, stderr) => (err ? reject(new Error(`helm uninstall: ${stderr || err.message}`)) : resolve(stdout)));
  });
  await kubectl(['delete', 'crd', CRD, '--ignore-not-found', '--wait=true', '--timeout=180s']);
  await waitFor('the operator pods gone', async () => {
    const pods = (await getJson(['get', 'pods', '-n', 'otter-system'])).items;
    return pods.length === 0 || `!${pods.map((p) => p.metadata.name).join(' ')}`;
  });
  for (const n of (await getJson(['get', 'nodes'])).items) {
    await kubectl(['label', 'node', n.metadata.name, 'otter.dev/turn=true', '--overwrite']);
  }
});

/** Runs tests/argocd/test --real-nodes, echoing its lines; resolves { code, lines }. */
function runArgoTest() {
  const logs = join(process.env.OTTER_E2E_LOGS || join(repo, 'target/node-logs'), 'argocd');
  const child = spawn(join(repo, 'tests/argocd/test'), ['--real-nodes', '--logs', logs], {
    cwd: repo, env: process.env, stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines = [];
  let partial = '';
  child.stdout.on('data', (d) => {
    const parts = (partial + d).split('\n');
    partial = parts.pop();
    for (const l of parts) { lines.push(l); console.log(`argocd: ${l}`); }
  });
  child.stderr.on('data', (d) => process.stderr.write(d));
  return new Promise((resolve) => child.on('close', (code) => {
    if (partial) lines.push(partial);
    resolve({ code, lines });
  }));
}

test('Argo CD syncs the chart and a backend onto real nodes: health, drift, upgrade, prune', async (t) => {
  const t0 = Date.now();
  const { code, lines } = await runArgoTest();
  console.log(`bench: argocd_real_nodes_s = ${(Date.now() - t0) / 1000}`);
  // One subtest per check of the script, with the detail it printed under a failure.
  const checks = [];
  for (const l of lines) {
    const m = l.match(/^(ok  |FAIL) (.*) \((\d+)s\)$/);
    if (m) checks.push({ ok: m[1] === 'ok  ', name: m[2], detail: [] });
    else if (l.startsWith('     ') && checks.length) checks.at(-1).detail.push(l.trim());
  }
  for (const c of checks) {
    await t.test(c.name, () => assert.ok(c.ok, c.detail.join('\n')));
  }
  const summary = lines.find((l) => /^\d+ passed, \d+ failed$/.test(l));
  assert.ok(summary, `tests/argocd/test printed no summary (exit ${code})`);
  const [passed, failed] = summary.match(/\d+/g).map(Number);
  assert.equal(failed, 0, summary);
  assert.equal(code, 0, `tests/argocd/test exited ${code}`);
  // Every scenario ran: a script that stopped early would pass fewer checks.
  assert.ok(passed >= 25, `only ${passed} checks passed`);
});
