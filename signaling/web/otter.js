// otter.js: the Otter browser SDK, peer-to-peer WebRTC calls in a few lines.
// One ES module, no build step, no dependencies. Types: otter.d.ts beside it.
// Speaks signaling protocol v1 (docs/protocol.md, WebSocket subprotocol "otter.v1").
//
//   import { join } from "https://calls.example.com/otter.js";
//   const call = await join({ url: "https://calls.example.com", room: "consult-42",
//                             token, name: "Dr. Who", media: { audio: true, video: true } });
//   call.addEventListener("track", (e) => { videoFor(e.detail.peer.id).srcObject = e.detail.stream; });
//   call.addEventListener("peerleft", (e) => removeVideo(e.detail.peer.id));
//   call.addEventListener("message", (e) => console.log(e.detail.peer.name, e.detail.text));
//   call.send("hello");  await call.sendFile(file);  call.mute("audio");  call.leave();
//
// (`import Otter from ".../otter.js"; await Otter.join({...})` works too.)
//
// join(options) -> Promise<Call>, resolved once the server answered `joined`.
//   url                 server base URL (http/https/ws/wss; "/ws" is appended when the path is
//                       empty); default: the origin this module was loaded from.
//   room                room id, 1-64 of A-Z a-z 0-9 _ -
//   token               room token (string), or a function returning one (or a Promise of one):
//                       called at every (re)join, so an expired token can be replaced.
//   name                display name shown to the others
//   media               getUserMedia constraints (default {audio:true, video:true}), a
//                       MediaStream you own, or false to only receive.
//   iceTransportPolicy  "all" (default) or "relay" (force TURN)
//   iceServers          extra ICE servers, added to those the server hands out
//   on                  { eventName: listener, ... } attached before anything is dispatched
//   reconnect           { baseMs: 500, maxMs: 10000 } backoff of signaling reconnects
//   keepalive           { intervalMs: 15000, timeoutMs: 40000 }: ping this often; a socket
//                       silent for timeoutMs is taken for dead (half-open) and replaced
//   connectTimeoutMs    12000: a peer connection not connected this long after it started (or
//                       after it was lost) is escalated: ICE restart, then TURN over TCP only,
//                       then TURN over TLS only (when the server hands those out), then an
//                       `error` event (sdk-turn-auth, sdk-turn-unreachable or sdk-ice-failed)
//
// Call (an EventTarget; every event is a CustomEvent whose `detail` is described here):
//   state         {state}  "connecting" | "joined" | "reconnecting" | "closed"
//   peerjoined    {peer}               a peer is in the room (also for those present at join)
//   peerleft      {peer, reason}       "left" | "timeout" | "kicked"
//   track         {peer, track, stream} remote media arrived (attach stream to a <video>)
//   peerstate     {peer, state}        RTCPeerConnection.connectionState of that peer
//   message       {peer, text, at}     chat message (at: sender's Date.now())
//   fileprogress  {peer, direction, id, name, size, bytes}  direction "send" | "receive"
//   file          {peer, file, id, name, size, type}        a whole file arrived (file: File)
//   peermedia     {peer, audio, video} the peer muted/unmuted (true: sending); also peer.media
//   error         {error, code, peer?} something went wrong; code: one of ErrorCode (the
//                                      protocol's codes and the SDK's own "sdk-*"); peer when
//                                      it is about the connection to one peer
// Properties: peerId, room, state, localStream, peers (Map id -> Peer{id,name,pc,polite,stream}).
// Methods: leave(), mute(kind), unmute(kind), isMuted(kind), send(text, {to}),
//   sendFile(file, {to, onProgress}) -> Promise (resolves when every receiver confirmed it),
//   addTrack(track, stream), removeTrack(track), getStats(peerId).
//
// How it works: full mesh, one RTCPeerConnection per remote peer. "Perfect negotiation"
// (https://w3c.github.io/webrtc-pc/#perfect-negotiation-example): each side offers whenever it
// needs to; on a collision the polite peer (the one whose id is greater) rolls back and answers,
// the impolite one ignores the other's offer, so simultaneous renegotiation never deadlocks.
// Chat and files go over two negotiated data channels (ids 0 and 1) that both sides create, so
// they never need an extra round of negotiation. Mute state: {"t":"media","audio","video"}
// (booleans) on channel 0 when it opens and at every change. Chat: JSON text {"t":"chat","text","at"} on
// channel 0. Files on channel 1: {"t":"file-start","id","name","size","type"}, then binary
// chunks of at most 16 KiB behind an 8-byte header (u32 id, u32 sequence, big endian), sent
// with backpressure (bufferedAmount), then {"t":"file-end","id"}; the receiver answers
// {"t":"file-ack","id"} (or "file-abort").
// ICE restarts when a connection fails or stays disconnected for 5 s; an offer left without an
// answer for 8 s (lost while the other side's signaling was down) is made again. When the
// signaling socket drops (or goes silent), the SDK reconnects with exponential backoff and
// jitter and joins with the `resume` token, so the peer id and the peer connections, whose
// media never went through the server, carry on untouched. A `reconnect` from the server
// (shutdown) makes it reconnect at once.

/** @type {"otter.v1"} */
export const PROTOCOL = "otter.v1";

/**
 * Every error code an `error` event or a rejected promise can carry. The protocol's codes have
 * the names of the server's `ErrorCode` variants (signaling/src/protocol.rs; a test keeps them
 * equal); the SDK's own start with "sdk-".
 */
export const ErrorCode = Object.freeze({
  BadJson: "bad-json",
  BadMessage: "bad-message",
  UnknownType: "unknown-type",
  BadRoomId: "bad-room-id",
  RoomFull: "room-full",
  AuthRequired: "auth-required",
  AuthInvalid: "auth-invalid",
  AuthExpired: "auth-expired",
  AuthWrongRoom: "auth-wrong-room",
  NotJoined: "not-joined",
  AlreadyJoined: "already-joined",
  UnknownPeer: "unknown-peer",
  RateLimited: "rate-limited",
  TooLarge: "too-large",
  IdleTimeout: "idle-timeout",
  JoinTimeout: "join-timeout",
  ServerBusy: "server-busy",
  Unavailable: "unavailable",
  Internal: "internal",
  /** A method called in the wrong state (join() twice, after leave()). */
  SdkState: "sdk-state",
  /** The signaling connection could not be opened or closed before `joined`. */
  SdkConnect: "sdk-connect",
  /** The server sent something this SDK does not understand. */
  SdkProtocol: "sdk-protocol",
  /** Offer/answer/candidate handling failed. */
  SdkNegotiation: "sdk-negotiation",
  /** A file transfer failed. */
  SdkFile: "sdk-file",
  /** Fresh ICE servers could not be fetched from GET /v1/ice-servers. */
  SdkIce: "sdk-ice",
  /** The camera or microphone was refused (by the user or the browser's policy). */
  SdkMediaDenied: "sdk-media-denied",
  /** No camera or microphone, or it is in use elsewhere. */
  SdkMediaUnavailable: "sdk-media-unavailable",
  /** A peer connection cannot connect: the TURN server refused the credentials. */
  SdkTurnAuth: "sdk-turn-auth",
  /** A peer connection cannot connect: no TURN/STUN server answered. */
  SdkTurnUnreachable: "sdk-turn-unreachable",
  /** A peer connection cannot connect: no candidate pair succeeded (firewalls, no relay). */
  SdkIceFailed: "sdk-ice-failed",
});

