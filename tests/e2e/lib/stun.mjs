// A tiny STUN/TURN client over UDP (RFC 5389 / RFC 5766), just enough to ask coturn for a
// relay allocation with long-term credentials and read whether it said yes.
import dgram from 'node:dgram';
import { createHash, createHmac, randomBytes } from 'node:crypto';

const MAGIC = 0x2112a442;
const T = { BINDING: 0x0001, ALLOCATE: 0x0003, REFRESH: 0x0004 };
const A = {
  USERNAME: 0x0006, MESSAGE_INTEGRITY: 0x0008, ERROR_CODE: 0x0009, LIFETIME: 0x000d,
  REALM: 0x0014, NONCE: 0x0015, XOR_RELAYED_ADDRESS: 0x0016, REQUESTED_TRANSPORT: 0x0019,
  XOR_MAPPED_ADDRESS: 0x0020,
};

function attr(type, value) {
  const pad = (4 - (value.length % 4)) % 4;
  const b = Buffer.alloc(4 + value.length + pad);
  b.writeUInt16BE(type, 0);
  b.writeUInt16BE(value.length, 2);
  value.copy(b, 4);
  return b;
}

/** Encode a STUN request; with `key`, append MESSAGE-INTEGRITY. */
export function encode(type, attrs, key) {
  const txid = randomBytes(12);
  let body = Buffer.concat(attrs.map(([t, v]) => attr(t, v)));
  const header = (len) => {
    const h = Buffer.alloc(20);
    h.writeUInt16BE(type, 0);
    h.writeUInt16BE(len, 2);
    h.writeUInt32BE(MAGIC, 4);
    txid.copy(h, 8);
    return h;
  };
  if (key) {
    const h = header(body.length + 24);
    const mac = createHmac('sha1', key).update(Buffer.concat([h, body])).digest();
    body = Buffer.concat([body, attr(A.MESSAGE_INTEGRITY, mac)]);
  }
  return { txid, buf: Buffer.concat([header(body.length), body]) };
}

/** Decode a STUN message into {type, txid, attrs: Map<type, Buffer>}. */
export function decode(buf) {
  if (buf.length < 20 || buf.readUInt32BE(4) !== MAGIC) throw new Error('not STUN');
  const type = buf.readUInt16BE(0);
  const len = buf.readUInt16BE(2);
  const attrs = new Map();
  for (let o = 20; o + 4 <= 20 + len;) {
    const t = buf.readUInt16BE(o);
    const l = buf.readUInt16BE(o + 2);
    attrs.set(t, buf.subarray(o + 4, o + 4 + l));
    o += 4 + l + ((4 - (l % 4)) % 4);
  }
  return { type, txid: buf.subarray(8, 20), attrs };
}

function errorCode(msg) {
  const v = msg.attrs.get(A.ERROR_CODE);
  if (!v) return null;
  return { code: v[2] * 100 + v[3], reason: v.subarray(4).toString() };
}

function xorAddress(v) {
  const port = v.readUInt16BE(2) ^ (MAGIC >>> 16);
  const ip = [0, 1, 2, 3].map((i) => v[4 + i] ^ ((MAGIC >>> (24 - 8 * i)) & 0xff)).join('.');
  return `${ip}:${port}`;
}

async function exchange(sock, host, port, { txid, buf }, timeoutMs = 2000) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const reply = await new Promise((resolve) => {
      const onMsg = (m) => {
        try {
          const d = decode(m);
          if (d.txid.equals(txid)) { cleanup(); resolve(d); }
        } catch { /* not for us */ }
      };
      const t = setTimeout(() => { cleanup(); resolve(null); }, timeoutMs / 3);
      const cleanup = () => { clearTimeout(t); sock.off('message', onMsg); };
      sock.on('message', onMsg);
      sock.send(buf, port, host);
    });
    if (reply) return reply;
  }
  throw new Error(`no STUN answer from ${host}:${port}`);
}

function socket() {
  const sock = dgram.createSocket('udp4');
  return new Promise((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(0, '127.0.0.1', () => resolve(sock));
  });
}

/** STUN Binding: resolves with the mapped address when the server answers. */
export async function binding(host, port) {
  const sock = await socket();
  try {
    const r = await exchange(sock, host, port, encode(T.BINDING, []), 600);
    if (r.type !== 0x0101) throw new Error(`binding answered 0x${r.type.toString(16)}`);
    return xorAddress(r.attrs.get(A.XOR_MAPPED_ADDRESS));
  } finally { sock.close(); }
}

/**
 * TURN Allocate with long-term credentials. Resolves with
 * `{ ok: true, relayed: "ip:port" }` or `{ ok: false, code, reason }`; releases the allocation.
 */
export async function allocate(host, port, username, password) {
  const sock = await socket();
  try {
    const transport = Buffer.from([17, 0, 0, 0]);
    const first = await exchange(sock, host, port, encode(T.ALLOCATE, [[A.REQUESTED_TRANSPORT, transport]]));
    const e1 = errorCode(first);
    if (!e1 || e1.code !== 401) throw new Error(`unauthenticated Allocate answered ${JSON.stringify(e1)} type 0x${first.type.toString(16)}`);
    const realm = first.attrs.get(A.REALM).toString();
    const nonce = first.attrs.get(A.NONCE);
    const key = createHash('md5').update(`${username}:${realm}:${password}`).digest();
    const withAuth = [
      [A.REQUESTED_TRANSPORT, transport],
      [A.USERNAME, Buffer.from(username)],
      [A.REALM, Buffer.from(realm)],
      [A.NONCE, nonce],
    ];
    const second = await exchange(sock, host, port, encode(T.ALLOCATE, withAuth, key));
    if (second.type === 0x0103) {
      const relayed = xorAddress(second.attrs.get(A.XOR_RELAYED_ADDRESS));
      // Release it: Refresh with LIFETIME 0.
      const lifetime0 = Buffer.alloc(4);
      await exchange(sock, host, port, encode(T.REFRESH, [
        [A.LIFETIME, lifetime0], [A.USERNAME, Buffer.from(username)], [A.REALM, Buffer.from(realm)], [A.NONCE, nonce],
      ], key)).catch(() => {});
      return { ok: true, relayed, realm };
    }
    const e2 = errorCode(second) ?? { code: 0, reason: `type 0x${second.type.toString(16)}` };
    return { ok: false, ...e2 };
  } finally { sock.close(); }
}
