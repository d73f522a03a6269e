// Benchmark: time from join() to the first decoded remote video frame, direct and relay.
//   tests/e2e/run --bench [runs]        (default 10 runs of each)
// Each run: a fresh room; page A joins and waits alone; page B calls join() and the clock
// starts; it stops when B's getStats() (polled every 10 ms) first shows framesDecoded > 0 for
// A's video. Everything on loopback: coturn, the signaling server, headless Chromium with the
// fake camera, so this measures the SDK's and WebRTC's own setup (signaling round trips, ICE,
// DTLS, first keyframe), not a network.
import { startCoturn, startSignaling } from './lib/procs.mjs';
import { launch, openPage, joinCall, firstFrameMs } from './lib/browser.mjs';

const runs = Number(process.argv[2] ?? 10);
const turn = await startCoturn();
const server = await startSignaling({ turn });
const browser = await launch();
const results = {};
try {
  for (const policy of ['all', 'relay']) {
    const times = [];
    for (let i = 0; i < runs; i++) {
      const room = `bench-${policy}-${process.pid}-${i}`;
      const a = await openPage(browser, server.url, 'A');
      const b = await openPage(browser, server.url, 'B');
      await joinCall(a, { room, iceTransportPolicy: policy });
      await joinCall(b, { room, iceTransportPolicy: policy });
      const ms = await firstFrameMs(b);
      if (ms === null) throw new Error(`${policy} run ${i}: no frame in 20 s`);
      times.push(ms);
      await a.context().close();
      await b.context().close();
    }
    times.sort((x, y) => x - y);
    const pick = (q) => times[Math.min(times.length - 1, Math.floor(q * times.length))];
    results[policy === 'all' ? 'direct' : 'relay'] = { runs, min: times[0], median: pick(0.5), p90: pick(0.9), max: times.at(-1) };
  }
} finally {
  await browser.close();
  await server.stop();
  await turn.stop();
}
const { execFileSync } = await import('node:child_process');
const chromium = execFileSync('/usr/bin/chromium', ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
console.log(`join() -> first decoded remote frame, ${runs} runs each; ${chromium}; ${process.platform} ${(await import('node:os')).cpus().length} CPUs`);
console.log('| path | runs | min | median | p90 | max |');
console.log('|---|---|---|---|---|---|');
for (const [k, r] of Object.entries(results)) {
  const f = (x) => `${Math.round(x)} ms`;
  console.log(`| ${k} | ${r.runs} | ${f(r.min)} | ${f(r.median)} | ${f(r.p90)} | ${f(r.max)} |`);
}