/** @typedef {typeof ErrorCode[keyof typeof ErrorCode]} ErrorCodeValue */
/** @typedef {"new" | "connecting" | "joined" | "reconnecting" | "closed"} CallState */
export const CHUNK_SIZE = 16 * 1024;
export const CHAT_CHANNEL_ID = 0;
export const FILE_CHANNEL_ID = 1;
/** Chunk header: u32 transfer id, u32 sequence number, big endian. */
export const CHUNK_HEADER_BYTES = 8;

// ---------------------------------------------------------------------------------------------
// Pure parts (no DOM, no WebRTC): unit-tested with `node --test tests/sdk`.

const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;

/** True when `room` is a valid room id (1-64 characters of A-Z a-z 0-9 _ -). */
export function isValidRoomId(room) {
  return typeof room === "string" && ROOM_RE.test(room);
}

/**
 * Perfect negotiation role: the peer whose id is greater is polite (it yields on a collision).
 * Both sides compute the same answer, with opposite roles.
 */
export function isPolite(selfId, otherId) {
  if (typeof selfId !== "string" || typeof otherId !== "string" || selfId === otherId) {
    throw new TypeError("isPolite needs two different peer ids");
  }
  return selfId > otherId;
}

/**
 * Delay before reconnect attempt `attempt` (0-based): exponential, capped, with "equal jitter"
 * (half fixed, half random) so that many clients cut off together do not come back together.
 */
export function backoffDelay(attempt, { baseMs = 500, maxMs = 10000, random = Math.random } = {}) {
  const n = Math.max(0, Math.min(30, Math.floor(attempt)));
  const ceiling = Math.min(maxMs, baseMs * 2 ** n);
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/** The WebSocket URL of the signaling endpoint for a server base URL. */
export function signalingUrl(base) {
  const u = new URL(base);
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  else if (u.protocol !== "ws:" && u.protocol !== "wss:") {
    throw new TypeError(`unsupported URL scheme ${u.protocol}`);
  }
  if (u.pathname === "" || u.pathname === "/") u.pathname = "/ws";
  u.hash = "";
  return u.toString();
}

const isStr = (x) => typeof x === "string";
const isObj = (x) => x !== null && typeof x === "object" && !Array.isArray(x);
const isPeer = (p) => isObj(p) && isStr(p.id) && (p.name === undefined || p.name === null || isStr(p.name));

/** What each server message type must carry, as field -> check. */
const SERVER_SHAPES = {
  joined: {
    peerId: isStr, resumeToken: isStr, room: isStr,
    peers: (x) => Array.isArray(x) && x.every(isPeer),
    iceServers: (x) => Array.isArray(x) && x.every((s) => isObj(s) && (isStr(s.urls) || (Array.isArray(s.urls) && s.urls.every(isStr)))),
  },
  "peer-joined": { peer: isPeer },
  "peer-left": { peerId: isStr },
  offer: { from: isStr, sdp: isStr },
  answer: { from: isStr, sdp: isStr },
  candidate: { from: isStr, candidate: (c) => c === null || (isObj(c) && (c.candidate === undefined || isStr(c.candidate))) },
  left: {},
  pong: {},
  reconnect: {},
  error: { code: isStr },
};

/**
 * Parse and check one server frame. Returns the message object; throws a TypeError naming what
 * is wrong. Unknown fields are kept (protocol v1: unknown fields are ignored); unknown types
 * are refused so a newer server's messages are reported rather than misread.
 */
export function parseServerMessage(text) {
  if (!isStr(text)) throw new TypeError("binary frame");
  let msg;
  try { msg = JSON.parse(text); } catch { throw new TypeError("frame is not JSON"); }
  if (!isObj(msg)) throw new TypeError("frame is not a JSON object");
  if (!isStr(msg.type)) throw new TypeError("message has no type");
  const shape = SERVER_SHAPES[msg.type];
  if (!shape) throw new TypeError(`unknown message type ${JSON.stringify(msg.type).slice(0, 40)}`);
  for (const [field, ok] of Object.entries(shape)) {
    if (!ok(msg[field])) throw new TypeError(`${msg.type}: bad or missing field ${field}`);
  }
  if (msg.type === "reconnect" && msg.retryAfterMs !== undefined && !(Number.isFinite(msg.retryAfterMs) && msg.retryAfterMs >= 0)) {
    throw new TypeError("reconnect: bad retryAfterMs");
  }
  return msg;
}

/**
 * Byte ranges [start, end) of the chunks of a file of `size` bytes.
 * @param {number} size
 * @returns {Array<[number, number]>}
 */
export function chunkRanges(size, chunkSize = CHUNK_SIZE) {
  if (!Number.isSafeInteger(size) || size < 0) throw new RangeError("bad size");
  if (!Number.isSafeInteger(chunkSize) || chunkSize <= 0) throw new RangeError("bad chunk size");
  /** @type {Array<[number, number]>} */
  const out = [];
  for (let start = 0; start < size; start += chunkSize) out.push([start, Math.min(size, start + chunkSize)]);
  return out;
}

/** One binary data channel frame: 8-byte header (transfer id, sequence) then the bytes. */
export function encodeChunk(transferId, seq, bytes) {
  const out = new Uint8Array(CHUNK_HEADER_BYTES + bytes.byteLength);
  const view = new DataView(out.buffer);
  view.setUint32(0, transferId >>> 0);
  view.setUint32(4, seq >>> 0);
  out.set(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes), CHUNK_HEADER_BYTES);
  return out;
}

