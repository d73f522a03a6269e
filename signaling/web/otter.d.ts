// Types of otter.js, the Otter browser SDK (signaling protocol v1). See the header of otter.js.
// Checked against otter.js by the TypeScript compiler in both directions (tests/sdk/types.mjs):
// an export missing here, or declared with a type the code does not have, fails the sdk suite.

export declare const PROTOCOL: "otter.v1";
export declare const CHUNK_SIZE: number;
export declare const CHUNK_HEADER_BYTES: number;
export declare const CHAT_CHANNEL_ID: 0;
export declare const FILE_CHANNEL_ID: 1;

/**
 * Every error code an `error` event or a rejected promise can carry: the protocol's (named as
 * the server's ErrorCode variants) and the SDK's own ("sdk-*").
 */
export declare const ErrorCode: Readonly<{
  BadJson: "bad-json";
  BadMessage: "bad-message";
  UnknownType: "unknown-type";
  BadRoomId: "bad-room-id";
  RoomFull: "room-full";
  AuthRequired: "auth-required";
  AuthInvalid: "auth-invalid";
  AuthExpired: "auth-expired";
  AuthWrongRoom: "auth-wrong-room";
  NotJoined: "not-joined";
  AlreadyJoined: "already-joined";
  UnknownPeer: "unknown-peer";
  RateLimited: "rate-limited";
  TooLarge: "too-large";
  IdleTimeout: "idle-timeout";
  JoinTimeout: "join-timeout";
  ServerBusy: "server-busy";
  Unavailable: "unavailable";
  Internal: "internal";
  /** A method called in the wrong state (join() twice, after leave()). */
  SdkState: "sdk-state";
  /** The signaling connection could not be opened or closed before `joined`. */
  SdkConnect: "sdk-connect";
  /** The server sent something this SDK does not understand. */
  SdkProtocol: "sdk-protocol";
  /** Offer/answer/candidate handling failed. */
  SdkNegotiation: "sdk-negotiation";
  /** A file transfer failed. */
  SdkFile: "sdk-file";
  /** Fresh ICE servers could not be fetched from GET /v1/ice-servers. */
  SdkIce: "sdk-ice";
  /** The camera or microphone was refused (by the user or the browser's policy). */
  SdkMediaDenied: "sdk-media-denied";
  /** No camera or microphone, or it is in use elsewhere. */
  SdkMediaUnavailable: "sdk-media-unavailable";
  /** A peer connection cannot connect: the TURN server refused the credentials. */
  SdkTurnAuth: "sdk-turn-auth";
  /** A peer connection cannot connect: no TURN/STUN server answered. */
  SdkTurnUnreachable: "sdk-turn-unreachable";
  /** A peer connection cannot connect: no candidate pair succeeded (firewalls, no relay). */
  SdkIceFailed: "sdk-ice-failed";
}>;
export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

/** An Error with one of ErrorCode's codes (a server's newer codes arrive as plain strings). */
export declare class OtterError extends Error {
  constructor(code: string, message?: string);
  code: ErrorCodeValue | string;
}

export interface JoinOptions {
  /** Server base URL (http, https, ws or wss). Default: the origin otter.js was loaded from. */
  url?: string;
  /** Room id: 1-64 characters of A-Z a-z 0-9 _ - */
  room: string;
  /** Room token, or a function giving one; called at every (re)join. */
  token?: string | (() => string | Promise<string>);
  /** Display name shown to the others (a `name` claim in the token wins). */
  name?: string;
  /** getUserMedia constraints (default {audio: true, video: true}), a stream you own, or false. */
  media?: MediaStreamConstraints | MediaStream | false;
  /** "relay" forces every connection through TURN. */
  iceTransportPolicy?: RTCIceTransportPolicy;
  /** Extra ICE servers, added to those the server hands out. */
  iceServers?: RTCIceServer[];
  /** Listeners attached before any event is dispatched. */
  on?: { [K in keyof CallEventMap]?: (event: CallEventMap[K]) => void };
  /** Backoff of signaling reconnects (defaults 500 ms doubling up to 10 s, with jitter). */
  reconnect?: { baseMs?: number; maxMs?: number };
  /** Ping the server every intervalMs (default 15 s); silence for timeoutMs (default 40 s) means a dead socket: replace it. */
  keepalive?: { intervalMs?: number; timeoutMs?: number };
  /**
   * A peer connection not connected this long (default 12000 ms) after it started or was lost
   * is escalated: ICE restart, TURN over TCP only, TURN over TLS only (when handed out), then an
   * `error` event with code sdk-turn-auth, sdk-turn-unreachable or sdk-ice-failed.
   */
  connectTimeoutMs?: number;
}

export type CallState = "new" | "connecting" | "joined" | "reconnecting" | "closed";

