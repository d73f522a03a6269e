// Mint an Otter room token (HS256 JWT) on your application's server, after you have decided
// that this user may enter this room. Node.js, no dependencies.
//
//   import { roomToken } from "./mint.mjs";
//   const token = roomToken(process.env.OTTER_TOKEN_SECRET, "consult-42", { name: "Dr. Who", sub: user.id });
//
// Command line: OTTER_TOKEN_SECRET=... node mint.mjs ROOM [NAME] [TTL_SECONDS]
import { createHmac } from "node:crypto";
import { pathToFileURL } from "node:url";

const b64url = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");

/**
 * @param {string} secret  the server's --token-secret
 * @param {string} room    the room id the token admits to
 * @param {{ttlSeconds?: number, name?: string, sub?: string}} [options]
 *   ttlSeconds: a few minutes is plenty (checked at join only; the SDK asks again on rejoin)
 *   name: display name shown to the others (overrides what the client sends)
 *   sub: your user id (logged by the server, never shown to other peers)
 */
export function roomToken(secret, room, { ttlSeconds = 300, name, sub } = {}) {
  if (!secret) throw new Error("no token secret");
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(room)) throw new Error("room: 1-64 of A-Z a-z 0-9 _ -");
  const claims = { room, exp: Math.floor(Date.now() / 1000) + ttlSeconds };
  if (name) claims.name = name;
  if (sub) claims.sub = sub;
  const body = `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url(claims)}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const [room, name, ttl] = process.argv.slice(2);
  if (!room || !process.env.OTTER_TOKEN_SECRET) {
    console.error("usage: OTTER_TOKEN_SECRET=... node mint.mjs ROOM [NAME] [TTL_SECONDS]");
    process.exit(2);
  }
  console.log(roomToken(process.env.OTTER_TOKEN_SECRET, room, { name, ttlSeconds: ttl ? Number(ttl) : undefined }));
}
