// Unit tests of the pure parts of the browser SDK (signaling/web/otter.js), no browser needed:
//   tests/sdk/run (or node --test tests/sdk/otter.test.mjs)
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import {
  isValidRoomId, isPolite, backoffDelay, signalingUrl, parseServerMessage, parseChannelMessage,
  chunkRanges, encodeChunk, decodeChunk, FileAssembler, CHUNK_SIZE, CHUNK_HEADER_BYTES, PROTOCOL,
} from "../../signaling/web/otter.js";

test("protocol constant is otter.v1", () => {
  assert.equal(PROTOCOL, "otter.v1");
});

test("room ids: 1-64 of A-Za-z0-9_-", () => {
  for (const ok of ["a", "consult-42", "A_b-9", "x".repeat(64)]) assert.ok(isValidRoomId(ok), ok);
  for (const bad of ["", "x".repeat(65), "a b", "é", "a/b", "a.b", null, 42, undefined]) assert.ok(!isValidRoomId(bad), String(bad));
});

test("polite role: greater id is polite, both sides agree on opposite roles", () => {
  assert.equal(isPolite("p-b", "p-a"), true);
  assert.equal(isPolite("p-a", "p-b"), false);
  const ids = ["p-1", "p-2", "p-10", "p-ff", "p-0a", "Z", "a"];
  for (const x of ids) for (const y of ids) if (x !== y) assert.notEqual(isPolite(x, y), isPolite(y, x), `${x} ${y}`);
  assert.throws(() => isPolite("p-a", "p-a"), TypeError);
  assert.throws(() => isPolite("p-a", undefined), TypeError);
});

test("backoff: exponential, capped, jittered within [ceiling/2, ceiling]", () => {
  const lo = (a, o = {}) => backoffDelay(a, { ...o, random: () => 0 });
  const hi = (a, o = {}) => backoffDelay(a, { ...o, random: () => 0.999999 });
  assert.equal(lo(0), 250);
  assert.equal(hi(0), 500);
  assert.equal(lo(1), 500);
  assert.equal(hi(3), 4000);
  assert.equal(hi(4), 8000);
  assert.equal(hi(5), 10000); // capped at maxMs
  assert.equal(hi(1000), 10000); // no overflow
  assert.equal(lo(1000), 5000);
  assert.equal(hi(2, { baseMs: 100, maxMs: 300 }), 300);
  assert.equal(lo(-3), 250); // negative attempts behave as 0
  // Real randomness stays within bounds and actually varies.
  const seen = new Set();
  for (let i = 0; i < 200; i++) {
    const d = backoffDelay(2);
    assert.ok(d >= 1000 && d <= 2000, String(d));
    seen.add(d);
  }
  assert.ok(seen.size > 10, "jitter varies");
});

test("signaling URL from a base URL", () => {
  assert.equal(signalingUrl("http://127.0.0.1:8080"), "ws://127.0.0.1:8080/ws");
  assert.equal(signalingUrl("https://calls.example.com/"), "wss://calls.example.com/ws");
  assert.equal(signalingUrl("wss://calls.example.com/otter/ws"), "wss://calls.example.com/otter/ws");
  assert.equal(signalingUrl("https://x.test/#frag"), "wss://x.test/ws");
  assert.throws(() => signalingUrl("ftp://x.test"), TypeError);
  assert.throws(() => signalingUrl("not a url"));
});

