// What the signaling server must never write to its logs at info level (docs/privacy.md, the
// design's privacy rules): SDP, ICE candidates, peers' IP addresses, tokens and secrets.
// Used by 99-log-privacy.test.mjs over the server logs of the whole e2e run.

const ANSI = /\x1b\[[0-9;]*m/g;

/** [what, regex] pairs; every match in a log line is a finding. */
export const FORBIDDEN = [
  ['SDP', /\bv=0\b|\ba=(?:candidate|fingerprint|ice-ufrag|ice-pwd|rtpmap|setup|mid):|\bm=(?:audio|video|application) \d/],
  ['SDP field', /"sdp"\s*:|\bsdp=\S/],
  ['ICE candidate', /\bcandidate:\d+ \d+ (?:udp|tcp) |\btyp (?:host|srflx|prflx|relay)\b/i],
  ['room token (JWT)', /\beyJ[\w-]{8,}\.[\w-]{8,}/],
  ['secret or resume token (long hex)', /(?<![\w-])[0-9a-f]{32,}(?![\w-])/i],
  ['TURN password (base64 HMAC-SHA1)', /(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{27}=(?![A-Za-z0-9+/=])/],
  ['TURN username (expiry:peer)', /\b1\d{9}:[\w-]+/],
  ['IPv6 address', /\b(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}\b|(?<![\w:])::(?:1|ffff:[\d.]+)\b/i],
];

// IPv4 addresses, with a port when there is one; checked against what may appear below.
const IPV4 = /(?<![\w.])(\d{1,3}(?:\.\d{1,3}){3})(?::(\d{1,5}))?(?![\w.])/g;

/**
 * An IPv4 address a log line may carry: a configured STUN/TURN URI (the server's own config,
 * not a peer), or the server's own listening address in its start-up lines.
 */
function allowedIp(line, index) {
  const before = line.slice(Math.max(0, index - 7), index);
  if (/(?:stun|turns?):$/.test(before)) return true;
  if (/^listening on https?:\/\/$/.test(line.slice(0, index))) return true;
  return /otter-signaling listening/.test(line);
}

/** Findings in one log text: [{line, what, match}] (line numbers 1-based). */
export function scanLog(text) {
  const out = [];
  text.replace(ANSI, '').split('\n').forEach((line, i) => {
    for (const [what, re] of FORBIDDEN) {
      const m = line.match(re);
      if (m) out.push({ line: i + 1, what, match: m[0], text: line.slice(0, 300) });
    }
    for (const m of line.matchAll(IPV4)) {
      if (!allowedIp(line, m.index)) out.push({ line: i + 1, what: 'IP address of a peer', match: m[0], text: line.slice(0, 300) });
    }
  });
  return out;
}