/** Inverse of encodeChunk: {transferId, seq, bytes} (bytes is a view, not a copy). */
export function decodeChunk(frame) {
  const u8 = frame instanceof Uint8Array ? frame : new Uint8Array(frame);
  if (u8.byteLength < CHUNK_HEADER_BYTES) throw new RangeError("chunk shorter than its header");
  const view = new DataView(u8.buffer, u8.byteOffset, u8.byteLength);
  return { transferId: view.getUint32(0), seq: view.getUint32(4), bytes: u8.subarray(CHUNK_HEADER_BYTES) };
}

/**
 * Reassembles one incoming file. `push(seq, bytes)` takes chunks in order (the channel is
 * ordered and reliable, so anything else is an error); `finish()` checks the size and returns
 * the parts (Uint8Array[]) to build a Blob/File from.
 */
export class FileAssembler {
  constructor({ id, name, size, type = "" }) {
    if (!Number.isSafeInteger(size) || size < 0) throw new RangeError("bad file size");
    this.id = id; this.name = String(name ?? "file"); this.size = size; this.type = String(type ?? "");
    this.received = 0; this.nextSeq = 0; this.parts = [];
  }
  push(seq, bytes) {
    if (seq !== this.nextSeq) throw new RangeError(`chunk ${seq} out of order (expected ${this.nextSeq})`);
    if (this.received + bytes.byteLength > this.size) throw new RangeError("more bytes than announced");
    this.parts.push(bytes.slice()); // copy: the frame's buffer is not ours to keep
    this.received += bytes.byteLength;
    this.nextSeq += 1;
    return this.received;
  }
  get done() { return this.received === this.size; }
  finish() {
    if (!this.done) throw new RangeError(`file ${this.name} incomplete: ${this.received} of ${this.size} bytes`);
    return this.parts;
  }
}

/** Parse a data channel control/chat message (JSON text); returns null when malformed. */
export function parseChannelMessage(text) {
  if (!isStr(text) || text.length > 1 << 20) return null;
  let m;
  try { m = JSON.parse(text); } catch { return null; }
  if (!isObj(m) || !isStr(m.t)) return null;
  switch (m.t) {
    case "chat": return isStr(m.text) ? m : null;
    case "file-start": return Number.isSafeInteger(m.id) && Number.isSafeInteger(m.size) && m.size >= 0 && isStr(m.name) ? m : null;
    case "file-end": case "file-ack": case "file-abort": return Number.isSafeInteger(m.id) ? m : null;
    case "media": return typeof m.audio === "boolean" && typeof m.video === "boolean" ? m : null;
    default: return null;
  }
}

// ---------------------------------------------------------------------------------------------
// WebRTC and signaling.

const BUFFER_HIGH = 1024 * 1024; // pause sending a file above this many buffered bytes
const BUFFER_LOW = 256 * 1024; // resume below this
const DISCONNECTED_RESTART_MS = 5000; // ICE "disconnected" for this long: restart ICE
const ANSWER_TIMEOUT_MS = 8000; // no answer to our offer by then: it was lost, offer again
const AWAIT_OFFER_MS = 4000; // an existing member offers itself if the newcomer's offer is late
const PROGRESS_EVERY = 64; // receive progress event every this many chunks
const CONNECT_TIMEOUT_MS = 12000; // a peer connection not connected by then is escalated
const ICE_REFRESH_MIN_MS = 2000; // ICE restarts within this share one GET /v1/ice-servers

/** What the `error` event's message says for each way a connection can fail to connect. */
const DIAGNOSES = {
  [ErrorCode.SdkTurnAuth]: "the TURN server refused the credentials",
  [ErrorCode.SdkTurnUnreachable]: "no TURN server answered",
  [ErrorCode.SdkIceFailed]: "no candidate pair succeeded (a firewall, or no relay between the peers)",
};

/**
 * The error a failed getUserMedia() becomes: refused (by the user or a policy) or unavailable.
 * @param {unknown} error
 */
function mediaError(error) {
  const name = error instanceof Error ? error.name : "";
  const denied = name === "NotAllowedError" || name === "SecurityError";
  const code = denied ? ErrorCode.SdkMediaDenied : ErrorCode.SdkMediaUnavailable;
  const e = new OtterError(code, `${denied ? "camera or microphone refused" : "no usable camera or microphone"} (${name || String(error)})`);
  e.cause = error;
  return e;
}

/** An Error with one of ErrorCode's codes. */
export class OtterError extends Error {
  /**
   * @param {string} code
   * @param {string} [message]
   */
  constructor(code, message) { super(message ?? code); this.name = "OtterError"; this.code = code; }
}

/** Start a call: connect, join, get media. */
export async function join(options) {
  const call = new Call(options);
  await call.join();
  return call;
}

/** One remote peer of the mesh. */
class Peer {
  constructor(call, id, name, awaitOffer) {
    this.call = call;
    this.id = id;
    this.name = name ?? "";
    this.polite = isPolite(call.peerId, id);
    /** @type {MediaStream|null} the peer's first remote stream */
    this.stream = null;
    /** @type {RTCPeerConnectionState} */
    this.state = "new";
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.answerPending = false;
    this.queue = Promise.resolve();
    this.closed = false;
    this.pc = new RTCPeerConnection(call._rtcConfig());
    this.chat = this.pc.createDataChannel("otter-chat", { negotiated: true, id: CHAT_CHANNEL_ID, ordered: true });
    this.files = this.pc.createDataChannel("otter-file", { negotiated: true, id: FILE_CHANNEL_ID, ordered: true });
    this.files.binaryType = "arraybuffer";
    this.files.bufferedAmountLowThreshold = BUFFER_LOW;
    this.incoming = new Map(); // transfer id -> FileAssembler
    this.acks = new Map(); // transfer id -> {resolve, reject}
    // An existing member waits for the newcomer's offer rather than offering too (that would
    // be a collision: harmless with perfect negotiation, but one round trip slower), unless
    // none comes in time.
    this.awaitOffer = awaitOffer;
    /** What the peer says it sends (its mute buttons); both true until it says otherwise. */
    this.media = { audio: true, video: true };
    if (awaitOffer) {
      this.offerTimer = setTimeout(() => {
        this.awaitOffer = false;
        if (!this.closed && this.pc.signalingState === "stable" && !this.pc.remoteDescription) this.negotiate();
      }, AWAIT_OFFER_MS);
    }
    // Escalation of a connection that does not connect (see _escalate).
    this.connectTimer = null;
    this.connectStage = 0;
    /** @type {Map<number, string>} icecandidateerror code -> its text, for the diagnosis */
    this.iceErrors = new Map();
    this.relayGathered = false;
    this._wire();
    for (const t of call._tracks()) this.pc.addTrack(t.track, t.stream);
    this._armConnectTimer();
  }