test("server messages: valid ones parse, extra fields kept", () => {
  const joined = {
    type: "joined", v: 1, room: "demo", peerId: "p-a1", resumeToken: "r1", resumed: false,
    peers: [{ id: "p-b2", name: "Bob" }, { id: "p-c3" }],
    iceServers: [{ urls: ["stun:127.0.0.1:3478"] }, { urls: "turn:127.0.0.1:3478", username: "1:p", credential: "x" }],
    limits: { maxPeers: 6, maxMessageBytes: 65536 }, futureField: true,
  };
  assert.deepEqual(parseServerMessage(JSON.stringify(joined)), joined);
  const ok = [
    { type: "peer-joined", peer: { id: "p-1", name: "A" } },
    { type: "peer-left", peerId: "p-1", reason: "timeout" },
    { type: "offer", from: "p-1", sdp: "v=0\r\n" },
    { type: "answer", from: "p-1", sdp: "v=0\r\n" },
    { type: "candidate", from: "p-1", candidate: { candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host", sdpMid: "0", sdpMLineIndex: 0 } },
    { type: "candidate", from: "p-1", candidate: null },
    { type: "left" }, { type: "pong" },
    { type: "reconnect", reason: "shutdown", retryAfterMs: 500 },
    { type: "reconnect" },
    { type: "error", code: "room-full", message: "full", ref: 1 },
  ];
  for (const m of ok) assert.deepEqual(parseServerMessage(JSON.stringify(m)), m, m.type);
});

test("server messages: malformed ones are refused with a reason", () => {
  const bad = [
    [new Uint8Array(3), /binary/],
    ["{", /not JSON/],
    ["[1,2]", /not a JSON object/],
    ["null", /not a JSON object/],
    ['{"x":1}', /no type/],
    ['{"type":"nope"}', /unknown message type/],
    ['{"type":"joined","peerId":"p","resumeToken":"r","room":"d","peers":[{"name":"x"}],"iceServers":[]}', /peers/],
    ['{"type":"joined","peerId":"p","resumeToken":"r","room":"d","peers":[],"iceServers":[{"urls":5}]}', /iceServers/],
    ['{"type":"joined","resumeToken":"r","room":"d","peers":[],"iceServers":[]}', /peerId/],
    ['{"type":"peer-joined","peer":"p-1"}', /peer/],
    ['{"type":"peer-left"}', /peerId/],
    ['{"type":"offer","from":"p-1"}', /sdp/],
    ['{"type":"answer","sdp":"v=0"}', /from/],
    ['{"type":"candidate","from":"p-1","candidate":"x"}', /candidate/],
    ['{"type":"candidate","from":"p-1"}', /candidate/],
    ['{"type":"error","message":"no code"}', /code/],
    ['{"type":"reconnect","retryAfterMs":-1}', /retryAfterMs/],
  ];
  for (const [text, re] of bad) assert.throws(() => parseServerMessage(text), re, String(text));
});

test("data channel messages", () => {
  assert.deepEqual(parseChannelMessage('{"t":"chat","text":"hi","at":1}'), { t: "chat", text: "hi", at: 1 });
  assert.equal(parseChannelMessage('{"t":"chat"}'), null);
  assert.equal(parseChannelMessage('{"t":"file-start","id":1,"name":"a","size":-1}'), null);
  assert.ok(parseChannelMessage('{"t":"file-start","id":1,"name":"a","size":0}'));
  assert.ok(parseChannelMessage('{"t":"file-end","id":7}'));
  assert.equal(parseChannelMessage('{"t":"file-end","id":"7"}'), null);
  assert.equal(parseChannelMessage('{"t":"other"}'), null);
  assert.equal(parseChannelMessage("garbage"), null);
  assert.equal(parseChannelMessage(42), null);
});

test("chunk ranges cover the file exactly", () => {
  assert.deepEqual(chunkRanges(0), []);
  assert.deepEqual(chunkRanges(1), [[0, 1]]);
  assert.deepEqual(chunkRanges(CHUNK_SIZE), [[0, CHUNK_SIZE]]);
  assert.deepEqual(chunkRanges(CHUNK_SIZE + 1), [[0, CHUNK_SIZE], [CHUNK_SIZE, CHUNK_SIZE + 1]]);
  const size = 5 * 1024 * 1024 + 123;
  const r = chunkRanges(size);
  assert.equal(r.length, Math.ceil(size / CHUNK_SIZE));
  let at = 0;
  for (const [a, b] of r) { assert.equal(a, at); assert.ok(b - a <= CHUNK_SIZE && b > a); at = b; }
  assert.equal(at, size);
  assert.throws(() => chunkRanges(-1), RangeError);
  assert.throws(() => chunkRanges(10, 0), RangeError);
});

test("chunk frames round-trip, header is 8 bytes big endian", () => {
  const bytes = randomBytes(100);
  const f = encodeChunk(0xfffffffe, 7, bytes);
  assert.equal(f.byteLength, CHUNK_HEADER_BYTES + 100);
  assert.deepEqual([...f.subarray(0, 8)], [0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 7]);
  const d = decodeChunk(f.buffer); // as an ArrayBuffer, as a data channel delivers it
  assert.equal(d.transferId, 0xfffffffe);
  assert.equal(d.seq, 7);
  assert.ok(Buffer.from(d.bytes).equals(bytes));
  // A view into a larger buffer decodes too.
  const big = new Uint8Array(f.byteLength + 10);
  big.set(f, 5);
  assert.equal(decodeChunk(big.subarray(5, 5 + f.byteLength)).seq, 7);
  assert.throws(() => decodeChunk(new Uint8Array(3)), RangeError);
});

test("a 5 MB file survives chunking and reassembly (hash compared)", () => {
  const data = randomBytes(5 * 1024 * 1024 + 7);
  const a = new FileAssembler({ id: 1, name: "big.bin", size: data.length, type: "application/octet-stream" });
  let seq = 0;
  for (const [s, e] of chunkRanges(data.length)) {
    const frame = encodeChunk(1, seq++, data.subarray(s, e));
    const { transferId, seq: n, bytes } = decodeChunk(frame.buffer);
    assert.equal(transferId, 1);
    a.push(n, bytes);
  }
  assert.ok(a.done);
  const out = Buffer.concat(a.finish());
  assert.equal(createHash("sha256").update(out).digest("hex"), createHash("sha256").update(data).digest("hex"));
});

test("reassembly refuses gaps, overflow and early finish", () => {
  const a = new FileAssembler({ id: 1, name: "x", size: 10 });
  assert.throws(() => a.push(1, new Uint8Array(5)), /out of order/);
  a.push(0, new Uint8Array(5));
  assert.throws(() => a.finish(), /incomplete/);
  assert.throws(() => a.push(1, new Uint8Array(6)), /more bytes/);
  a.push(1, new Uint8Array(5));
  assert.equal(a.finish().length, 2);
  assert.throws(() => new FileAssembler({ id: 2, name: "x", size: -1 }), RangeError);
  const empty = new FileAssembler({ id: 3, name: "empty", size: 0 });
  assert.ok(empty.done);
  assert.deepEqual(empty.finish(), []);
});

test("the pushed chunk is copied (the channel's buffer may be reused)", () => {
  const a = new FileAssembler({ id: 1, name: "x", size: 3 });
  const buf = new Uint8Array([1, 2, 3]);
  a.push(0, buf);
  buf[0] = 9;
  assert.equal(a.finish()[0][0], 1);
});

test("escalation stages: all ICE servers, then TURN/TCP only, then TURN/TLS only, as handed out", async () => {
  const { Call } = await import("../../signaling/web/otter.js");
  const call = new Call({ url: "http://127.0.0.1:1", room: "r" });
  const cred = { username: "1:p", credential: "x" };
  call._serverIce = [
    { urls: ["stun:t.test:3478"] },
    { urls: ["turn:t.test:3478?transport=udp", "turn:t.test:3478?transport=tcp", "turns:t.test:5349?transport=tcp"], ...cred },
  ];
  const stages = call._escalationStages();
  assert.equal(stages.length, 3);
  assert.deepEqual(stages[0], call._serverIce);
  assert.deepEqual(stages[1], [{ urls: ["turn:t.test:3478?transport=tcp"], ...cred }]);
  assert.deepEqual(stages[2], [{ urls: ["turns:t.test:5349?transport=tcp"], ...cred }]);
  // UDP only: nothing else to try but the ICE restart.
  call._serverIce = [{ urls: "turn:t.test:3478?transport=udp", ...cred }];
  assert.equal(call._escalationStages().length, 1);
});

/** Enough of RTCPeerConnection for a Peer to be made and its ICE servers set (no media, no ICE). */
class FakePeerConnection {
  constructor(config) { this.config = config; this.restarts = 0; this.connectionState = "new"; this.signalingState = "stable"; }
  createDataChannel() { return {}; }
  addTrack() {}
  getConfiguration() { return this.config; }
  setConfiguration(config) { this.config = config; }
  restartIce() { this.restarts += 1; }
  close() { this.connectionState = "closed"; }
}

test("an ICE restart gets the ICE servers anew and keeps an escalation stage's restriction", async (t) => {
  const { Call } = await import("../../signaling/web/otter.js");
  globalThis.RTCPeerConnection = FakePeerConnection;
  t.after(() => { delete globalThis.RTCPeerConnection; });
  const cred = { username: `${Math.floor(Date.now() / 1000) + 3600}:p`, credential: "x" };
  const node = (ip) => ({ urls: [`turn:${ip}:3478?transport=udp`, `turn:${ip}:3478?transport=tcp`], ...cred });
  // The server hands out two TURN nodes at the join, then only the second (the first drains).
  let served = [node("198.51.100.1"), node("198.51.100.2")];
  const fetched = [];
  t.mock.method(globalThis, "fetch", async (url) => {
    fetched.push(String(url));
    return { ok: true, json: async () => ({ iceServers: served }) };
  });
  const call = new Call({ url: "http://127.0.0.1:1", room: "r" });
  call.peerId = "p-a";
  call._joined = true;
  call._serverIce = served;
  call._iceFetchedAt = Date.now() - 60000; // credentials far from expiry, joined a while ago
  const plain = call._addPeer("p-b", "B");
  const escalated = call._addPeer("p-c", "C");
  for (const p of [plain, escalated]) clearTimeout(p.connectTimer);
  escalated.connectStage = 2; // TURN over TCP only
  served = [node("198.51.100.2")];

  await Promise.all([plain.restartIce(), escalated.restartIce()]);
  assert.equal(fetched.length, 1, "restarts at once share one GET /v1/ice-servers");
  assert.match(fetched[0], /\/v1\/ice-servers$/);
  assert.deepEqual(plain.pc.config.iceServers, served, "the drained node is not retried");
  assert.deepEqual(escalated.pc.config.iceServers, [{ urls: ["turn:198.51.100.2:3478?transport=tcp"], ...cred }],
    "the escalation stage keeps TURN over TCP only, on the fresh list");
  assert.deepEqual([plain.pc.restarts, escalated.pc.restarts], [1, 1]);
  // Within ICE_REFRESH_MIN_MS of a fetch: no second request.
  await plain.restartIce();
  assert.equal(fetched.length, 1);
  for (const p of [plain, escalated]) p.close();
});

test("channel messages: the mute state (t: media) needs two booleans", () => {
  assert.deepEqual(parseChannelMessage('{"t":"media","audio":false,"video":true}'), { t: "media", audio: false, video: true });
  for (const bad of ['{"t":"media","audio":"no","video":true}', '{"t":"media","audio":false}', '{"t":"media"}']) {
    assert.equal(parseChannelMessage(bad), null, bad);
  }
});
