// One call environment per test file: coturn, the signaling server, Chromium; all on loopback.
import { after, before } from 'node:test';
import { startCoturn, startSignaling } from './procs.mjs';
import { launch, openPage } from './browser.mjs';

export function useCallEnv(opts = {}) {
  const env = { pages: [] };
  before(async () => {
    env.turn = await startCoturn();
    env.server = await startSignaling({ turn: env.turn, ...opts.signaling });
    env.browser = await launch();
    // `path`: the document (default a blank one, see BLANK). `base`: the origin it loads from;
    // a page whose signaling goes through a test proxy loads through it too, as the demo page
    // must (its CSP allows connections to its own origin only).
    env.page = async (label, path, base = env.server.url) => {
      const p = await openPage(env.browser, base, label, path);
      env.pages.push(p);
      return p;
    };
  });
  after(async () => {
    await env.browser?.close().catch(() => {});
    await env.server?.stop();
    await env.turn?.stop();
  });
  return env;
}

let roomCounter = 0;
export const roomName = (prefix) => `${prefix}-${process.pid}-${++roomCounter}`;