  _wire() {
    const { pc, call } = this;
    pc.onnegotiationneeded = () => this.negotiate();
    pc.onicecandidateerror = (e) => {
      const { errorCode, errorText } = /** @type {RTCPeerConnectionIceErrorEvent} */ (e);
      if (errorCode) this.iceErrors.set(errorCode, errorText);
    };
    pc.onicecandidate = ({ candidate }) => {
      if (candidate && candidate.type === "relay") this.relayGathered = true;
      call._signal({ type: "candidate", to: this.id, candidate: candidate ? candidate.toJSON() : null });
    };
    pc.ontrack = ({ track, streams }) => {
      const stream = streams[0] ?? this.stream ?? new MediaStream();
      if (!streams[0] && !stream.getTracks().includes(track)) stream.addTrack(track);
      if (!this.stream) this.stream = stream;
      call._emit("track", { peer: this, track, stream });
    };
    pc.onconnectionstatechange = () => {
      const state = pc.connectionState;
      this.state = state;
      call._emit("peerstate", { peer: this, state });
      clearTimeout(this.restartTimer);
      if (state === "connected") this._connected();
      else if ((state === "disconnected" || state === "failed") && this.connectTimer === null) this._armConnectTimer();
      if (state === "failed") this.restartIce();
      else if (state === "disconnected") this.restartTimer = setTimeout(() => this.restartIce(), DISCONNECTED_RESTART_MS);
    };
    this.chat.onmessage = (e) => this._onChat(e.data);
    this.chat.onopen = () => this.sendMediaState();
    this.files.onmessage = (e) => this._onFile(e.data);
  }

  /** Start the clock this connection has to connect in (from now). */
  _armConnectTimer() {
    clearTimeout(this.connectTimer ?? undefined);
    this.connectTimer = setTimeout(() => { this._escalate().catch((error) => this.call._error(ErrorCode.SdkNegotiation, error, this)); }, this.call._connectTimeoutMs);
  }

  _connected() {
    clearTimeout(this.connectTimer ?? undefined);
    this.connectTimer = null;
    this.connectStage = 0;
    this.iceErrors.clear();
  }

