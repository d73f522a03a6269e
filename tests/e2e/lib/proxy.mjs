// A TCP proxy on loopback that the test can cut: every connection through it is destroyed
// at once (no WebSocket close frame reaches the server: a network blip), and new connections
// are refused until it is opened again. Or freeze: the current connections stay open but
// carry nothing any more (a half-open connection neither end notices), new ones work.
// It always listens on 127.0.0.1: the node suite uses it to give a node's NodePort a loopback
// address, since a page on a node address is not a secure context (no navigator.mediaDevices).
import net from 'node:net';

export async function startProxy(targetPort, targetHost = '127.0.0.1') {
  const sockets = new Set();
  const pairs = new Set();
  let open = true;
  const server = net.createServer((client) => {
    if (!open) { client.destroy(); return; }
    const upstream = net.connect(targetPort, targetHost);
    // Either side gone ends both (the close handlers below): an upstream connect to a deleted
    // NodePort can otherwise sit in SYN-SENT for minutes and keep the test process alive.
    for (const s of [client, upstream]) { sockets.add(s); s.on('close', () => sockets.delete(s)); s.on('error', () => s.destroy()); }
    client.pipe(upstream);
    upstream.pipe(client);
    pairs.add([client, upstream]);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise((resolve, reject) => { server.once('error', reject); server.listen(0, '127.0.0.1', resolve); });
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
