// A TCP proxy on loopback that the test can cut: every connection through it is destroyed
// at once (no WebSocket close frame reaches the server: a network blip), and new connections
// are refused until it is opened again. Or freeze: the current connections stay open but
// carry nothing any more (a half-open connection neither end notices), new ones work.
import net from 'node:net';

export async function startProxy(targetPort) {
  const sockets = new Set();
  const pairs = new Set();
  let open = true;
  const server = net.createServer((client) => {
    if (!open) { client.destroy(); return; }
    const upstream = net.connect(targetPort, '127.0.0.1');
    for (const s of [client, upstream]) { sockets.add(s); s.on('close', () => sockets.delete(s)); s.on('error', () => {}); }
    client.pipe(upstream);
    upstream.pipe(client);
    pairs.add([client, upstream]);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: server.address().port,
    url: `http://127.0.0.1:${server.address().port}`,
    get connections() { return sockets.size / 2; },
    cut() { open = false; for (const s of sockets) s.destroy(); },
    reopen() { open = true; },
    freeze() {
      for (const [c, u] of pairs) { c.unpipe(u); u.unpipe(c); c.pause(); u.pause(); }
      pairs.clear();
    },
    close() { open = false; for (const s of sockets) s.destroy(); return new Promise((r) => server.close(r)); },
  };
}