  /**
   * The connection did not connect in time: try the next stage (an ICE restart with every ICE
   * server, then TURN over TCP only, then TURN over TLS only, as far as the server handed those
   * out), each with a fresh clock; after the last one, say why in an `error` event. A call that
   * cannot connect must say so rather than hang.
   */
  async _escalate() {
    this.connectTimer = null;
    if (this.closed || this.pc.connectionState === "connected") return;
    if (!this.call._joined) { this._armConnectTimer(); return; } // judged once signaling is back
    const stages = this.call._escalationStages();
    this.connectStage += 1;
    if (this.connectStage <= stages.length) {
      this._applyIceServers();
      this.relayGathered = false;
      this._armConnectTimer();
      await this.restartIce();
      return;
    }
    // Out of stages: back to every ICE server (a later restart may find TURN back), and tell.
    this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers: this.call._rtcConfig().iceServers });
    const code = this._diagnose();
    const seconds = Math.round((stages.length + 1) * this.call._connectTimeoutMs / 1000);
    this.call._error(code, new OtterError(code, `no connection to peer ${this.id} after ${seconds} s and ${stages.length} retries: ${DIAGNOSES[code]}`), this);
  }

  /**
   * Why the connection does not connect, from what ICE reported on the way: TURN answered 401,
   * or TURN is configured but gave no relay candidate since the last restart (a live TURN server
   * answers within a round trip; its own timeout errors come much later than ours).
   */
  _diagnose() {
    if (this.iceErrors.has(401)) return ErrorCode.SdkTurnAuth;
    const turn = this.call._rtcConfig().iceServers.some((s) => (Array.isArray(s.urls) ? s.urls : [s.urls]).some((u) => /^turns?:/i.test(u)));
    if (turn && !this.relayGathered) return ErrorCode.SdkTurnUnreachable;
    return ErrorCode.SdkIceFailed;
  }

  /** Offer (perfect negotiation: any side, any time). */
  async negotiate() {
    // One offer at a time: negotiationneeded comes again in stable if this offer misses a change.
    if (this.closed || this.awaitOffer || this.makingOffer) return;
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      const offer = /** @type {RTCSessionDescription} */ (this.pc.localDescription);
      this.call._signal({ type: "offer", to: this.id, sdp: offer.sdp });
      // The server drops what it cannot deliver (the other side's signaling may be down for a
      // moment, keeping its seat): with no answer in time, take the offer back and make it again.
      clearTimeout(this.answerTimer);
      this.answerTimer = setTimeout(() => this._answerLate(offer), ANSWER_TIMEOUT_MS);
    } catch (error) {
      this.call._error(ErrorCode.SdkNegotiation, error);
    } finally {
      this.makingOffer = false;
    }
  }

  async _answerLate(offer) {
    const { pc } = this;
    if (this.closed || pc.signalingState !== "have-local-offer" || pc.localDescription?.sdp !== offer.sdp) return;
    if (!this.call._joined) return; // recover() re-offers after our own rejoin
    try {
      await pc.setLocalDescription({ type: "rollback" });
      await this.negotiate();
    } catch (error) {
      this.call._error(ErrorCode.SdkNegotiation, error);
    }
  }

  async restartIce() {
    if (this.closed || this.pc.connectionState === "closed") return;
    if (!this.call._joined) { this.restartWanted = true; return; } // after the rejoin
    this.restartWanted = false;
    // The restart gathers anew: with the TURN nodes the server hands out now (a draining node
    // is gone from them) and valid credentials.
    await this.call._freshIceServers();
    if (!this.closed) this.pc.restartIce();
  }

  /**
   * Set this connection's ICE servers from the call's current ones, kept to its escalation
   * stage (TURN over TCP or TLS only) while it is in one.
   */
  _applyIceServers() {
    if (this.closed) return;
    const stages = this.call._escalationStages();
    const iceServers = this.connectStage >= 1 && this.connectStage <= stages.length ? stages[this.connectStage - 1] : this.call._rtcConfig().iceServers;
    this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers });
  }

  /** Handle offer/answer/candidate from this peer, one at a time, in arrival order. */
  receive(msg) {
    this.queue = this.queue.then(() => this._receive(msg)).catch((error) => this.call._error(ErrorCode.SdkNegotiation, error));
  }

  async _receive(msg) {
    if (this.closed) return;
    const { pc } = this;
    if (msg.type === "offer" || msg.type === "answer") {
      const readyForOffer = !this.makingOffer && (pc.signalingState === "stable" || this.answerPending);
      const collision = msg.type === "offer" && !readyForOffer;
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) return;
      if (msg.type === "answer" && pc.signalingState !== "have-local-offer") return; // stale answer
      this.answerPending = msg.type === "answer";
      try {
        await pc.setRemoteDescription({ type: msg.type, sdp: msg.sdp }); // implicit rollback if polite
      } finally {
        this.answerPending = false;
      }
      if (msg.type === "offer") {
        this.awaitOffer = false;
        clearTimeout(this.offerTimer);
        await pc.setLocalDescription();
        this.call._signal({ type: "answer", to: this.id, sdp: /** @type {RTCSessionDescription} */ (pc.localDescription).sdp });
      }
    } else if (msg.type === "candidate") {
      if (!msg.candidate || !msg.candidate.candidate) return; // end of candidates: nothing to do
      try {
        await pc.addIceCandidate(msg.candidate);
      } catch (error) {
        if (!this.ignoreOffer) throw error;
      }
    }
  }

  /** After a signaling blip: re-offer if an offer/answer may have been lost. */
  async recover() {
    if (this.closed) return;
    const { pc } = this;
    if (pc.signalingState === "have-local-offer") {
      await pc.setLocalDescription({ type: "rollback" }).catch(() => {});
      if (this.restartWanted || pc.connectionState === "failed" || pc.connectionState === "disconnected") this.restartIce();
      else this.negotiate();
    } else if (this.restartWanted || pc.connectionState === "failed") {
      this.restartIce();
    }
  }

  /** Tell this peer what we send (mute state), for its participant list. */
  sendMediaState() {
    if (this.chat.readyState !== "open") return;
    const { call } = this;
    const has = (/** @type {"audio" | "video"} */ kind) => call._localTracksOf(kind).some((t) => t.enabled);
    this.chat.send(JSON.stringify({ t: "media", audio: has("audio"), video: has("video") }));
  }

  _onChat(data) {
    const m = parseChannelMessage(data);
    if (m && m.t === "media") {
      this.media = { audio: Boolean(m.audio), video: Boolean(m.video) };
      this.call._emit("peermedia", { peer: this, ...this.media });
      return;
    }
    if (m && m.t === "chat") this.call._emit("message", { peer: this, text: m.text, at: Number(m.at) || Date.now() });
  }

  _onFile(data) {
    if (typeof data !== "string") {
      let chunk;
      try { chunk = decodeChunk(data); } catch { return; }
      const a = this.incoming.get(chunk.transferId);
      if (!a) return;
      try {
        const bytes = a.push(chunk.seq, chunk.bytes);
        if (chunk.seq % PROGRESS_EVERY === 0 || a.done) this.call._emit("fileprogress", { peer: this, direction: "receive", id: a.id, name: a.name, size: a.size, bytes });
      } catch (error) {
        this.incoming.delete(chunk.transferId);
        this._sendFileCtl({ t: "file-abort", id: a.id });
        this.call._error(ErrorCode.SdkFile, error);
      }
      return;
    }
    const m = parseChannelMessage(data);
    if (!m) return;
    if (m.t === "file-start") {
      try {
        this.incoming.set(m.id, new FileAssembler(m));
      } catch (error) { this.call._error(ErrorCode.SdkFile, error); }
    } else if (m.t === "file-end") {
      const a = this.incoming.get(m.id);
      if (!a) return;
      this.incoming.delete(m.id);
      let parts;
      try { parts = a.finish(); } catch (error) { this.call._error(ErrorCode.SdkFile, error); return; }
      const file = new File(parts, a.name, { type: a.type });
      this._sendFileCtl({ t: "file-ack", id: m.id });
      this.call._emit("file", { peer: this, file, id: a.id, name: a.name, size: a.size, type: a.type });
    } else if (m.t === "file-ack" || m.t === "file-abort") {
      const w = this.acks.get(m.id);
      if (!w) { if (m.t === "file-abort") this.incoming.delete(m.id); return; }
      this.acks.delete(m.id);
      if (m.t === "file-ack") w.resolve();
      else w.reject(new OtterError(ErrorCode.SdkFile, `peer ${this.id} refused the file`));
    }
  }

  _sendFileCtl(m) {
    if (this.files.readyState === "open") this.files.send(JSON.stringify(m));
  }

  async _drain() {
    const ch = this.files;
    while (ch.bufferedAmount > BUFFER_HIGH) {
      if (ch.readyState !== "open") throw new OtterError(ErrorCode.SdkFile, `channel to ${this.id} closed`);
      await /** @type {Promise<void>} */ (new Promise((resolve) => {
        const done = () => { clearTimeout(t); ch.removeEventListener("bufferedamountlow", done); ch.removeEventListener("close", done); resolve(); };
        const t = setTimeout(done, 50); // re-check even if the event does not come
        ch.addEventListener("bufferedamountlow", done);
        ch.addEventListener("close", done);
      }));
    }
  }

  async waitOpen(ch, timeoutMs = 20000) {
    if (ch.readyState === "open") return;
    if (ch.readyState !== "connecting") throw new OtterError(ErrorCode.SdkFile, `channel to ${this.id} is ${ch.readyState}`);
    await /** @type {Promise<void>} */ (new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new OtterError(ErrorCode.SdkFile, `channel to ${this.id} did not open`)), timeoutMs);
      ch.addEventListener("open", () => { clearTimeout(t); resolve(); }, { once: true });
    }));
  }

  /** Send a whole file to this peer; resolves when the peer confirmed receipt. */
  async sendFile(file, id, onProgress) {
    await this.waitOpen(this.files);
    const ch = this.files;
    const acked = new Promise((resolve, reject) => this.acks.set(id, { resolve, reject }));
    acked.catch(() => {}); // observed below; avoid an unhandled rejection if we throw first
    ch.send(JSON.stringify({ t: "file-start", id, name: file.name ?? "file", size: file.size, type: file.type ?? "" }));
    const BLOCK = 64 * CHUNK_SIZE; // read 1 MiB at a time, send it in 16 KiB chunks
    let seq = 0;
    let sent = 0;
    for (let start = 0; start < file.size; start += BLOCK) {
      const block = new Uint8Array(await file.slice(start, Math.min(file.size, start + BLOCK)).arrayBuffer());
      for (const [a, b] of chunkRanges(block.byteLength)) {
        if (this.closed || ch.readyState !== "open") throw new OtterError(ErrorCode.SdkFile, `peer ${this.id} went away`);
        ch.send(encodeChunk(id, seq++, block.subarray(a, b)));
        sent += b - a;
        await this._drain();
      }
      onProgress(this, sent);
    }
    ch.send(JSON.stringify({ t: "file-end", id }));
    if (file.size === 0) onProgress(this, 0);
    await acked;
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.restartTimer);
    clearTimeout(this.connectTimer ?? undefined);
    clearTimeout(this.offerTimer);
    clearTimeout(this.answerTimer);
    for (const w of this.acks.values()) w.reject(new OtterError(ErrorCode.SdkFile, `peer ${this.id} left`));
    this.acks.clear();
    this.incoming.clear();
    this.pc.onnegotiationneeded = this.pc.onicecandidate = this.pc.ontrack = this.pc.onconnectionstatechange = null;
    try { this.pc.close(); } catch { /* already closed */ }
    this.state = "closed";
  }
}

