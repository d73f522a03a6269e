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
    env.page = async (label, path) => {
      const p = await openPage(env.browser, env.server.url, label, path);
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
