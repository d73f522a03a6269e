// Debian's Chromium, headless, fake camera and microphone, driven by playwright-core.
import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.OTTER_CHROMIUM || '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
  // Host candidates on 127.0.0.1 (not gathered by default), shown as IPs rather than mDNS names,
  // so calls work on a machine whose only interface is loopback.
  '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns',
  // Keep timers and media running in pages that are not in front.
  '--disable-background-timer-throttling', '--disable-renderer-backgrounding', '--disable-backgrounding-occluded-windows',
  '--autoplay-policy=no-user-gesture-required',
];

/** Launch Chromium (a fresh temporary profile each time: playwright's launch() makes one). */
export async function launch() {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: apt-get install -y chromium (or run tests/e2e/install)`);
  // OTTER_CHROMIUM_EXTRA_ARGS: space-separated extra flags, for debugging only.
  const extra = (process.env.OTTER_CHROMIUM_EXTRA_ARGS ?? '').split(' ').filter(Boolean);
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: [...CHROMIUM_ARGS, ...extra], timeout: 30000 });
}

/**
 * A same-origin document that runs nothing: the pages that drive the SDK need the server's origin
 * (so /otter.js imports same-origin, in a secure context), not the demo page, whose camera
 * preview and microphone meter cost about half a core per page for as long as it is open.
 */
export const BLANK = '/healthz';

/**
 * Open a page on the signaling server's origin (by default a blank one: pass '/' or a demo URL
 * for the demo page) in its own browser context, collecting console errors for diagnosis.
 */
export async function openPage(browser, baseUrl, label, path = BLANK) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.label = label;
  page.logs = [];
  page.on('console', (m) => page.logs.push(`[${label}] ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => page.logs.push(`[${label}] pageerror: ${e.message}`));
  await page.goto(`${baseUrl}${path}`);
  return page;
}

/**
 * Join a room from a page through the SDK. Leaves `window.call` and `window.events` (every SDK
 * event, in order) in the page; returns the peer id and the join() timestamp. `sdk`: the module
 * whose `join` is used (the served /otter.js, or an app's bundle of the npm package).
 */
export async function joinCall(page, options, sdk = '/otter.js') {
  return page.evaluate(async ([opts, sdkUrl]) => {
    const { join } = await import(sdkUrl);
    window.events = [];
    window.t0 = performance.now();
    const on = {};
    for (const type of ['state', 'peerjoined', 'peerleft', 'track', 'peerstate', 'message', 'file', 'error']) {
      on[type] = (e) => {
        const d = e.detail;
        window.events.push({ type, t: performance.now(), peer: d.peer?.id, state: d.state, reason: d.reason, text: d.text, code: d.code, error: d.error?.message });
      };
    }
    window.files = [];
    on.file = (e) => { window.files.push(e.detail); window.events.push({ type: 'file', peer: e.detail.peer.id, name: e.detail.name }); };
    window.call = await join({ ...opts, on });
    return { peerId: window.call.peerId, t0: window.t0 };
  }, [options, sdk]);
}

/** In the page: video/audio inbound stats and the selected candidate pair, per remote peer. */
export async function peerStats(page) {
  return page.evaluate(async () => {
    const out = {};
    const call = window.otter?.call ?? window.call;
    if (!call) return {};
    for (const [id, peer] of call.peers) {
      const stats = await peer.pc.getStats();
      const r = { state: peer.pc.connectionState, video: [], audio: [], pair: null };
      // Media of negotiated receivers only (Chrome may decode RTP of a not yet negotiated m-line).
      const recvMids = new Set(peer.pc.getTransceivers().filter((t) => /recv/.test(t.currentDirection ?? '')).map((t) => t.mid));
      let pairId = null;
      stats.forEach((s) => {
        if (s.type === 'inbound-rtp') {
          (s.kind === 'video' ? r.video : r.audio).push(s.kind === 'video'
            ? { mid: s.mid, framesDecoded: s.framesDecoded ?? 0, trackIdentifier: s.trackIdentifier, negotiated: recvMids.has(s.mid) }
            : { mid: s.mid, packetsReceived: s.packetsReceived ?? 0 });
        }
        if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
      });
      if (!pairId) stats.forEach((s) => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pairId = s.id; });
      const pair = pairId && stats.get(pairId);
      if (pair) {
        const l = stats.get(pair.localCandidateId);
        const rc = stats.get(pair.remoteCandidateId);
        r.pair = { local: l?.candidateType, remote: rc?.candidateType, localAddress: `${l?.address}:${l?.port}`, remoteAddress: `${rc?.address}:${rc?.port}`, protocol: l?.protocol };
      }
      out[id] = r;
    }
    return out;
  });
}

const totalFrames = (s) => s.video.reduce((n, v) => n + v.framesDecoded, 0);

/**
 * Wait until, on every page, every other page's video is being decoded and keeps being decoded
 * (framesDecoded > 0 and increasing between two samples). Returns the last stats per page.
 */
export async function expectMediaEverywhere(pages, { timeoutMs = 20000, expectPeers = pages.length - 1 } = {}) {
  const end = Date.now() + timeoutMs;
  let last = {};
  let why = '';
  while (Date.now() < end) {
    const first = await Promise.all(pages.map(peerStats));
    await new Promise((r) => setTimeout(r, 700));
    const second = await Promise.all(pages.map(peerStats));
    why = '';
    pages.forEach((p, i) => {
      const ids = Object.keys(second[i]);
      if (ids.length !== expectPeers) why += `${p.label} has ${ids.length} peers, wants ${expectPeers}; `;
      for (const id of ids) {
        const a = first[i][id] ? totalFrames(first[i][id]) : 0;
        const b = totalFrames(second[i][id]);
        if (!(b > 0 && b > a)) why += `${p.label}<-${id}: framesDecoded ${a} -> ${b} (${second[i][id].state}); `;
      }
    });
    last = Object.fromEntries(pages.map((p, i) => [p.label, second[i]]));
    if (!why) return last;
  }
  const logs = pages.flatMap((p) => p.logs).slice(-40).join('\n');
  throw new Error(`no media everywhere after ${timeoutMs} ms: ${why}\nstats: ${JSON.stringify(last)}\n${logs}`);
}

/** In the page: ms from join() to the first decoded frame from any peer (polling getStats). */
export async function firstFrameMs(page, { timeoutMs = 20000 } = {}) {
  return page.evaluate(async (timeout) => {
    const end = performance.now() + timeout;
    while (performance.now() < end) {
      for (const peer of (window.otter?.call ?? window.call)?.peers.values() ?? []) {
        const stats = await peer.pc.getStats();
        let frames = 0;
        stats.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded ?? 0; });
        if (frames > 0) return performance.now() - window.t0;
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    return null;
  }, timeoutMs);
}