let transferCounter = Math.floor(Math.random() * 0x7fffffff);

export class Call extends EventTarget {
  constructor(options = {}) {
    super();
    const { url, room, token, name, media = { audio: true, video: true }, iceTransportPolicy = "all",
      iceServers = [], on = {}, reconnect = {}, keepalive = {}, connectTimeoutMs = CONNECT_TIMEOUT_MS } = options;
    if (!isValidRoomId(room)) throw new OtterError(ErrorCode.BadRoomId, "room must be 1-64 characters of A-Z a-z 0-9 _ -");
    this.room = room;
    this.name = name;
    this.url = signalingUrl(url ?? new URL("/", import.meta.url).toString());
    /** @type {CallState} */
    this.state = "new";
    /** @type {string|null} */
    this.peerId = null;
    /** @type {Map<string, Peer>} */
    this.peers = new Map();
    /** @type {MediaStream|null} */
    this.localStream = null;
    this._token = token;
    this._media = media;
    this._ownsStream = false;
    this._policy = iceTransportPolicy;
    this._extraIce = iceServers;
    this._serverIce = [];
    this._iceFetchedAt = 0; // when _serverIce came from the server (joined or a refetch)
    this._backoff = reconnect;
    // Ping well within the server's idle timeout (60 s by default).
    this._pingMs = keepalive.intervalMs ?? 15000;
    this._deadMs = keepalive.timeoutMs ?? 40000;
    this._connectTimeoutMs = connectTimeoutMs;
    this._lastHeard = 0;
    this._pingSentAt = 0;
    this._extraTracks = []; // {track, stream} added with addTrack()
    this._resumeToken = null;
    this._joined = false;
    this._attempt = 0;
    this._ws = null;
    this._reqId = 0;
    for (const [type, fn] of Object.entries(on)) this.addEventListener(type, fn);
  }

  // -- public surface -------------------------------------------------------------------------

  /** Get media (unless given), connect and join. Resolves when joined. */
  async join() {
    if (this.state !== "new") throw new OtterError(ErrorCode.SdkState, `join() on a call that is ${this.state}`);
    this._setState("connecting");
    try {
      if (this._media instanceof MediaStream) {
        this.localStream = this._media;
      } else if (this._media) {
        this.localStream = await navigator.mediaDevices.getUserMedia(this._media).catch((error) => { throw mediaError(error); });
        this._ownsStream = true;
      }
      await this._connect();
    } catch (error) {
      this._teardown();
      throw error;
    }
  }

  /** Leave the room and release everything (camera included, if the SDK opened it). */
  leave() {
    if (this.state === "closed") return;
    if (this._ws && this._ws.readyState === WebSocket.OPEN && this._joined) {
      try { this._ws.send(JSON.stringify({ type: "leave" })); } catch { /* closing anyway */ }
    }
    this._teardown();
  }

  /** Mute "audio" or "video" (the track keeps flowing, as silence or black frames). */
  mute(kind = "audio") { this._setEnabled(kind, false); }
  unmute(kind = "audio") { this._setEnabled(kind, true); }
  isMuted(kind = "audio") {
    const ts = this._localTracksOf(kind);
    return ts.length > 0 && ts.every((t) => !t.enabled);
  }

  /**
   * Chat to everyone (or `to` one peer id); returns how many peers it was sent to.
   * @param {string} text
   * @param {{ to?: string }} [options]
   * @returns {number}
   */
  send(text, { to } = {}) {
    const frame = JSON.stringify({ t: "chat", text: String(text), at: Date.now() });
    let n = 0;
    for (const p of this._targets(to)) {
      if (p.chat.readyState === "open") { p.chat.send(frame); n++; }
    }
    return n;
  }

  /**
   * Send a file (File or Blob) to everyone (or `to` one peer id), peer to peer. Resolves when
   * every receiver confirmed the whole file; progress as `fileprogress` events and `onProgress`.
   * @param {Blob | File} file
   * @param {{ to?: string, onProgress?: (progress: any) => void }} [options]
   * @returns {Promise<{ id: number, peers: string[] }>}
   */
  async sendFile(file, { to, onProgress } = {}) {
    const id = (transferCounter = (transferCounter + 1) >>> 0);
    const targets = this._targets(to);
    if (targets.length === 0) throw new OtterError(ErrorCode.SdkFile, "nobody to send the file to");
    const name = "name" in file ? file.name : "file";
    const progress = (peer, bytes) => {
      const detail = { peer, direction: "send", id, name, size: file.size, bytes };
      this._emit("fileprogress", detail);
      if (onProgress) onProgress(detail);
    };
    await Promise.all(targets.map((p) => p.sendFile(file, id, progress)));
    return { id, peers: targets.map((p) => p.id) };
  }

  /** Send an extra track (a screen share, say) to every peer; renegotiates. */
  addTrack(track, stream = new MediaStream([track])) {
    this._extraTracks.push({ track, stream });
    for (const p of this.peers.values()) p.pc.addTrack(track, stream);
  }

  /** Stop sending a track added with addTrack() (or the local camera/microphone track). */
  removeTrack(track) {
    this._extraTracks = this._extraTracks.filter((t) => t.track !== track);
    if (this.localStream && this.localStream.getTracks().includes(track)) this.localStream.removeTrack(track);
    for (const p of this.peers.values()) {
      for (const s of p.pc.getSenders()) if (s.track === track) p.pc.removeTrack(s);
    }
  }

  /** RTCStatsReport of the connection to one peer. */
  getStats(peerId) {
    const p = this.peers.get(peerId);
    if (!p) return Promise.reject(new OtterError(ErrorCode.UnknownPeer, `no peer ${peerId}`));
    return p.pc.getStats();
  }

