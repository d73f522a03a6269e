// A minimal "application" that embeds an Otter call: its own page, its own origin, and a
// backend endpoint that mints room tokens for the users it admits. Node.js, no dependencies.
//
//   OTTER_URL=http://127.0.0.1:8080 OTTER_TOKEN_SECRET=... PORT=3000 node server.mjs
//   then open http://127.0.0.1:3000/?room=consult-42&name=Alice in two browsers.
//
// The Otter server runs with the same --token-secret, and --allowed-origins naming this app.
import http from "node:http";
import { readFileSync } from "node:fs";
import { roomToken } from "../room-tokens/mint.mjs";

const OTTER_URL = process.env.OTTER_URL ?? "http://127.0.0.1:8080";
const SECRET = process.env.OTTER_TOKEN_SECRET ?? "";
const PORT = Number(process.env.PORT ?? 3000);
const page = readFileSync(new URL("./index.html", import.meta.url), "utf8").replaceAll("{{OTTER_URL}}", OTTER_URL);

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://app.local");
  if (req.method === "GET" && url.pathname === "/") {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(page);
  } else if (req.method === "POST" && url.pathname === "/token") {
    // A real application checks here who the user is (its session cookie) and whether they may
    // enter this room, and takes the display name from its own records.
    const room = url.searchParams.get("room") ?? "";
    const name = url.searchParams.get("name") ?? undefined;
    try {
      const token = roomToken(SECRET, room, { name, ttlSeconds: 120 });
      res.writeHead(200, { "content-type": "text/plain", "cache-control": "no-store" });
      res.end(token);
    } catch (error) {
      res.writeHead(400, { "content-type": "text/plain" });
      res.end(error.message);
    }
  } else {
    res.writeHead(404);
    res.end();
  }
});
server.listen(PORT, "127.0.0.1", () => console.log(`web-app on http://127.0.0.1:${PORT} using Otter at ${OTTER_URL}`));
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => server.close(() => process.exit(0)));