export interface Peer {
  readonly id: string;
  name: string;
  /** Perfect negotiation role of this side towards that peer. */
  readonly polite: boolean;
  readonly pc: RTCPeerConnection;
  /** The peer's first remote stream, once media arrived. */
  readonly stream: MediaStream | null;
  /** RTCPeerConnection.connectionState. */
  readonly state: RTCPeerConnectionState;
  /** What the peer says it sends (false: muted / camera off); both true until it says otherwise. */
  readonly media: { audio: boolean; video: boolean };
}

export interface FileProgress {
  peer: Peer;
  direction: "send" | "receive";
  id: number;
  name: string;
  size: number;
  bytes: number;
}

export interface CallEventMap {
  state: CustomEvent<{ state: CallState }>;
  peerjoined: CustomEvent<{ peer: Peer }>;
  peerleft: CustomEvent<{ peer: Peer | { id: string; name: string }; reason: "left" | "timeout" | "kicked" | string }>;
  track: CustomEvent<{ peer: Peer; track: MediaStreamTrack; stream: MediaStream }>;
  peerstate: CustomEvent<{ peer: Peer; state: RTCPeerConnectionState }>;
  message: CustomEvent<{ peer: Peer; text: string; at: number }>;
  fileprogress: CustomEvent<FileProgress>;
  file: CustomEvent<{ peer: Peer; file: File; id: number; name: string; size: number; type: string }>;
  /** The peer muted or unmuted its microphone or camera (true: sending). */
  peermedia: CustomEvent<{ peer: Peer; audio: boolean; video: boolean }>;
  /** `peer` is set when the error is about the connection to that peer. */
  error: CustomEvent<{ error: Error & { code?: string }; code: ErrorCodeValue | string; peer?: Peer }>;
}

export declare class Call extends EventTarget {
  constructor(options: JoinOptions);
  readonly room: string;
  readonly url: string;
  readonly state: CallState;
  /** Our peer id in the room (null before joining). */
  readonly peerId: string | null;
  readonly peers: Map<string, Peer>;
  readonly localStream: MediaStream | null;
  /** Get media, connect, join; resolves when joined. */
  join(): Promise<void>;
  /** Leave the room and release the camera/microphone the SDK opened. */
  leave(): void;
  mute(kind?: "audio" | "video"): void;
  unmute(kind?: "audio" | "video"): void;
  isMuted(kind?: "audio" | "video"): boolean;
  /** Chat to everyone or to one peer; returns how many peers it was sent to. */
  send(text: string, options?: { to?: string }): number;
  /** Send a file peer to peer; resolves when every receiver has it all. */
  sendFile(file: Blob | File, options?: { to?: string; onProgress?: (p: FileProgress) => void }): Promise<{ id: number; peers: string[] }>;
  /** Send one more track (screen share...) to every peer; renegotiates. */
  addTrack(track: MediaStreamTrack, stream?: MediaStream): void;
  removeTrack(track: MediaStreamTrack): void;
  getStats(peerId: string): Promise<RTCStatsReport>;
  addEventListener<K extends keyof CallEventMap>(type: K, listener: (event: CallEventMap[K]) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof CallEventMap>(type: K, listener: (event: CallEventMap[K]) => void, options?: boolean | EventListenerOptions): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}

/** Start a call: get media, connect, join. */
export declare function join(options: JoinOptions): Promise<Call>;

// Pure helpers (exported for tests and for applications that want them).
export declare function isValidRoomId(room: unknown): boolean;
export declare function isPolite(selfId: string, otherId: string): boolean;
export declare function backoffDelay(attempt: number, options?: { baseMs?: number; maxMs?: number; random?: () => number }): number;
export declare function signalingUrl(base: string): string;
export declare function parseServerMessage(text: unknown): { type: string; [field: string]: unknown };
export declare function parseChannelMessage(text: unknown): { t: string; [field: string]: unknown } | null;
export declare function chunkRanges(size: number, chunkSize?: number): Array<[number, number]>;
export declare function encodeChunk(transferId: number, seq: number, bytes: Uint8Array | ArrayBuffer): Uint8Array;
export declare function decodeChunk(frame: Uint8Array | ArrayBuffer): { transferId: number; seq: number; bytes: Uint8Array };
export declare class FileAssembler {
  constructor(meta: { id: number; name: string; size: number; type?: string });
  readonly received: number;
  readonly done: boolean;
  push(seq: number, bytes: Uint8Array): number;
  finish(): Uint8Array[];
}

declare const Otter: {
  join: typeof join;
  Call: typeof Call;
  ErrorCode: typeof ErrorCode;
  OtterError: typeof OtterError;
  isPolite: typeof isPolite;
  backoffDelay: typeof backoffDelay;
  parseServerMessage: typeof parseServerMessage;
  signalingUrl: typeof signalingUrl;
  isValidRoomId: typeof isValidRoomId;
  chunkRanges: typeof chunkRanges;
  encodeChunk: typeof encodeChunk;
  decodeChunk: typeof decodeChunk;
  FileAssembler: typeof FileAssembler;
  parseChannelMessage: typeof parseChannelMessage;
  PROTOCOL: typeof PROTOCOL;
  CHUNK_SIZE: typeof CHUNK_SIZE;
};
export default Otter;