  // -- internals ------------------------------------------------------------------------------

  _emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  /**
   * Dispatch an `error` event; `error` keeps its own code when it has one.
   * @param {string} code
   * @param {unknown} error
   * @param {Peer} [peer] the peer connection it is about
   */
  _error(code, error, peer) {
    const e = /** @type {Error & { code?: string }} */ (error instanceof Error ? error : new OtterError(code, String(error)));
    if (!e.code) e.code = code;
    this._emit("error", peer ? { error: e, code: e.code, peer } : { error: e, code: e.code });
  }

  /** @param {CallState} state */
  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit("state", { state });
  }

  _rtcConfig() {
    return { iceServers: [...this._serverIce, ...this._extraIce], iceTransportPolicy: this._policy, bundlePolicy: "max-bundle" };
  }

  /**
   * Before an ICE restart, get the ICE servers anew from GET /v1/ice-servers: the TURN nodes
   * the server hands out now (a draining or lost node is no longer among them) with fresh
   * credentials (`username` = "expiry:peer"). Restarts of several peers within
   * ICE_REFRESH_MIN_MS share one fetch, unless the credentials expire within 5 minutes.
   */
  async _freshIceServers() {
    const soon = Date.now() / 1000 + 300;
    const expiring = this._serverIce.some((s) => typeof s.username === "string" && /^\d+:/.test(s.username) && Number(s.username.split(":")[0]) < soon);
    if (!expiring && !this._iceFetch && Date.now() - this._iceFetchedAt < ICE_REFRESH_MIN_MS) return;
    if (!this._iceFetch) {
      this._iceFetch = (async () => {
        try {
          const url = new URL("v1/ice-servers", this.url.replace(/^ws/, "http"));
          const token = await this._tokenValue();
          const r = await fetch(url, { headers: token ? { authorization: `Bearer ${token}` } : {}, cache: "no-store" });
          if (!r.ok) throw new OtterError(ErrorCode.SdkIce, `GET ${url.pathname}: HTTP ${r.status}`);
          const body = await r.json();
          if (!Array.isArray(body.iceServers)) throw new OtterError(ErrorCode.SdkIce, "no iceServers in the answer");
          this._serverIce = body.iceServers;
          this._iceFetchedAt = Date.now();
          for (const p of this.peers.values()) p._applyIceServers();
        } catch (error) {
          this._error(ErrorCode.SdkIce, error); // carry on with what we have
        } finally {
          this._iceFetch = null;
        }
      })();
    }
    await this._iceFetch;
  }

  /**
   * The ICE servers of each escalation stage: all of them (an ICE restart), then TURN over TCP
   * only, then TURN over TLS only, each when the server handed such URIs out.
   * @returns {RTCIceServer[][]}
   */
  _escalationStages() {
    const all = this._rtcConfig().iceServers;
    /** @param {RegExp} re */
    const only = (re) => all.flatMap((s) => {
      const urls = (Array.isArray(s.urls) ? s.urls : [s.urls]).filter((u) => re.test(u));
      return urls.length ? [{ ...s, urls }] : [];
    });
    const stages = [all];
    for (const re of [/^turn:[^?]*\?(.*&)?transport=tcp/i, /^turns:/i]) {
      const servers = only(re);
      if (servers.length) stages.push(servers);
    }
    return stages;
  }

  _tracks() {
    const out = [];
    if (this.localStream) for (const track of this.localStream.getTracks()) out.push({ track, stream: this.localStream });
    return out.concat(this._extraTracks);
  }

  _localTracksOf(kind) {
    return this.localStream ? this.localStream.getTracks().filter((t) => t.kind === kind) : [];
  }

  _setEnabled(kind, on) {
    if (kind !== "audio" && kind !== "video") throw new TypeError('kind is "audio" or "video"');
    for (const t of this._localTracksOf(kind)) t.enabled = on;
    for (const p of this.peers.values()) p.sendMediaState();
  }

  _targets(to) {
    if (to === undefined) return [...this.peers.values()];
    const p = this.peers.get(to);
    if (!p) throw new OtterError(ErrorCode.UnknownPeer, `no peer ${to}`);
    return [p];
  }

  _signal(msg) {
    // While signaling is down, drop: recover() re-offers and trickle ICE of a lost offer is moot.
    if (this._ws && this._ws.readyState === WebSocket.OPEN && this._joined) this._ws.send(JSON.stringify(msg));
  }

  async _tokenValue() {
    return typeof this._token === "function" ? await this._token() : this._token;
  }

  /** Open a socket and join; resolves on `joined`, rejects on an error or a lost socket. */
  async _connect() {
    const token = await this._tokenValue();
    if (this.state === "closed") throw new OtterError(ErrorCode.SdkState, "call left");
    return /** @type {Promise<void>} */ (new Promise((resolve, reject) => {
      let settled = false;
      const ws = new WebSocket(this.url, [PROTOCOL]);
      this._ws = ws;
      const fail = (error) => { if (!settled) { settled = true; reject(error); } };
      ws.onopen = () => {
        const join = { type: "join", room: this.room, id: ++this._reqId };
        if (this.name) join.name = this.name;
        if (token) join.token = token;
        if (this._resumeToken) join.resume = this._resumeToken;
        ws.send(JSON.stringify(join));
        this._heard();
      };
      ws.onmessage = (e) => {
        if (ws !== this._ws) return;
        this._heard();
        let msg;
        try { msg = parseServerMessage(e.data); } catch (error) { this._error(ErrorCode.SdkProtocol, error); return; }
        if (!settled && msg.type === "error" && !this._joined) {
          fail(new OtterError(msg.code, msg.message ?? msg.code));
          try { ws.close(1000); } catch { /* closing */ }
          return;
        }
        if (msg.type === "joined" && !settled) {
          settled = true;
          this._onJoined(msg);
          resolve();
          return;
        }
        this._onMessage(msg);
      };
      ws.onclose = (e) => {
        if (ws !== this._ws) return;
        this._ws = null;
        clearInterval(this._pinger);
        const wasJoined = this._joined;
        this._joined = false;
        if (!settled) { fail(new OtterError(ErrorCode.SdkConnect, `signaling connection closed (${e.code}${e.reason ? " " + e.reason : ""})`)); return; }
        if (wasJoined && this.state !== "closed") this._scheduleReconnect(this._reconnectSoon ?? null);
      };
      ws.onerror = () => { /* onclose follows with the details */ };
    }));
  }

  _heard() { this._lastHeard = Date.now(); }

  /** (A method, so that TypeScript does not narrow `state` across an await.) */
  _isClosed() { return this.state === "closed"; }

  _onJoined(msg) {
    const first = this.peerId === null;
    const samePeer = msg.resumed === true && msg.peerId === this.peerId;
    if (!first && !samePeer) {
      // The seat was lost (grace ran out, server restarted): start over as a new peer.
      for (const p of this.peers.values()) { p.close(); this._emit("peerleft", { peer: p, reason: "timeout" }); }
      this.peers.clear();
    }
    this._closeStale();
    this.peerId = msg.peerId;
    this._resumeToken = msg.resumeToken;
    this._serverIce = msg.iceServers;
    this._iceFetchedAt = Date.now();
    this._joined = true;
    this._attempt = 0;
    this._reconnectSoon = null;
    this._setState("joined");
    clearInterval(this._pinger);
    this._pingSentAt = 0;
    this._pinger = setInterval(() => this._keepalive(), Math.min(this._pingMs, this._deadMs / 2));

    const present = new Map(msg.peers.map((p) => [p.id, p]));
    const start = () => {
      if (this.state === "closed") return;
      // Peers that left while we were away.
      for (const p of [...this.peers.values()]) {
        if (!present.has(p.id)) { this.peers.delete(p.id); p.close(); this._emit("peerleft", { peer: p, reason: "timeout" }); }
      }
      for (const p of this.peers.values()) {
        p.pc.setConfiguration({ ...p.pc.getConfiguration(), iceServers: this._rtcConfig().iceServers });
        p.recover().catch((error) => this._error(ErrorCode.SdkNegotiation, error));
      }
      // New to us: we are the newcomer, so we offer (our tracks trigger negotiationneeded).
      for (const info of present.values()) if (!this.peers.has(info.id)) this._addPeer(info.id, info.name);
    };
    // First join: let `await join()` return (and its caller add listeners) before any event.
    if (first) setTimeout(start, 0); else start();
  }

  _addPeer(id, name, awaitOffer = false) {
    const p = new Peer(this, id, name, awaitOffer);
    this.peers.set(id, p);
    this._emit("peerjoined", { peer: p });
    return p;
  }

  _onMessage(msg) {
    switch (msg.type) {
      case "peer-joined": {
        // The newcomer offers first (see Peer.awaitOffer); its offer may even have come already.
        const p = this.peers.get(msg.peer.id);
        if (p) p.name = msg.peer.name ?? p.name;
        else if (msg.peer.id !== this.peerId) this._addPeer(msg.peer.id, msg.peer.name, true);
        break;
      }
      case "peer-left": {
        const p = this.peers.get(msg.peerId);
        if (p) { this.peers.delete(msg.peerId); p.close(); }
        this._emit("peerleft", { peer: p ?? { id: msg.peerId, name: "" }, reason: msg.reason ?? "left" });
        break;
      }
      case "offer": case "answer": case "candidate": {
        if (msg.from === this.peerId) break;
        let p = this.peers.get(msg.from);
        if (!p) {
          if (msg.type !== "offer") break; // stray answer/candidate of a connection we do not have
          p = this._addPeer(msg.from, undefined, true); // offer overtook its peer-joined
        }
        p.receive(msg);
        break;
      }
      case "reconnect": {
        // The server is going away and closes the socket right after (1012): reconnect at once
        // (spread over retryAfterMs) without sending a close frame, which would give up our seat.
        const hint = Math.min(5000, Number(msg.retryAfterMs ?? 0));
        this._reconnectSoon = Math.round(Math.random() * hint);
        const ws = this._ws;
        setTimeout(() => { if (this._ws === ws && ws) this._abandon(); }, 3000);
        break;
      }
      case "error":
        this._emit("error", { error: new OtterError(String(msg.code), String(msg.message ?? msg.code)), code: msg.code });
        break;
      default: // pong, left
    }
  }

  _keepalive() {
    const ws = this._ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const now = Date.now();
    if (this._pingSentAt && this._lastHeard < this._pingSentAt) {
      // Judged on an unanswered ping, not on the gap since the last tick: background tabs
      // run timers late, and that is no reason to drop a healthy socket.
      if (now - this._pingSentAt > this._deadMs) this._abandon();
      return;
    }
    this._pingSentAt = now;
    ws.send(JSON.stringify({ type: "ping" }));
  }

  /** Give up on the current socket and reconnect (the server keeps our seat for the grace). */
  _abandon() {
    const ws = this._ws;
    if (!ws) return;
    this._ws = null;
    this._joined = false;
    clearInterval(this._pinger);
    ws.onclose = ws.onmessage = null;
    // No close frame now: if it reached the server it would give up our seat (protocol v1 keeps
    // seats only for connections lost without one). The server closes this socket itself when
    // our `join` with `resume` takes the seat over; we close it once the rejoin is done.
    this._stale = ws;
    this._scheduleReconnect(this._reconnectSoon ?? null);
  }

  _closeStale() {
    const ws = this._stale;
    this._stale = null;
    if (ws) try { ws.close(1000); } catch { /* already closed */ }
  }

  _scheduleReconnect(delayMs) {
    if (this.state === "closed") return;
    this._setState("reconnecting");
    clearTimeout(this._retryTimer);
    const delay = delayMs ?? backoffDelay(this._attempt, this._backoff);
    this._attempt += 1;
    this._reconnectSoon = null;
    this._retryTimer = setTimeout(async () => {
      if (this.state === "closed") return;
      try {
        await this._connect();
      } catch (err) {
        if (this._isClosed()) return;
        const error = /** @type {Error & { code?: string }} */ (err);
        if (error.code && error.code.startsWith("auth-")) { this._error(error.code, error); this._teardown(); return; }
        this._scheduleReconnect(null);
      }
    }, delay);
  }

  _teardown() {
    this._setState("closed");
    this._joined = false;
    clearInterval(this._pinger);
    clearTimeout(this._retryTimer);
    const ws = this._ws;
    this._ws = null;
    if (ws) { ws.onclose = ws.onmessage = null; try { ws.close(1000, "leave"); } catch { /* closed */ } }
    this._closeStale();
    for (const p of this.peers.values()) p.close();
    this.peers.clear();
    if (this._ownsStream && this.localStream) for (const t of this.localStream.getTracks()) t.stop();
  }
}

export default { join, Call, ErrorCode, OtterError, isPolite, backoffDelay, parseServerMessage, signalingUrl, isValidRoomId, chunkRanges, encodeChunk, decodeChunk, FileAssembler, parseChannelMessage, PROTOCOL, CHUNK_SIZE };
